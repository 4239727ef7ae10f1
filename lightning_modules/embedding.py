"""The re-identification embedding: a thin LightningModule around :class:`EmbeddingNet`.

Trained on a population of individuals with a (sub-center) ArcFace loss, as the Where's Whale-do
winners trained theirs; the field's recipe is settings: a pretrained backbone (``weights``),
frozen early stages (``frozen_stages``; the datamodule then serves their cached activations),
GeM pooling, separate learning rates for the backbone and the head, a linear warm-up then a cosine
decay. Validation (when the datamodule holds reference whales apart) scores retrieval across
encounters on them: ``val/map20`` (Where's Whale-do mAP@20) and ``val/top1``.
"""

from __future__ import annotations

import hashlib
import math
import os
from pathlib import Path

import numpy as np
import pytorch_lightning as pl
import torch

from lightning_modules.components.backbones import build_backbone
from lightning_modules.components.metric_head import ArcFaceHead, ArcFaceSettings, as_arcface
from lightning_modules.components.reid import EmbeddingNet

#: the trained backbone's weights file in an embedding run folder
BACKBONE_FILE = "backbone.pt"


class ReIDEmbedding(pl.LightningModule):
    """Population-trained re-identification embedding.

    Args:
        num_classes: training individuals (linked from ``data.num_classes``).
        arch: backbone, any torchvision or timm name (``tf_efficientnet_lite0``,
            ``tf_efficientnet_b5``, ``resnet50``, ...).
        weights: ``packaged`` (offline ImageNet EfficientNet-Lite0), ``imagenet`` (the library's
            download), ``none`` or a local state-dict path.
        frozen_stages: leading backbone stages that never train (their activations are cached).
        embedding_dim: size D of the unit-length embedding.
        arcface: margin (degrees), scale and sub-centres of the ArcFace loss.
        backbone_lr, head_lr: peak learning rates of the trainable stages and of the GeM, neck and
            ArcFace centres (AdamW).
        weight_decay: AdamW weight decay of the weights (not of biases and norms).
        warmup_epochs: linear warm-up from 1 % of the peak, then cosine decay to 1 % at the end.
        dropout: dropout before the neck.
        load_weights: ``False`` builds the layout and input normalisation of ``weights`` without
            reading them (a run's checkpoint is loaded over it).
    """

    def __init__(
        self,
        num_classes: int,
        arch: str = "tf_efficientnet_lite0",
        weights: str = "packaged",
        frozen_stages: int = 6,
        embedding_dim: int = 512,
        arcface: ArcFaceSettings = ArcFaceSettings(embedding_dim=512, sub_centers=3),
        backbone_lr: float = 5e-4,
        head_lr: float = 5e-3,
        weight_decay: float = 1e-4,
        warmup_epochs: float = 1.0,
        dropout: float = 0.0,
        load_weights: bool = True,
    ):
        super().__init__()
        self.save_hyperparameters()
        settings = as_arcface(arcface)
        if settings.embedding_dim != embedding_dim:
            settings = ArcFaceSettings(**{**vars(settings), "embedding_dim": embedding_dim})
        self.net = EmbeddingNet(
            build_backbone(arch, weights), embedding_dim, frozen_stages, dropout
        )
        self.head = ArcFaceHead(num_classes, settings)
        self._val: list[tuple[torch.Tensor, torch.Tensor]] = []

    def frozen_key(self) -> str:
        """sha256 of the frozen part's weights and buffers, its input normalisation included (the
        activation cache's key)."""
        h = hashlib.sha256(self.hparams.arch.encode())
        for name, t in self.net.frozen.state_dict().items():
            h.update(name.encode())
            h.update(t.detach().cpu().contiguous().numpy().tobytes())
        return h.hexdigest()

    def setup(self, stage: str) -> None:
        dm = getattr(self.trainer, "datamodule", None)
        if self.net.frozen_stages > 0 and hasattr(dm, "attach_frozen"):
            dm.attach_frozen(self.net.frozen_features, self.frozen_key())
            self.serves_frozen = True

    serves_frozen = False

    def on_train_end(self) -> None:
        """Write ``<run>/backbone.pt``: the backbone with its trained stages, as a plain state
        dict that a target classifier loads with ``model.weights: <run>/backbone.pt``."""
        log_dir = self.trainer.log_dir
        if self.trainer.is_global_zero and log_dir:
            path = Path(log_dir) / BACKBONE_FILE
            tmp = path.with_name(path.name + ".tmp")
            torch.save(self.net.backbone_state_dict(), tmp)
            os.replace(tmp, path)

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """Unit-length embeddings (B, D) of images or, when the datamodule serves them, of
        frozen-stage activations."""
        x = x.float()
        return self.net.embed_frozen(x) if self.serves_frozen else self.net(x)

    def training_step(self, batch, batch_idx):
        x, y, _ = batch
        loss = self.head.loss(self.embed(x), y)
        self.log("train/loss", loss, on_step=True, on_epoch=True, prog_bar=True, batch_size=len(y))
        return loss

    def validation_step(self, batch, batch_idx):
        x, idx = batch
        self._val.append((self.embed(x).cpu(), idx.cpu()))

    def on_validation_epoch_end(self) -> None:
        if not self._val:
            return
        from attacks.reid_benchmark import retrieval_metrics

        emb = torch.cat([e for e, _ in self._val])
        order = torch.cat([i for _, i in self._val])
        self._val.clear()
        if self.trainer.world_size > 1:  # every rank scored a shard: gather them all
            emb = self.all_gather(emb.to(self.device)).flatten(0, 1).cpu()
            order = self.all_gather(order.to(self.device)).flatten(0, 1).cpu()
        # each reference photo once (a distributed sampler pads its shards with repeats)
        order, first = np.unique(order.numpy(), return_index=True)
        emb = emb.numpy()[first]
        rows = self.trainer.datamodule.rows("reference")
        ident = np.asarray([rows[i]["identity"] for i in order])
        enc = np.asarray([rows[i]["encounter"] for i in order])
        sim = emb @ emb.T
        m = retrieval_metrics(sim, ident, ident, allowed=enc[:, None] != enc[None, :])
        self.log("val/map20", float(np.nan_to_num(m["map20"])), prog_bar=True)
        self.log("val/top1", float(np.nan_to_num(m["top1"])))

    def configure_optimizers(self):
        decay, no_decay = [], []
        for p in self.net.trainable.parameters():
            (no_decay if p.ndim <= 1 else decay).append(p)
        head = [*self.net.pool.parameters(), *self.net.neck.parameters(), *self.head.parameters()]
        hp = self.hparams
        groups = [
            {"params": decay, "lr": hp.backbone_lr, "weight_decay": hp.weight_decay},
            {"params": no_decay, "lr": hp.backbone_lr, "weight_decay": 0.0},
            {"params": head, "lr": hp.head_lr, "weight_decay": 0.0},
        ]
        opt = torch.optim.AdamW([g for g in groups if g["params"]])
        total = max(1, self.trainer.estimated_stepping_batches)
        per_epoch = total / max(1, self.trainer.max_epochs or 1)
        warm = max(1, int(hp.warmup_epochs * per_epoch))
        sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: warmup_cosine(s, warm, total))
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}


def warmup_cosine(step: int, warmup: int, total: int, floor: float = 0.01) -> float:
    """Learning-rate factor at ``step``: linear ``floor -> 1`` over ``warmup`` steps, then cosine
    ``1 -> floor`` until ``total``."""
    if step < warmup:
        return floor + (1 - floor) * step / warmup
    t = min(1.0, (step - warmup) / max(1, total - warmup))
    return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * t))
