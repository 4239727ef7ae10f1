"""A target with a pretrained timm backbone (tf_efficientnet_lite0, weights: packaged): exported
to ONNX and scored by ``discriminate`` (softmax and ArcFace heads), rebuilt from its checkpoint
with the packaged trunk and input normalisation, and trained with DP-SGD (timm's fused
BatchNorm + activation and "same"-padded convolutions made Opacus-compatible)."""

from __future__ import annotations

import csv
import json
import shutil

import pytest
import torch
from torch import nn

import cli

PRETRAINED = {"arch": "tf_efficientnet_lite0", "weights": "packaged"}


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.mark.parametrize(
    "head, extra",
    [("softmax", {"batchnorm": True}), ("arcface", {"arcface": {"embedding_dim": 16}})],
)
def test_export_and_discriminate_a_pretrained_target(head, extra, tmp_path, make_run_folder):
    """cli export's own check (torch vs ONNX Runtime, export.json), the rebuilt target's trunk
    is the packaged one (weights and [-1, 1] input scaling), and discriminate runs on ONNX."""
    from experiments.commands.export import GRAPH_TOLERANCE
    from experiments.run.folder import RunContext
    from experiments.target.torch_engine import load_target
    from lightning_modules.components.classifier import build_classifier

    run = make_run_folder(tmp_path, size=48, model_args={**PRETRAINED, "head": head, **extra})
    cli.main(["export", "--run", str(run), "--check_photos", "4"])
    info = json.loads((run / "export" / "export.json").read_text())
    g, e = info["check"]["graph"], info["check"]["end_to_end"]
    assert g["inputs"] == 4 and g["max_abs_logit"] <= GRAPH_TOLERANCE * max(1, g["logit_scale"])
    assert g["max_abs_embedding"] < 1e-3 and e["min_embedding_cosine"] > 0.999
    assert e["top1_agreement"] == 1.0
    assert info["embedding_dim"] == (1280 if head == "softmax" else 16)

    model = load_target(RunContext.open(run, "cpu"))
    ref = build_classifier(
        "tf_efficientnet_lite0", 3, weights="packaged", batchnorm=head == "softmax"
    ).eval()
    x = torch.randn(2, 3, 48, 48)
    with torch.no_grad():  # the untrained run's trunk is the packaged one, inputs scaled to [-1, 1]
        trunk = model.net.features if head == "softmax" else model.plain_net.features[0]
        torch.testing.assert_close(trunk(x), ref.features(x), atol=1e-5, rtol=1e-4)

    photos = tmp_path / "photos"
    for i, p in enumerate(sorted((run.parent / "cat").rglob("*.jpg"))[:4]):
        (photos / f"enc_{i // 2}").mkdir(parents=True, exist_ok=True)
        shutil.copy(p, photos / f"enc_{i // 2}" / f"p{i}.jpg")
    out = tmp_path / "d"
    cli.main(
        ["discriminate", "--run", str(run), "--images", str(photos), "--output", str(out)]
        + ["--n_boot", "50", "--quiet", "true"]
    )
    assert json.loads((out / "operating_point.json").read_text())["engine"] == "onnxruntime"
    assert len(list(csv.DictReader((out / "photos.csv").open()))) == 4
    assert len(list(csv.DictReader((out / "encounters.csv").open()))) == 2


@pytest.mark.parametrize("mode", ["ghost", "hooks"])
def test_dp_step_on_the_packaged_backbone(mode):
    """Every (plain) BatchNorm -> GroupNorm; one clipped, noised step updates every parameter."""
    from opacus.optimizers import DPOptimizer, DPOptimizerFastGradientClipping

    from lightning_modules.components.classifier import build_classifier
    from lightning_modules.dp.config import DPConfig
    from lightning_modules.dp.training import DPTraining

    torch.manual_seed(0)
    dp = DPTraining(DPConfig(noise_multiplier=1.0, grad_sample_mode=mode))
    net = dp.prepare_module(build_classifier("tf_efficientnet_lite0", 3, weights="packaged"))
    assert len(dp.replaced) == 49 and all("BatchNorm2d -> GroupNorm" in r for r in dp.replaced)
    cls = DPOptimizerFastGradientClipping if mode == "ghost" else DPOptimizer
    dp.optimizer = opt = cls(
        torch.optim.SGD(net.parameters(), lr=0.1),
        noise_multiplier=1.0,
        max_grad_norm=1.0,
        expected_batch_size=3,
    )
    before = [p.detach().clone() for p in net.parameters()]
    x, y = torch.rand(3, 3, 32, 32), torch.tensor([0, 1, 2])
    loss = dp.per_sample_loss(nn.functional.cross_entropy(net(x), y, reduction="none"))
    dp.ghost_backward() if mode == "ghost" else loss.backward()
    opt.step()
    assert all(torch.isfinite(p).all() for p in net.parameters())
    assert all(not torch.equal(a, b) for a, b in zip(before, net.parameters()))


def test_dp_fit_with_the_packaged_backbone(tmp_path, tiny_args, scalars):
    """``cli.py fit`` of demo_dp.yaml on tf_efficientnet_lite0 / packaged: 3 Poisson steps,
    epsilon logged, and the checkpoint keeps the packaged weights' input scaling."""
    args = tiny_args(tmp_path, 1, "dp")
    args[args.index("demo.yaml")] = "demo_dp.yaml"
    args[args.index("resnet18")] = PRETRAINED["arch"]
    cli.main(
        args
        + ["--model.init_args.weights", PRETRAINED["weights"]]
        + ["--data.init_args.loader.batch_size", "2"]  # N = 6: 3 Poisson steps
        + ["--model.init_args.dp.noise_multiplier", "1.0"]
        + ["--model.init_args.dp.max_physical_batch_size", "0"]
    )
    run = tmp_path / "logs" / "dp" / "version_0"
    assert [v for _, v in scalars(run, "dp/steps")] == [3]
    assert all(torch.isfinite(torch.tensor(v)) for _, v in scalars(run, "dp/epsilon"))
    state = torch.load(run / "checkpoints" / "last.ckpt", weights_only=False)
    assert state["hyper_parameters"]["weights"] == "packaged"
    sd = state["state_dict"]
    assert torch.equal(sd["net._module.features.0.0.scale"], torch.full((1, 3, 1, 1), 0.5))
    assert torch.equal(sd["net._module.features.0.0.shift"], torch.zeros(1, 3, 1, 1))
    assert not any("running_mean" in k for k in sd)  # no BatchNorm left
