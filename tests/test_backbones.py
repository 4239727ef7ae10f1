"""lightning_modules.components.backbones and the classifier's pretrained route: the packaged
EfficientNet-Lite0 weights pinned by known logits (and an airliner photo when the VOC sample is
there), stage layouts, the input re-normalisation by hand, the imagenet download call (mocked),
the legacy torchvision route unchanged, and bad settings named in one ValueError."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

from lightning_modules.components.backbones import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    LITE_MEAN,
    LITE_STD,
    InputNorm,
    build_backbone,
    packaged_weights_file,
)
from lightning_modules.components.classifier import build_classifier

VOC = Path(__file__).resolve().parents[2] / "shared/data/voc2012_sample"
#: logits of the packaged tf_efficientnet_lite0 on torch.linspace(-1, 1, 3*224*224) (suite
#: normalisation), computed once: the argmax class (21 'kite') and three logits
KNOWN_ARGMAX = 21
KNOWN_LOGITS = {21: 4.67583, 0: -0.15417, 404: 2.79306}


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def packaged_net() -> nn.Module:
    """The classifier with the packaged trunk and the package's own 1000-class layer, eval."""
    net = build_classifier("tf_efficientnet_lite0", 1000, weights="packaged").eval()
    src = torch.load(packaged_weights_file(), map_location="cpu", weights_only=True)
    net.head[0].load_state_dict({"weight": src["_fc.weight"], "bias": src["_fc.bias"]})
    return net


def test_packaged_weights_give_the_known_logits(packaged_net):
    x = torch.linspace(-1, 1, 3 * 224 * 224).view(1, 3, 224, 224)
    with torch.no_grad():
        logits = packaged_net(x)[0]
    assert int(logits.argmax()) == KNOWN_ARGMAX
    for cls, value in KNOWN_LOGITS.items():
        assert float(logits[cls]) == pytest.approx(value, abs=1e-3), cls


def test_the_classifier_trunk_is_timm_s_model():
    """The torch-native layers (BatchNorm2d + act, PadSame + Conv2d) compute what timm's fused
    ones do, from the same weights."""
    import timm

    from lightning_modules.components.backbones import load_packaged

    ref = timm.create_model("tf_efficientnet_lite0")
    load_packaged(ref)
    net = build_classifier("tf_efficientnet_lite0", 3, weights="packaged")
    assert not any(type(m).__name__ in ("BatchNormAct2d", "Conv2dSame") for m in net.modules())
    x = torch.randn(2, 3, 45, 61)  # odd sizes: asymmetric "same" padding
    with torch.no_grad():
        ours = net.eval().embed(x)
        theirs = ref.eval().forward_head(
            ref.forward_features(InputNorm(LITE_MEAN, LITE_STD)(x)), pre_logits=True
        )
    assert ours.shape == (2, 1280)
    torch.testing.assert_close(ours, theirs, atol=1e-5, rtol=1e-4)


@pytest.mark.skipif(not VOC.is_dir(), reason=f"no VOC sample at {VOC}")
def test_an_airliner_photo_is_an_airliner(packaged_net):
    from PIL import Image
    from torchvision.models import ResNet50_Weights

    from datamodules.images import eval_transform

    categories = ResNet50_Weights.IMAGENET1K_V1.meta["categories"]
    photo = VOC / "VOCdevkit/VOC2012/JPEGImages/2007_000033.jpg"
    x = eval_transform(224, "squash", 0)(Image.open(photo).convert("RGB"))[None]
    with torch.no_grad():
        top5 = packaged_net(x)[0].topk(5).indices.tolist()
    assert categories[404] == "airliner" and 404 in top5


@pytest.mark.parametrize(
    "arch, n_stages, width",
    [("tf_efficientnet_lite0", 9, 1280), ("resnet18", 5, 512), ("densenet121", 13, 1024)],
)
def test_stage_layouts(arch, n_stages, width):
    bb = build_backbone(arch, "none")
    assert (len(bb.stages), bb.num_features) == (n_stages, width)
    assert all(m.training for s in bb.stages for m in s.modules())  # the width probe's eval undone
    with torch.no_grad():
        out = bb.trunk().eval()(torch.randn(1, 3, 64, 64))
    assert out.shape[:2] == (1, width) and out.ndim == 4


@pytest.mark.parametrize("arch, width", [("mobilenetv3_small_050", 1024), ("convnext_atto", 320)])
def test_timm_models_without_a_stage_layout_use_their_own_pooling(arch, width):
    """One stage (``forward_features``), then the model's pre-logits head: (B, width)."""
    net = build_classifier(arch, 3, weights="none").eval()
    with torch.no_grad():
        emb, logits = net.embed(torch.randn(2, 3, 64, 64)), net(torch.randn(2, 3, 64, 64))
    assert emb.shape == (2, width) and net.embed_dim == width and logits.shape == (2, 3)


