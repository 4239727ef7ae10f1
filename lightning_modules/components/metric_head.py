"""Angular-margin (ArcFace, sub-center ArcFace) embedding head, from pytorch-metric-learning.

The trunk's features go through a linear ``neck`` to a ``D``-dimensional embedding that is
L2-normalised; the head holds one unit-length centre per class (``sub_centers`` per class for
sub-center ArcFace) and scores a photo by ``scale * cos(embedding, nearest centre of the class)``.
Training adds the additive angular ``margin`` to the true class (the library's loss); inference
scores carry no margin, so ``softmax(scores)`` is the model's class probability.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn


@dataclass(frozen=True)
class ArcFaceSettings:
    """``model.arcface``: the angular-margin head (used with ``model.head: arcface``).

    Args:
        embedding_dim: size D of the normalised embedding.
        margin: additive angular margin in degrees (28.6 degrees = 0.5 rad, the ArcFace paper's).
        scale: the logit scale s (cosines in [-1, 1] times s).
        sub_centers: centres per class; 1 is ArcFace, more is sub-center ArcFace (robust to
            mislabelled or very different photos of one individual).
    """

    embedding_dim: int = 128
    margin: float = 28.6
    scale: float = 30.0
    sub_centers: int = 1


def as_arcface(value) -> ArcFaceSettings:
    """``ArcFaceSettings`` from itself, a dict (a saved config's ``init_args``) or None."""
    if value is None:
        return ArcFaceSettings()
    if isinstance(value, dict):
        return ArcFaceSettings(**value)
    return value


class L2Normalize(nn.Module):
    """Rows scaled to unit length: (B, D) -> (B, D)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.normalize(x, dim=1)


def arcface_neck(in_dim: int, settings: ArcFaceSettings, dropout: float = 0.0) -> nn.Sequential:
    """Trunk features (B, in_dim) -> normalised embedding (B, D): [dropout,] linear, L2 norm."""
    layers: list[nn.Module] = [nn.Dropout(dropout)] if dropout > 0 else []
    return nn.Sequential(*layers, nn.Linear(in_dim, settings.embedding_dim), L2Normalize())


class ArcFaceHead(nn.Module):
    """Class scores ``scale * cos`` (B, C) of normalised embeddings (B, D); ``loss`` is the
    library's (sub-center) ArcFace loss with the margin, whose centres ``loss_fn.W`` (D, C * k)
    are this head's weights."""

    def __init__(self, num_classes: int, settings: ArcFaceSettings):
        super().__init__()
        # imported here: pytorch-metric-learning pulls scipy.stats (~2 s), which a softmax run's
        # commands (discriminate, attack) never need
        from pytorch_metric_learning.losses import ArcFaceLoss, SubCenterArcFaceLoss

        kw = dict(
            num_classes=num_classes,
            embedding_size=settings.embedding_dim,
            margin=settings.margin,
            scale=settings.scale,
        )
        if settings.sub_centers > 1:
            self.loss_fn = SubCenterArcFaceLoss(**kw, sub_centers=settings.sub_centers)
        else:
            self.loss_fn = ArcFaceLoss(**kw)

    def forward(self, embedding: torch.Tensor) -> torch.Tensor:
        return self.loss_fn.get_logits(embedding)

    def loss(self, embedding: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Mean ArcFace loss (nats) of a batch: embedding (B, D), labels (B,) int64."""
        return self.loss_fn(embedding, labels)
