"""DP-SGD for detectors: per-image losses give true per-image gradients (SSD family, tiny_ssd);
two-stage detectors refuse DP with the reason; a tiny SSD trains with DP and logs epsilon."""

from __future__ import annotations

import copy

import pytest
import pytorch_lightning as pl
import torch
from opacus.optimizers import DPOptimizer, DPOptimizerFastGradientClipping

from datamodules.detection.datamodule import DetectionDataModule, DetLoaderSettings
from datamodules.detection.synthetic import SyntheticVocReader
from lightning_modules.components.detectors import (
    build_detector,
    detector_names,
    detector_spec,
    register_detector,
)
from lightning_modules.detector import ObjectDetector
from lightning_modules.dp.config import DPConfig
from lightning_modules.dp.detection import prepare_ssd_for_dp, ssd_per_image_losses
from lightning_modules.dp.training import DPTraining


def _batch():
    torch.manual_seed(0)
    imgs = [torch.rand(3, 64, 64) for _ in range(3)]
    tg = [
        {"boxes": torch.tensor([[5.0, 5.0, 30.0, 40.0]]), "labels": torch.tensor([1])},
        {
            "boxes": torch.tensor([[10.0, 20.0, 50.0, 60.0], [1.0, 1.0, 20.0, 20.0]]),
            "labels": torch.tensor([2, 1]),
        },
        {"boxes": torch.tensor([[30.0, 30.0, 60.0, 50.0]]), "labels": torch.tensor([2])},
    ]
    return imgs, tg


def test_tiny_ssd_per_image_gradients_are_exact_and_clipped():
    torch.manual_seed(0)
    net = build_detector("tiny_ssd", 3, image_size=64)
    dp = DPTraining(DPConfig(noise_multiplier=0.0, max_grad_norm=1.0, grad_sample_mode="hooks"))
    gsm = dp.prepare_module(copy.deepcopy(net))
    assert any("GroupNorm" in r for r in dp.replaced)  # TinyBackbone's BatchNorms
    gsm.train()
    imgs, tg = _batch()
    ssd_per_image_losses(gsm, imgs, tg).mean().backward()
    params = [p for p in gsm.parameters() if p.requires_grad]
    per_sample = torch.cat([p.grad_sample.reshape(3, -1) for p in params], 1)
    for i in range(3):  # Opacus's per-sample gradient == the gradient of image i's own loss
        g = torch.autograd.grad(
            ssd_per_image_losses(gsm, imgs[i : i + 1], tg[i : i + 1]).sum(), params
        )
        g = torch.cat([t.reshape(-1) for t in g])
        assert torch.allclose(g, per_sample[i], atol=1e-4, rtol=1e-4)
    norms = per_sample.norm(dim=1)
    assert (norms > 1.0).all()
    opt = DPOptimizer(
        torch.optim.SGD(params, lr=0.0),
        noise_multiplier=0.0,
        max_grad_norm=1.0,
        expected_batch_size=3,
    )
    opt.zero_grad(set_to_none=True)
    ssd_per_image_losses(gsm, imgs, tg).mean().backward()
    opt.pre_step()
    summed = torch.cat([p.summed_grad.reshape(-1) for p in params])
    clipped = per_sample * (1.0 / (norms + 1e-6)).clamp(max=1.0)[:, None]
    assert torch.allclose(summed, clipped.sum(0), atol=1e-4)
    # ghost clipping (the default) on the same detector and images: the same clipped sum
    ghost = DPTraining(DPConfig(noise_multiplier=0.0, max_grad_norm=1.0))
    g_net = ghost.prepare_module(copy.deepcopy(net))
    g_net.train()
    ghost.optimizer = g_opt = DPOptimizerFastGradientClipping(
        torch.optim.SGD([p for p in g_net.parameters() if p.requires_grad], lr=0.0),
        noise_multiplier=0.0,
        max_grad_norm=1.0,
        expected_batch_size=3,
    )
    g_opt.zero_grad(set_to_none=True)
    ghost.per_sample_loss(ssd_per_image_losses(g_net, imgs, tg))
    ghost.ghost_backward()
    assert torch.allclose(g_net.per_sample_gradient_norms, norms, rtol=1e-4)
    g_opt.pre_step()
    g_sum = torch.cat([p.summed_grad.reshape(-1) for p in g_net.parameters() if p.requires_grad])
    assert torch.allclose(g_sum, clipped.sum(0), atol=1e-4)


def test_ssd_vgg_l2norm_scale_is_frozen_and_model_is_accepted():
    net = build_detector("ssd300_vgg16", 3)
    assert prepare_ssd_for_dp(net) == ["backbone.scale_weight"]
    DPTraining(DPConfig(noise_multiplier=1.0)).prepare_module(net)


