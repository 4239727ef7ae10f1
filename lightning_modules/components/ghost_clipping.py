"""Per-sample gradient norms of ``nn.Conv2d`` without per-sample gradients (ghost clipping).

Opacus's fast gradient clipping (``GradSampleModuleFastGradientClipping``) needs, for every
layer, the norm of each sample's weight gradient; it ships norm rules for ``Linear`` and
``Embedding`` only and falls back to materialising per-sample gradients for the rest. This module
registers a rule for ``nn.Conv2d`` through Opacus's public ``register_norm_sampler``.

For sample i, unfold the layer input into ``A_i`` (D, L) (D = C_in * kh * kw patch values, L
output positions) and take the output gradient ``G_i`` (C_out, L); the weight gradient is
``G_i A_i^T`` (C_out, D). Its squared Frobenius norm is either

* direct: ``||G_i A_i^T||^2``, costing about C_out * D * L per sample, or
* ghost: ``sum_pq (A_i^T A_i)_pq (G_i^T G_i)_pq``, costing about L^2 * (D + C_out),

and the cheaper one is chosen per layer (the ghost form wins once the feature map is small, e.g.
the last stages of a ResNet). Neither keeps a (B, C_out, D) tensor beyond the layer. The bias
gradient of sample i is ``G_i`` summed over positions. Grouped convolutions, string padding and
non-zero padding modes use Opacus's own per-sample conv gradient and take its norm.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from opacus.grad_sample.conv import compute_conv_grad_sample
from opacus.grad_sample.utils import register_norm_sampler
from torch import nn


def _simple(layer: nn.Conv2d) -> bool:
    return (
        layer.groups == 1 and layer.padding_mode == "zeros" and not isinstance(layer.padding, str)
    )


@register_norm_sampler(nn.Conv2d)
def conv2d_norm_sample(
    layer: nn.Conv2d, activations: list[torch.Tensor], backprops: torch.Tensor
) -> dict[nn.Parameter, torch.Tensor]:
    """Per-sample gradient norms (B,) of ``layer``'s weight and bias.

    Args:
        activations: ``[input]`` with input (B, C_in, H, W), as captured by Opacus's hooks.
        backprops: gradient of the (mean-rescaled) loss w.r.t. the output, (B, C_out, H', W').
    """
    x = activations[0].to(backprops.dtype)
    n = x.shape[0]
    if n == 0:
        empty = backprops.new_zeros(0)
        return {p: empty for p in (layer.weight, layer.bias) if p is not None and p.requires_grad}
    if not _simple(layer):
        grads = compute_conv_grad_sample(layer, activations, backprops)
        return {p: g.reshape(n, -1).norm(2, dim=1) for p, g in grads.items()}
    g = backprops.reshape(n, backprops.shape[1], -1)  # (B, C_out, L)
    ret: dict[nn.Parameter, torch.Tensor] = {}
    if layer.weight.requires_grad:
        a = F.unfold(
            x,
            layer.kernel_size,
            dilation=layer.dilation,
            padding=layer.padding,
            stride=layer.stride,
        )  # (B, D, L)
        d, c_out, positions = a.shape[1], g.shape[1], a.shape[2]
        if positions * (d + c_out) < d * c_out:  # ghost: Gram matrices over positions
            gram_a = torch.bmm(a.transpose(1, 2), a)  # (B, L, L)
            gram_g = torch.bmm(g.transpose(1, 2), g)
            sq = (gram_a * gram_g).flatten(1).sum(1)
            ret[layer.weight] = sq.clamp_min(0).sqrt()
        else:  # direct: one sample's gradient at a time in a batched matmul, then its norm
            ret[layer.weight] = torch.bmm(g, a.transpose(1, 2)).flatten(1).norm(2, dim=1)
    if layer.bias is not None and layer.bias.requires_grad:
        ret[layer.bias] = g.sum(2).norm(2, dim=1)
    return ret
