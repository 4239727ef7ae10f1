"""The re-identification embedding net: a pretrained trunk, GeM pooling and a normalised neck.

:class:`EmbeddingNet` splits a :class:`~lightning_modules.components.backbones.Backbone` at
``frozen_stages``: the ``frozen`` part (input normalisation and the first stages) never trains and
stays in eval mode, so its activations are a pure function of the image and can be computed once
and cached (:meth:`EmbeddingNet.frozen_features`); the ``trainable`` stages, generalised-mean
pooling (:class:`GeM`) and a linear + batch-norm neck give a unit-length embedding (B, D)
(:meth:`EmbeddingNet.embed_frozen`). ``forward(x) = embed_frozen(frozen_features(x))``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from lightning_modules.components.backbones import Backbone, InputNorm


class GeM(nn.Module):
    """Generalised-mean pooling: ``(mean over h, w of clamp(x, eps) ** p) ** (1 / p)``.

    (B, C, h, w) -> (B, C); p = 1 is average pooling, large p tends to max pooling; ``p`` is
    learnt (initial 3, as in Radenovic et al.)."""

    def __init__(self, p: float = 3.0, eps: float = 1e-6, learn_p: bool = True):
        super().__init__()
        self.p = nn.Parameter(torch.tensor(float(p)), requires_grad=learn_p)
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        p = self.p.clamp(min=1.0)
        return x.clamp(min=self.eps).pow(p).mean(dim=(2, 3)).pow(1.0 / p)


class EmbeddingNet(nn.Module):
    """Images (B, 3, H, W), suite-normalised -> unit-length embeddings (B, D).

    Args:
        backbone: the staged trunk (its weights decide the input normalisation).
        embedding_dim: D.
        frozen_stages: how many leading stages never train (0 trains all; the input
            normalisation is always in the frozen part).
        dropout: dropout before the neck's linear layer.
    """

    def __init__(
        self, backbone: Backbone, embedding_dim: int = 512, frozen_stages: int = 0, dropout=0.0
    ):
        super().__init__()
        n = len(backbone.stages)
        if not 0 <= frozen_stages < n:
            raise ValueError(
                f"model.frozen_stages={frozen_stages}: {backbone.arch} has {n} stages; freeze "
                f"0 to {n - 1} of them."
            )
        # the normalisation is saved with the weights: a checkpoint brings its own
        self.frozen = nn.Sequential(
            InputNorm(backbone.mean, backbone.std, persistent=True),
            *backbone.stages[:frozen_stages],
        )
        for p in self.frozen.parameters():
            p.requires_grad_(False)
        self.trainable = nn.Sequential(*backbone.stages[frozen_stages:])
        self.pool = GeM()
        layers: list[nn.Module] = [nn.Dropout(dropout)] if dropout > 0 else []
        self.neck = nn.Sequential(
            *layers,
            nn.Linear(backbone.num_features, embedding_dim, bias=False),
            nn.BatchNorm1d(embedding_dim),
        )
        self.embedding_dim = embedding_dim
        self.frozen_stages = frozen_stages
        # the library model whose stages these are, outside the module tree (no second copy of
        # the weights in this net's state dict)
        self._library_model = [backbone.module]
        self.frozen.eval()  # from the start: Lightning restores each module's mode as it found it

    def backbone_state_dict(self) -> dict:
        """The library model's state dict with this net's (trained) stages: a weights file for
        ``build_backbone(arch, weights=<file>)``, e.g. a target fine-tuned from the embedding."""
        model = self._library_model[0]
        if model is None:
            raise ValueError("this backbone was built without its library model")
        return {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}

    def train(self, mode: bool = True):
        """The frozen part stays in eval mode (its batch-norm statistics are part of its cache)."""
        super().train(mode)
        self.frozen.eval()
        return self

    @torch.no_grad()
    def frozen_features(self, x: torch.Tensor) -> torch.Tensor:
        """Activations of the frozen stages: (B, 3, H, W) -> (B, C', h, w); no gradient, always
        in eval mode (batch norm on its running statistics, which never change), whatever mode
        a trainer restored."""
        self.frozen.eval()
        return self.frozen(x)

    def embed_frozen(self, a: torch.Tensor) -> torch.Tensor:
        """Frozen-stage activations (B, C', h, w) -> unit-length embeddings (B, D)."""
        return F.normalize(self.neck(self.pool(self.trainable(a))), dim=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.embed_frozen(self.frozen_features(x))
