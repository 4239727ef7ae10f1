"""Plain ``nn.Module`` builders for the target classifier (no Lightning here).

``build_classifier`` takes any torchvision classification architecture by name, trained from
scratch (``weights=None``), and returns a :class:`ClassifierNet`: a ``features`` trunk producing the
penultimate embedding (B, D) and a ``head`` (optional dropout + linear) producing logits (B, C).
With ``head="arcface"`` the trunk ends in a linear neck and an L2 normalisation (the embedding is
unit-length) and the head is :class:`~lightning_modules.components.metric_head.ArcFaceHead`
(scaled cosine logits).
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn
from torchvision import models

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
    weights_path: str | None = None,
    head: str = "softmax",
    arcface: ArcFaceSettings | None = None,
) -> ClassifierNet:
    """A torchvision classifier by name, from scratch, split into trunk and head.

    Args:
        arch: any name of ``torchvision.models.list_models(module=torchvision.models)``, e.g.
            ``resnet50``, ``densenet121``, ``resnet18``.
        num_classes: number of target individuals C.
        batchnorm: keep batch-norm layers; ``False`` replaces them by Identity (paper's overfit
            preset).
        dropout: dropout probability before the final linear layer (0 disables it).
        weights_path: optional local state dict (e.g. ImageNet weights you have on disk), loaded
            with ``weights_only=True`` into the backbone before the head is resized.
        head: ``softmax`` (linear logits) or ``arcface`` (normalised embedding of
            ``arcface.embedding_dim`` and scaled cosine logits).
        arcface: settings of the ArcFace head (defaults when None).
    """
    if head not in HEADS:
        raise ValueError(f"model.head={head!r}: choose one of {list(HEADS)}.")
    net = _backbone(arch, num_classes, weights_path)
    name, linear = _last_linear(net)
    embed_dim = linear.in_features
    _set_module(net, name, nn.Identity())
    if not batchnorm:
        strip_batchnorm(net)
    if head == "arcface":
        settings = arcface or ArcFaceSettings()
        trunk = nn.Sequential(net, arcface_neck(embed_dim, settings, dropout))
        return ClassifierNet(trunk, ArcFaceHead(num_classes, settings), settings.embedding_dim)
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
    path = Path(weights_path)
    if not path.is_file():
        raise FileNotFoundError(f"model.weights_path: {path} not found.")
    state = torch.load(path, map_location="cpu", weights_only=True)
    if isinstance(state, dict) and "state_dict" in state:
        state = state["state_dict"]
    net.load_state_dict(state)
    return net
