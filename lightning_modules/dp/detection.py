"""DP-SGD for detectors: which architectures it supports, and per-image SSD losses.

Support is declared by each builder in :mod:`lightning_modules.components.detectors`
(``register_detector(..., supports_dp=...)``); :func:`check_dp_detector` refuses the others with
the reason. SSDs train with true per-image clipping through :func:`ssd_per_image_losses`.
"""

from __future__ import annotations

from collections import OrderedDict

import torch
from pytorch_lightning.utilities import rank_zero_info
from torch import nn
from torchvision.ops import boxes as box_ops

from lightning_modules.components.detectors import detector_names, detector_spec
from lightning_modules.dp.training import unwrap

#: why two-stage detectors cannot be trained with per-sample DP-SGD
TWO_STAGE_WHY = (
    "two-stage detectors (Faster R-CNN) cannot be trained with per-sample DP-SGD here: the RoI "
    "heads pool the proposals of every image of the batch into one tensor, so the box head's "
    "batch dimension counts RoIs, not images, and Opacus's per-sample gradients (computed by "
    "hooks along each layer's batch dimension) would clip per RoI; the RPN and RoI sampling also "
    "mix images."
)


def check_dp_detector(arch: str) -> None:
    """Raise a ``ValueError`` with the reason unless ``arch``'s builder declares DP support."""
    spec = detector_spec(arch)
    if spec.supports_dp:
        return
    why = TWO_STAGE_WHY if spec.two_stage else "its builder does not declare supports_dp."
    choices = ", ".join(detector_names(supports_dp=True))
    raise ValueError(f"model.dp with model.arch={arch!r}: {why} Choose one of: {choices}.")


def prepare_ssd_for_dp(net: nn.Module) -> list[str]:
    """Freeze the parameters Opacus has no per-sample rule for (SSD-VGG's L2Norm scale).

    Returns the frozen parameter names (logged). Frozen parameters keep their initial value
    (20, as in the SSD paper) and take no gradient, so they cost no privacy.
    """
    frozen = []
    for name, p in net.named_parameters():
        if name.endswith("scale_weight"):
            p.requires_grad_(False)
            frozen.append(name)
    if frozen:
        rank_zero_info(f"DP (detector): frozen (no per-sample rule in Opacus): {frozen}")
    return frozen


def ssd_per_image_losses(
    net: nn.Module, images: list[torch.Tensor], targets: list[dict[str, torch.Tensor]]
) -> torch.Tensor:
    """Per-image SSD losses (B,), each normalised by that image's own matched anchors.

    torchvision's ``SSD.forward`` divides the summed losses of the batch by the batch's total
    number of foreground anchors, which couples the images; here the same forward is run
    (transform, backbone, head, anchors, matching) and ``SSD.compute_loss`` is called per image,
    whose hard-negative mining is already per image. No layer mixes images (BatchNorm is replaced
    by GroupNorm under DP), so Opacus's per-sample gradient of image i is the gradient of loss i.
    ``net`` may be wrapped in a ``GradSampleModule`` (attributes are forwarded).
    """
    net = unwrap(net)  # the hooks stay on the layers
    images_t, targets_t = net.transform(images, targets)
    features = net.backbone(images_t.tensors)
    if isinstance(features, torch.Tensor):
        features = OrderedDict([("0", features)])
    features = list(features.values())
    head_outputs = net.head(features)
    anchors = net.anchor_generator(images_t, features)
    losses = []
    for i, (anc, tgt) in enumerate(zip(anchors, targets_t)):
        if tgt["boxes"].numel() == 0:
            matched = torch.full((anc.size(0),), -1, dtype=torch.int64, device=anc.device)
        else:
            matched = net.proposal_matcher(box_ops.box_iou(tgt["boxes"], anc))
        part = net.compute_loss(
            [tgt], {k: v[i : i + 1] for k, v in head_outputs.items()}, [anc], [matched]
        )
        losses.append(part["bbox_regression"] + part["classification"])
    return torch.stack(losses)