def test_detector_registry_declares_dp_support_stages_and_sizes():
    """The builders' declarations: SSDs support DP and are one-stage, Faster R-CNNs are not;
    duplicates are refused at registration and unknown names list the choices."""
    assert detector_names(supports_dp=True) == (
        "ssd300_vgg16",
        "ssd512_vgg16",
        "ssd300_resnet50",
        "tiny_ssd",
    )
    assert detector_names(supports_dp=True) == detector_names(two_stage=False)
    assert detector_names(two_stage=True) == (
        "frcnn_vgg16",
        "fasterrcnn_resnet50_fpn",
        "tiny_frcnn",
    )
    sizes = {name: detector_spec(name).default_size for name in detector_names()}
    assert sizes == {
        "ssd300_vgg16": 300,
        "ssd512_vgg16": 512,
        "ssd300_resnet50": 300,
        "tiny_ssd": 64,
        "frcnn_vgg16": 600,
        "fasterrcnn_resnet50_fpn": 800,
        "tiny_frcnn": 64,
    }
    with pytest.raises(ValueError, match="registered twice"):
        register_detector("tiny_ssd", supports_dp=True, two_stage=False, default_size=64)(
            lambda num_classes, o: None
        )
    with pytest.raises(ValueError, match="choose one of .*'tiny_ssd'"):
        build_detector("yolo", 3)
    with pytest.raises(ValueError, match="choose one of"):
        ObjectDetector(num_classes=3, arch="yolo")


@pytest.mark.parametrize("arch", ["tiny_frcnn", "fasterrcnn_resnet50_fpn"])
def test_two_stage_detectors_refuse_dp_with_the_reason(arch):
    with pytest.raises(ValueError, match="RoI"):
        ObjectDetector(num_classes=3, arch=arch, dp=DPConfig(noise_multiplier=1.0))


def test_tiny_ssd_trains_with_dp_and_epsilon_grows(tmp_path):
    torch.set_num_threads(1)
    pl.seed_everything(0)
    dm = DetectionDataModule(
        SyntheticVocReader(n_images=24),
        root=str(tmp_path / "voc"),
        loader=DetLoaderSettings(
            image_size=64, batch_size=4, num_workers=0, augment="little", max_eval_images=4
        ),
    )
    model = ObjectDetector(
        num_classes=dm.num_classes,
        arch="tiny_ssd",
        input_size=64,
        dp=DPConfig(noise_multiplier=1.0, max_grad_norm=1.0, max_physical_batch_size=2),
    )
    eps = []

    class Record(pl.Callback):
        def on_train_epoch_end(self, trainer, pl_module):
            eps.append(pl_module.dp.epsilon()["epsilon"])

    trainer = pl.Trainer(
        max_epochs=2,
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        limit_val_batches=0,
        num_sanity_val_steps=0,
        callbacks=[Record()],
        use_distributed_sampler=False,
    )
    trainer.fit(model, datamodule=dm)
    steps_per_epoch = round(1 / model.dp.sample_rate)
    assert model.dp.steps == 2 * steps_per_epoch
    assert len(eps) == 2 and 0 < eps[0] < eps[1] < float("inf")


def test_ssd_dropout_defense_puts_dropout_before_both_heads():
    torch.manual_seed(0)
    model = ObjectDetector(num_classes=3, arch="tiny_ssd", input_size=64, dropout_defense=True)
    heads = model.net.head
    for head in (heads.classification_head, heads.regression_head):
        assert all(isinstance(m[0], torch.nn.Dropout2d) and m[0].p == 0.5 for m in head.module_list)
    imgs, tg = _batch()
    model.train()
    losses = model.net(imgs, tg)
    assert torch.isfinite(sum(losses.values()))
    model.eval()
    with torch.no_grad():
        assert len(model.net(imgs)) == 3
    with pytest.raises(ValueError, match="SSD family"):
        ObjectDetector(num_classes=3, arch="tiny_frcnn", dropout_defense=True)


def test_empty_poisson_batch_of_detection_data_collates_to_empty_lists():
    """A Poisson batch with no image must reach the detector as empty lists (a noise-only step)."""
    from torch.utils.data import DataLoader

    from datamodules.detection.dataset import collate

    images, targets, idx = collate([])
    assert images == [] and targets == [] and idx.shape == (0,)
    data = [
        (torch.zeros(3, 8, 8), {"boxes": torch.zeros(0, 4), "labels": torch.zeros(0)}, i)
        for i in range(4)
    ]
    dp = DPTraining(DPConfig(noise_multiplier=1.0))
    dp.optimizer = object()  # dp_loader only checks that the optimizer exists
    loader = dp.dp_loader(DataLoader(data, batch_size=2, collate_fn=collate))
    assert loader.collate_fn is collate
    assert loader.collate_fn([])[0] == []
