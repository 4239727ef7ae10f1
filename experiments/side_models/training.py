"""Train extra classifiers by a run's recipe (shadow, reference and ensemble models) and
extract their signals. The attacks never train models themselves: this layer does.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader

from attacks.signals import save_signals
from datamodules.images import ManifestDataset, eval_transform
from experiments.run.folder import model_kwargs, optimizer_factory
from lightning_modules.classifier import ImageClassifier
from lightning_modules.extraction import attach_metadata, extract_arrays


def relabel(rows: list[dict], identities: list[str]) -> list[dict]:
    """Copies of ``rows`` with ``label`` = position of the identity in ``identities`` (else -1)."""
    pos = {name: i for i, name in enumerate(identities)}
    return [{**r, "label": pos.get(r["identity"], -1)} for r in rows]


def quiet_trainer(device: str = "cpu", **overrides) -> pl.Trainer:
    """A one-device :class:`pl.Trainer` for models the experiments train on the side (shadow,
    reference, table and benchmark targets): no logger, checkpoints, progress bar, model summary,
    validation or sanity steps. ``device``: ``cpu`` or ``cuda[:k]``; ``overrides`` are Trainer
    arguments (``max_epochs``, ``callbacks``, ``default_root_dir``, ...)."""
    settings = dict(
        accelerator="gpu" if str(device).startswith("cuda") else "cpu",
        devices=1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        limit_val_batches=0,
        num_sanity_val_steps=0,
    )
    return pl.Trainer(**(settings | overrides))


def train_classifier(
    train_rows: list[dict],
    roots: dict[str, Path],
    identities: list[str],
    model_args: dict,
    *,
    image_size: int,
    epochs: int,
    batch_size: int = 32,
    seed: int = 0,
    device: str = "cpu",
    resize: str = "squash",
    pad_value: int = 0,
) -> tuple[ImageClassifier, float]:
    """Train a fresh :class:`ImageClassifier` over ``identities`` on ``train_rows`` by the run's
    recipe (arch, preset, optimizer) and its resize (``resize``, ``pad_value``). Returns ``(model in eval mode, seconds)``."""
    pl.seed_everything(seed, workers=True, verbose=False)
    rows = relabel(train_rows, identities)
    model = ImageClassifier(
        **model_kwargs(model_args, len(identities)), optimizer=optimizer_factory(model_args)
    )
    loader = DataLoader(
        ManifestDataset(rows, roots, eval_transform(image_size, resize, pad_value)),  # no aug
        batch_size=batch_size,
        shuffle=True,
        num_workers=0,
    )
    trainer = quiet_trainer(device, max_epochs=epochs)
    t0 = time.perf_counter()
    trainer.fit(model, train_dataloaders=loader)
    return model.to(device).eval(), time.perf_counter() - t0


def extract_signals(
    model: torch.nn.Module,
    rows: list[dict],
    roots: dict[str, Path],
    image_size: int,
    *,
    device: str = "cpu",
    embed: bool = True,
    path: Path | None = None,
    resize: str = "squash",
    pad_value: int = 0,
) -> dict[str, np.ndarray]:
    """Signal arrays (see :mod:`attacks.signals`) of ``model`` over ``rows``, with embeddings.

    ``rows`` must carry ``label`` in this model's label space (-1 for individuals it never saw).
    Saved to ``path`` when given. ``resize``/``pad_value`` as the model's run was trained.
    """
    ds = ManifestDataset(rows, roots, eval_transform(image_size, resize, pad_value))
    loader = DataLoader(ds, batch_size=64, shuffle=False, num_workers=0)
    arrays = extract_arrays(
        model, loader, device, embed=getattr(model, "embed", None) if embed else None
    )
    signals = attach_metadata(arrays, rows)
    if path is not None:
        save_signals(path, signals)
    return signals