def test_input_norm_by_hand():
    norm = InputNorm(IMAGENET_MEAN, IMAGENET_STD)
    x = torch.zeros(1, 3, 2, 2)
    x[..., 1, 1] = 2.0  # suite-normalised 2 is 0.5 + 2 * 0.25 = 1.0 in [0, 1]
    out = norm(x)
    for c, (m, s) in enumerate(zip(IMAGENET_MEAN, IMAGENET_STD)):
        assert float(out[0, c, 0, 0]) == pytest.approx((0.5 - m) / s, abs=1e-6)
        assert float(out[0, c, 1, 1]) == pytest.approx((1.0 - m) / s, abs=1e-6)
    lite = InputNorm(LITE_MEAN, LITE_STD)(x)  # [0, 1] -> [-1, 1]
    assert torch.allclose(lite[..., 0, 0], torch.zeros(3)) and torch.allclose(
        lite[..., 1, 1], torch.ones(3)
    )
    assert not norm.state_dict() and set(InputNorm(LITE_MEAN, LITE_STD, True).state_dict()) == {
        "scale",
        "shift",
    }


def test_imagenet_weights_are_asked_of_the_library(monkeypatch):
    """No network here: the calls are recorded and answered with untrained models."""
    import timm
    import torchvision

    calls = []
    create, get_model = timm.create_model, torchvision.models.get_model

    def fake_create(name, pretrained=False, **kw):
        calls.append(("timm", name, pretrained))
        return create(name, pretrained=False, **kw)

    def fake_get_model(name, weights=None, **kw):
        calls.append(("torchvision", name, weights))
        return get_model(name, weights=None, **kw)

    monkeypatch.setattr(timm, "create_model", fake_create)
    monkeypatch.setattr(torchvision.models, "get_model", fake_get_model)
    lite = build_backbone("tf_efficientnet_lite0", "imagenet")
    res = build_backbone("resnet18", "imagenet")
    assert calls == [
        ("timm", "tf_efficientnet_lite0", True),
        ("torchvision", "resnet18", "DEFAULT"),
    ]
    assert lite.mean == (0.5, 0.5, 0.5) and res.mean == IMAGENET_MEAN  # what each was trained on
    net = build_classifier("resnet18", 4, weights="imagenet")
    assert calls[-1] == ("torchvision", "resnet18", "DEFAULT")
    assert isinstance(net.features[0][0], InputNorm)
    assert net.eval()(torch.randn(1, 3, 32, 32)).shape == (1, 4)


def test_a_local_weights_file_is_loaded(tmp_path):
    from torchvision import models

    ref = models.resnet18(weights=None)
    path = tmp_path / "r18.pt"
    torch.save({"state_dict": {f"module.{k}": v for k, v in ref.state_dict().items()}}, path)
    bb = build_backbone("torchvision/resnet18", str(path))
    assert (
        torch.equal(bb.stages[0][0].weight, ref.conv1.weight) and bb.arch == "torchvision/resnet18"
    )
    net = build_classifier("resnet18", 3, weights=str(path))
    assert torch.equal(net.features[0][1][0].weight, ref.conv1.weight)


def test_the_scratch_torchvision_route_is_torchvision_s_model():
    """``weights: none`` with a torchvision arch keeps the old layout and initialisation: the
    same seed gives torchvision's own model."""
    from torchvision import models

    torch.manual_seed(0)
    ref = models.resnet18(weights=None, num_classes=5)
    torch.manual_seed(0)
    net = build_classifier("resnet18", 5)
    assert not any(isinstance(m, InputNorm) for m in net.modules())
    assert torch.equal(net.features.conv1.weight, ref.conv1.weight)
    assert torch.equal(net.head[0].weight, ref.fc.weight)


def test_batchnorm_false_strips_the_fused_batchnorm_and_keeps_its_activation():
    kept = build_classifier("tf_efficientnet_lite0", 3)
    bare = build_classifier("tf_efficientnet_lite0", 3, batchnorm=False)

    def count(net, kind):
        return sum(isinstance(m, kind) for m in net.modules())

    assert count(kept, nn.BatchNorm2d) == 49 and count(bare, nn.BatchNorm2d) == 0
    assert count(bare, nn.ReLU6) == count(kept, nn.ReLU6) == 33


@pytest.mark.parametrize(
    "call, setting",
    [
        (lambda: build_backbone("resnet181"), "model.arch"),
        (lambda: build_backbone("resnet18", "packaged"), "model.weights"),
        (lambda: build_backbone("resnet18", "/nonexistent/weights.pt"), "model.weights"),
        (
            lambda: build_classifier("resnet18", 3, weights="imagenet", weights_path="x.pt"),
            "model.weights_path",
        ),
    ],
    ids=["unknown_arch", "packaged_not_lite", "missing_file", "weights_and_weights_path"],
)
def test_bad_settings_are_one_value_error_naming_the_setting(call, setting):
    with pytest.raises(ValueError) as exc:
        call()
    assert setting in str(exc.value) and "\n" not in str(exc.value)
