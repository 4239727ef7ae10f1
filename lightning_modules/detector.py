"""Object detector LightningModule (detection paper, section 5.1) and its prediction signals.

Training: SGD (lr 1e-3, momentum 0.9, weight decay 5e-4) with step decay (``lr_milestones`` in
optimizer steps, factor ``lr_gamma``), as in the paper. Validation: mAP at IoU 0.5 (VOC) and COCO
mAP@[.5:.95] from torchmetrics (pycocotools backend) on the in set (train mAP) and the out set
(test mAP), logged as ``val/map50_in``, ``val/map_in``, ``val/map50_out``, ``val/map_out``.
``difficult`` objects are passed as ``iscrowd`` so that they are neither required nor penalised.

Two post-processing settings: ``eval_*`` for mAP (standard NMS) and ``predict`` for the attack
(score 0.01, NMS off for one-stage; RPN-NMS 0.7 and head-NMS 1.0 for two-stage; a box cap).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pytorch_lightning as pl
import torch
from pytorch_lightning.utilities import rank_zero_info
from torchmetrics.detection import MeanAveragePrecision

from attacks.signals import save_signals
from lightning_modules.components.defenses import apply_ssd_dropout_defense
from lightning_modules.components.detectors import build_detector, detector_spec, set_postprocess
from lightning_modules.dp.config import DPConfig, as_config
from lightning_modules.dp.detection import (
    check_dp_detector,
    prepare_ssd_for_dp,
    ssd_per_image_losses,
)
from lightning_modules.dp.training import DPHooks, DPTraining

OptimizerCallable = Callable[[Iterable], torch.optim.Optimizer]


@dataclass
class PredictionSettings:
    """Post-processing of the predictions the attacker sees (paper, section 5.1 "Prediction").

    Attributes:
        score_thresh: boxes scoring below are dropped (0.01).
        nms_thresh: one-stage NMS IoU threshold; 1.0 switches NMS off.
        rpn_nms_thresh: two-stage RPN NMS IoU threshold (0.7).
        head_nms_thresh: two-stage box-head NMS IoU threshold (1.0 = off).
        max_boxes: cap on boxes per image (highest scores kept); also the padded length K.
    """

    score_thresh: float = 0.01
    nms_thresh: float = 1.0
    rpn_nms_thresh: float = 0.7
    head_nms_thresh: float = 1.0
    max_boxes: int = 200


class ObjectDetector(DPHooks, pl.LightningModule):
    """Thin wrapper around :func:`~lightning_modules.components.detectors.build_detector`.

    Args:
        num_classes: classes including background (linked from ``data.num_classes``).
        arch: a registered detector (:func:`~lightning_modules.components.detectors.
            detector_names`): ``ssd300_vgg16``, ``ssd512_vgg16``, ``ssd300_resnet50``,
            ``frcnn_vgg16``, ``fasterrcnn_resnet50_fpn``, ``tiny_ssd`` or ``tiny_frcnn``.
        input_size: SSD input side / Faster R-CNN min side in pixels (None: the arch's default).
            (Named apart from ``data.image_size``, the loader's resize.)
        max_size: Faster R-CNN max side (None: 5/3 of ``input_size``).
        lr, momentum, weight_decay: SGD settings (paper: 1e-3, 0.9, 5e-4).
        lr_milestones: optimizer steps at which the lr is multiplied by ``lr_gamma``.
        lr_gamma: step-decay factor (0.1).
        warmup_steps: linear lr warm-up (0 = off).
        optimizer: optional optimizer factory ``params -> Optimizer`` replacing SGD.
        eval_score_thresh, eval_nms_thresh, eval_max_boxes: post-processing for mAP
            (``eval_nms_thresh`` None: 0.45 for SSD, 0.5 for Faster R-CNN).
        predict: post-processing for the attack's signal files.
        representation_size: ``frcnn_vgg16`` box-head width.
        anchor_sizes: anchor sides for ``frcnn_vgg16``/``tiny_frcnn`` (pixels).
        dp: DP-SGD settings (:class:`~lightning_modules.dp.config.DPConfig`), architectures whose
            builder declares ``supports_dp`` only (the SSD family and ``tiny_ssd``): per-image
            losses (:func:`~lightning_modules.dp.detection.ssd_per_image_losses`) give true
            per-image clipping; two-stage detectors raise a ``ValueError`` saying why.
        dropout_defense: the paper's dropout defense for SSDs: ``Dropout2d(dropout_defense_p)``
            before the classification and regression convolutions (the last two layers).
    """

    def __init__(
        self,
        num_classes: int,
        arch: str = "ssd300_vgg16",
        input_size: int | None = None,
        max_size: int | None = None,
        lr: float = 1e-3,
        momentum: float = 0.9,
        weight_decay: float = 5e-4,
        lr_milestones: list[int] | None = None,
        lr_gamma: float = 0.1,
        warmup_steps: int = 0,
        optimizer: OptimizerCallable | None = None,
        eval_score_thresh: float = 0.01,
        eval_nms_thresh: float | None = None,
        eval_max_boxes: int = 200,
        predict: PredictionSettings | None = None,
        representation_size: int = 4096,
        anchor_sizes: list[int] | None = None,
        dp: DPConfig | None = None,
        dropout_defense: bool = False,
        dropout_defense_p: float = 0.5,
    ):
        super().__init__()
        self.save_hyperparameters(ignore=["optimizer"])
        self.arch = arch
        spec = detector_spec(arch)
        self.two_stage = spec.two_stage
        self.input_size = int(input_size or spec.default_size)
        self.predict_settings = predict or PredictionSettings()
        self.eval_nms = (
            eval_nms_thresh if eval_nms_thresh is not None else (0.5 if self.two_stage else 0.45)
        )
        self.net = build_detector(
            arch,
            num_classes,
            image_size=self.input_size,
            max_size=max_size,
            score_thresh=eval_score_thresh,
            nms_thresh=self.eval_nms,
            detections_per_img=eval_max_boxes,
            representation_size=representation_size,
            anchor_sizes=tuple(anchor_sizes) if anchor_sizes else None,
        )
        if dropout_defense:
            if self.two_stage:
                raise ValueError("model.dropout_defense is implemented for the SSD family only.")
            apply_ssd_dropout_defense(self.net, dropout_defense_p)
        self.dp = None
        if dp is not None:
            check_dp_detector(arch)
            prepare_ssd_for_dp(self.net)
            self.dp = DPTraining(as_config(dp), f"ObjectDetector {arch}")
            self.net = self.dp.prepare_module(self.net)
        self.optimizer_factory = optimizer
        self.val_names: list[str] = ["in", "out"]
        self.maps = torch.nn.ModuleDict(
            {
                n: MeanAveragePrecision(
                    iou_type="bbox",
                    backend="pycocotools",
                    max_detection_thresholds=[1, 10, max(eval_max_boxes, 11)],
                )
                for n in ("in", "out")
            }
        )
        for m in self.maps.values():
            m.warn_on_many_detections = False
        rank_zero_info(
            f"ObjectDetector {arch}: {sum(p.numel() for p in self.parameters()) / 1e6:.1f}M params"
        )

    def forward(self, images: list[torch.Tensor]) -> list[dict[str, torch.Tensor]]:
        """Detections per image: ``boxes`` (K, 4) pixel corners, ``scores`` (K,), ``labels``."""
        return self.net(images)

    @contextmanager
    def postprocess(self, settings: PredictionSettings | None):
        """Temporarily switch to the attack's post-processing (None: leave as is)."""
        if settings is None:
            yield
            return
        s = settings
        nms = s.head_nms_thresh if self.two_stage else s.nms_thresh
        old = set_postprocess(self.net, s.score_thresh, nms, s.max_boxes, s.rpn_nms_thresh)
        try:
            yield
        finally:
            set_postprocess(
                self.net,
                old["score_thresh"],
                old["nms_thresh"],
                old["max_boxes"],
                old.get("rpn_nms_thresh"),
            )

    # ---- training ------------------------------------------------------------------------
    def training_step(self, batch, batch_idx):
        images, targets, _ = batch
        targets = [{"boxes": t["boxes"], "labels": t["labels"]} for t in targets]
        if self.dp is not None:
            return self._dp_training_step(list(images), targets)
        losses = self.net(images, targets)
        loss = sum(losses.values())
        bs = len(images)
        self.log("train/loss", loss, on_step=True, on_epoch=True, prog_bar=True, batch_size=bs)
        for k, v in losses.items():
            self.log(f"train/{k}", v, on_step=False, on_epoch=True, batch_size=bs)
        return loss

    # ---- DP-SGD (lightning_modules.dp) ---------------------------------------------------
    def _dp_training_step(self, images, targets):
        if not images:  # an empty Poisson batch: one zero image with zero weight (a noise step)
            size = self.input_size
            images = [torch.zeros(3, size, size, device=self.device)]
            targets = [
                {
                    "boxes": torch.zeros(0, 4, device=self.device),
                    "labels": torch.zeros(0, dtype=torch.int64, device=self.device),
                }
            ]
            return self.dp.per_sample_loss(ssd_per_image_losses(self.net, images, targets) * 0.0)
        loss = self.dp.per_sample_loss(ssd_per_image_losses(self.net, images, targets))
        self.log(
            "train/loss", loss, on_step=True, on_epoch=True, prog_bar=True, batch_size=len(images)
        )
        return loss

    def on_validation_epoch_start(self) -> None:
        dm = getattr(self.trainer, "datamodule", None)
        in_too = getattr(getattr(dm, "hparams", {}), "get", lambda *_: True)("eval_in_set", True)
        self.val_names = ["in", "out"] if in_too else ["out"]
        for m in self.maps.values():
            m.reset()

    def validation_step(self, batch, batch_idx, dataloader_idx: int = 0):
        images, targets, _ = batch
        preds = self.net(images)
        name = self.val_names[dataloader_idx] if dataloader_idx < len(self.val_names) else "out"
        self.maps[name].update(
            [{k: p[k].detach().cpu() for k in ("boxes", "scores", "labels")} for p in preds],
            [
                {
                    "boxes": t["boxes"].cpu(),
                    "labels": t["labels"].cpu(),
                    "iscrowd": t["iscrowd"].cpu(),
                }
                for t in targets
            ],
        )

    def on_validation_epoch_end(self) -> None:
        self._log_maps("val")

    def test_step(self, batch, batch_idx, dataloader_idx: int = 0):
        self.validation_step(batch, batch_idx, dataloader_idx)

    def on_test_epoch_start(self) -> None:
        self.on_validation_epoch_start()

    def on_test_epoch_end(self) -> None:
        self._log_maps("test")

    def _log_maps(self, stage: str) -> None:
        for name in self.val_names:
            res = self.maps[name].compute()
            self.log(f"{stage}/map50_{name}", float(res["map_50"]), prog_bar=name == "out")
            self.log(f"{stage}/map_{name}", float(res["map"]))
            self.maps[name].reset()

    def predict_step(self, batch, batch_idx, dataloader_idx: int = 0):
        images, _, idx = batch
        with self.postprocess(self.predict_settings):
            preds = self.net(images)
        return {"preds": preds, "index": idx, "sizes": [im.shape[-2:] for im in images]}

    def configure_optimizers(self):
        hp = self.hparams
        decay, no_decay = [], []
        for name, p in self.net.named_parameters():
            if p.requires_grad:
                (no_decay if p.ndim <= 1 or name.endswith(".bias") else decay).append(p)
        groups = [
            {"params": decay, "weight_decay": hp.weight_decay},
            {"params": no_decay, "weight_decay": 0.0},
        ]
        if self.optimizer_factory is not None:
            opt = self.optimizer_factory(groups)
        else:
            opt = torch.optim.SGD(groups, lr=hp.lr, momentum=hp.momentum)
        if self.dp is not None:
            opt = self.dp.make_optimizer(opt, self.trainer)
        milestones = sorted(hp.lr_milestones or [])
        warm, gamma = int(hp.warmup_steps), hp.lr_gamma

        def factor(step: int) -> float:
            f = gamma ** sum(step >= m for m in milestones)
            return f * min(1.0, (step + 1) / warm) if warm else f

        sched = torch.optim.lr_scheduler.LambdaLR(opt, factor)
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}


@torch.no_grad()
def predict_detections(
    module: ObjectDetector,
    loader,
    settings: PredictionSettings | None = None,
    max_batches: int | None = None,
) -> dict[str, np.ndarray]:
    """Run ``module`` with the attack's post-processing over ``loader``.

    Returns ``index`` (N,), ``boxes`` f32 (N, K, 4) corners normalised by the input image's
    width/height (so in [0, 1]), ``scores`` f32 (N, K) sorted descending, ``labels`` int64 (N, K)
    (-1 = padding), ``n_boxes`` int64 (N,), ``input_hw`` int64 (N, 2); K = ``max_boxes``.
    """
    settings = settings or module.predict_settings
    k = settings.max_boxes
    was = module.training
    module.eval()
    out = {"index": [], "boxes": [], "scores": [], "labels": [], "n_boxes": [], "input_hw": []}
    try:
        for b, (images, _, idx) in enumerate(loader):
            if max_batches is not None and b >= max_batches:
                break
            images = [im.to(module.device) for im in images]
            with module.postprocess(settings):
                preds = module.net(images)
            for im, p, i in zip(images, preds, idx.tolist()):
                h, w = im.shape[-2:]
                order = torch.argsort(p["scores"], descending=True)[:k]
                n = len(order)
                boxes = np.zeros((k, 4), np.float32)
                scores = np.zeros(k, np.float32)
                labels = np.full(k, -1, np.int64)
                scale = torch.tensor([w, h, w, h], dtype=torch.float32, device=p["boxes"].device)
                boxes[:n] = (p["boxes"][order] / scale).clamp(0, 1).cpu().numpy()
                scores[:n] = p["scores"][order].float().cpu().numpy()
                labels[:n] = p["labels"][order].cpu().numpy()
                for key, v in (("boxes", boxes), ("scores", scores), ("labels", labels)):
                    out[key].append(v)
                out["index"].append(i)
                out["n_boxes"].append(n)
                out["input_hw"].append((h, w))
    finally:
        module.train(was)
    return {
        "index": np.asarray(out["index"], np.int64),
        "boxes": np.stack(out["boxes"]) if out["boxes"] else np.zeros((0, k, 4), np.float32),
        "scores": np.stack(out["scores"]) if out["scores"] else np.zeros((0, k), np.float32),
        "labels": np.stack(out["labels"]) if out["labels"] else np.zeros((0, k), np.int64),
        "n_boxes": np.asarray(out["n_boxes"], np.int64),
        "input_hw": np.asarray(out["input_hw"], np.int64).reshape(-1, 2),
    }


def write_prediction_signals(
    run_dir: str | Path | None,
    module: ObjectDetector,
    datamodule,
    settings: PredictionSettings | None = None,
    max_batches: int | None = None,
) -> tuple[dict[str, np.ndarray], Path | None]:
    """Predict the role's in and out sets and save ``<run>/signals/predictions.npz``.

    Rows follow ``datamodule.signal_rows()`` (manifest order). Besides the arrays of
    :func:`predict_detections`: ``sample_id``, ``file``, ``group``, ``role`` (member/nonmember),
    ``side`` (target/shadow), ``split`` (in/out). A sidecar ``predictions.json`` records the
    architecture, dataset, classes and prediction settings. Nothing is written when ``run_dir``
    is None (e.g. under ``fast_dev_run``).
    """
    settings = settings or module.predict_settings
    rows = datamodule.signal_rows()
    arrays = predict_detections(module, datamodule.signal_loader(rows), settings, max_batches)
    sel = [rows[i] for i in arrays["index"]]
    meta = {
        f: np.array([r[f] for r in sel], dtype=str)
        for f in ("sample_id", "file", "group", "role", "side", "split")
    }
    signals = {**meta, **arrays}
    if run_dir is None:
        return signals, None
    path = save_signals(Path(run_dir) / "signals" / "predictions.npz", signals)
    sidecar = {
        "arch": module.arch,
        "two_stage": module.two_stage,
        "input_size": module.input_size,
        "dataset": datamodule.dataset_name,
        "classes": datamodule.class_names,
        "prediction": asdict(settings),
        "n": int(len(arrays["index"])),
    }
    (path.parent / "predictions.json").write_text(json.dumps(sidecar, indent=2))
    return signals, path
