"""The run's target in torch, without Lightning where it can: the reference engine of
``cli.py discriminate`` (``--engine torch``) and the model ``cli.py export`` writes to ONNX.

:func:`load_target` rebuilds the target from its checkpoint; :func:`photo_signals` runs it over
photo files with the run's evaluation transform and returns the signal arrays of
:func:`lightning_modules.extraction.extract_arrays` (``logits``, ``embedding``, ``loss_pred``,
``max_prob`` ...; no labels: ``label`` is -1 and ``loss_true`` NaN).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from datamodules.errors import DataError
from datamodules.images import load_rgb
from experiments.run.folder import RunContext, is_embedding_target, load_weights
from experiments.run.input_checks import load_checkpoint
from lightning_modules.components.classifier import PRESETS, build_classifier
from lightning_modules.components.defenses import apply_dropout_defense
from lightning_modules.extraction import extract_arrays


class PlainTarget(nn.Module):
    """A :class:`~lightning_modules.components.classifier.ClassifierNet` with the methods
    :func:`~lightning_modules.extraction.extract_arrays` uses (one trunk pass for both)."""

    def __init__(self, net: nn.Module):
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        return self.net.embed(x)

    def logits_and_embedding(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        e = self.net.embed(x)
        return self.net.head(e), e


def load_target(ctx: RunContext) -> nn.Module:
    """The run's target in eval mode on ``ctx.device``. A plain softmax classifier is rebuilt
    from ``lightning_modules.components`` and its checkpoint (``weights_only``) without importing
    Lightning; a DP-wrapped or embedding-head target goes through its LightningModule."""
    ckpt = ctx.checkpoint
    if not ckpt.is_file():
        raise DataError(f"--run {ctx.folder}: no checkpoint {ckpt}; pass a finished fit's folder")
    args = dict(ctx.model_args)
    if args.get("dp") or is_embedding_target(args) or args.get("weights_path"):
        return ctx.model()
    state = load_checkpoint(ckpt, "--run")
    hp = {**args, **(state.get("hyper_parameters") or {})}
    cfg = dict(PRESETS[hp.get("preset") or "overfit"])
    cfg.update({k: hp[k] for k in ("batchnorm", "dropout") if hp.get(k) is not None})
    n = len(ctx.class_names)
    net = build_classifier(
        hp.get("arch") or "resnet50",
        n,
        batchnorm=cfg["batchnorm"],
        dropout=cfg["dropout"],
        weights=hp.get("weights") or "none",  # its layout; the checkpoint holds the values
        load_weights=False,
    )
    if hp.get("dropout_defense"):
        apply_dropout_defense(net, n, hp.get("dropout_defense_p", 0.5))
    weights = state.get("state_dict", state)
    load_weights(net, {k[4:]: v for k, v in weights.items() if k.startswith("net.")}, ckpt, args)
    model = PlainTarget(net).to(ctx.device).eval()
    ctx._model = model  # final_signals reuses it instead of rebuilding the LightningModule
    return model


class PhotoFiles(Dataset):
    """``(transform(photo), -1, i)`` of photo files (no labels: new photos)."""

    def __init__(self, paths: list[Path], transform):
        self.paths, self.transform = paths, transform

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int):
        return self.transform(load_rgb(self.paths[i])), torch.tensor(-1), torch.tensor(i)


def photo_signals(
    ctx: RunContext,
    model: nn.Module,
    paths: list[Path],
    wrap: Callable[[Iterable, int], Iterable] | None = None,
) -> dict[str, np.ndarray]:
    """Signal arrays of the photo files ``paths`` (N rows, in order) from the torch ``model``.
    ``wrap(batches, total)`` may wrap the batches, e.g. in a progress bar."""
    loader = DataLoader(PhotoFiles(paths, ctx.transform()), batch_size=32)
    batches = wrap(loader, len(paths)) if wrap else loader
    return extract_arrays(model, batches, ctx.device, embed=model.embed)


class TorchTarget:
    """The run's target in torch: the reference engine of ``cli.py discriminate``."""

    engine = "torch"

    def __init__(self, ctx: RunContext):
        self.ctx = ctx
        self.model = load_target(ctx)

    def final_signals(self) -> dict[str, np.ndarray]:
        """The run's final signals, extracted (and saved) when missing or stale."""
        from experiments.run.folder import final_signals

        return final_signals(self.ctx)[0]

    def signals(
        self, paths: list[Path], wrap: Callable[[Iterable, int], Iterable] | None = None
    ) -> dict[str, np.ndarray]:
        """Signal arrays of the photo files ``paths`` (:func:`photo_signals`)."""
        return photo_signals(self.ctx, self.model, paths, wrap)
