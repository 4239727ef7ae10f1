"""Checkpoints a killed fit can always resume from, and the state that makes the resume exact.

* :class:`RunCheckpoint` writes ``<run>/checkpoints/last.ckpt`` at the end of every training epoch
  (after the leakage monitor), and also every ``every_n_train_steps`` steps or
  ``train_time_interval`` when set. Each write goes to a temp file beside it, then
  ``os.replace``: a kill never leaves half a checkpoint under the final name. ``last.ckpt`` is
  always the same file (no ``last-v1.ckpt``), and the run's TensorBoard events are flushed before
  it is written, so everything logged up to the checkpoint is on disk.
* :class:`ResumePoint` saves the random generators' states in the checkpoint and restores them
  when the resumed epoch starts; with :class:`datamodules.epoch_shuffle.EpochShuffle` a resume from the
  middle of an epoch then trains exactly the batches an uninterrupted run would.
"""

from __future__ import annotations

import os
import random
from pathlib import Path
from weakref import proxy

import numpy as np
import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import ModelCheckpoint

from datamodules.epoch_shuffle import EpochShuffle


class RunCheckpoint(ModelCheckpoint):
    """:class:`ModelCheckpoint` whose ``last.ckpt`` is written every epoch, atomically.

    Use ``every_n_train_steps`` or ``train_time_interval`` for extra checkpoints inside long
    epochs (``save_top_k: 0`` keeps only ``last.ckpt``).
    """

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        # a step checkpoint at the epoch's last batch predates validation and the monitor
        self._last_global_step_saved = -1
        super().on_train_epoch_end(trainer, pl_module)
        if (
            self.save_last
            and self._last_global_step_saved != trainer.global_step
            and not self._should_skip_saving_checkpoint(trainer)
        ):
            self._save_last_checkpoint(trainer, self._monitor_candidates(trainer))

    def _save_checkpoint(self, trainer: pl.Trainer, filepath: str) -> None:
        final = Path(filepath)
        tmp = final.with_name(f".{final.name}.partial")
        if trainer.is_global_zero:
            for logger in trainer.loggers:
                logger.save()  # TensorBoard: flush the events logged so far
        try:
            trainer.save_checkpoint(tmp, self.save_weights_only)
        except BaseException:
            tmp.unlink(missing_ok=True)  # a full disk leaves no partial file; last.ckpt is kept
            raise
        if trainer.is_global_zero:
            os.replace(tmp, final)
        trainer.strategy.barrier("RunCheckpoint")
        self._last_global_step_saved = trainer.global_step
        self._last_checkpoint_saved = filepath
        if trainer.is_global_zero:
            for logger in trainer.loggers:
                logger.after_save_checkpoint(proxy(self))


def rng_states() -> dict:
    """torch (CPU, CUDA), numpy and python generator states, as types ``weights_only`` loads."""
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    version, internal, py_gauss = random.getstate()
    states = {
        "torch": torch.get_rng_state(),
        "numpy": [kind, torch.from_numpy(keys.astype(np.int64)), pos, has_gauss, gauss],
        "python": [version, list(internal), py_gauss],
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        states["cuda"] = torch.cuda.get_rng_state_all()
    return states


def set_rng_states(states: dict) -> None:
    """Restore what :func:`rng_states` saved."""
    torch.set_rng_state(states["torch"])
    kind, keys, pos, has_gauss, gauss = states["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, gauss))
    version, internal, py_gauss = states["python"]
    random.setstate((version, tuple(internal), py_gauss))
    if "cuda" in states and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(states["cuda"])


def _epoch_metrics(trainer: pl.Trainer) -> dict:
    """The training epoch's accumulating ``self.log(..., on_epoch=True)`` tensors, by key."""
    results = trainer.fit_loop.epoch_loop._results
    return {
        k: m
        for k, m in results.items()
        if getattr(m, "is_tensor", False) and m.meta.on_epoch and m.meta.fx == "training_step"
    }


def epoch_sums(trainer: pl.Trainer) -> dict:
    """What the epoch-level training metrics accumulated so far (sum and batch count)."""
    return {
        k: [m.value.detach().cpu(), m.cumulated_batch_size.cpu()]
        for k, m in _epoch_metrics(trainer).items()
    }


def add_epoch_sums(trainer: pl.Trainer, sums: dict) -> None:
    """Fold an interrupted epoch's earlier part (:func:`epoch_sums`) into the running metrics:
    sums and batch counts add for mean and sum reductions, max/min take the extreme."""
    for key, m in _epoch_metrics(trainer).items():
        if key not in sums:
            continue
        value, count = (t.to(m.value.device) for t in sums[key])
        if m.meta.is_mean_reduction or m.meta.is_sum_reduction:
            m.value = m.value + value
            m.cumulated_batch_size = m.cumulated_batch_size + count.to(m.cumulated_batch_size)
        elif m.meta.is_max_reduction or m.meta.is_min_reduction:
            m.value = m.meta.reduce_fx(m.value, value)


class ResumePoint(pl.Callback):
    """Save the generators' states with each checkpoint; on a resume, restore them when the
    resumed epoch starts and have the training shuffle skip the batches already trained."""

    def __init__(self) -> None:
        self._pending: dict | None = None
        self._sums: dict = {}
        self._done = 0

    def on_save_checkpoint(self, trainer, pl_module, checkpoint: dict) -> None:
        checkpoint["rng_states"] = rng_states()
        checkpoint["epoch_sums"] = epoch_sums(trainer)

    def on_load_checkpoint(self, trainer, pl_module, checkpoint: dict) -> None:
        self._pending = checkpoint.get("rng_states")
        self._sums = checkpoint.get("epoch_sums") or {}
        progress = checkpoint.get("loops", {}).get("fit_loop", {})
        current = progress.get("epoch_loop.batch_progress", {}).get("current", {})
        self._done = int(current.get("processed", 0))  # batches of its epoch already trained

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if self._sums:  # the first batch after a mid-epoch resume: add the epoch's earlier part
            add_epoch_sums(trainer, self._sums)
            self._sums = {}

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        # before the first epoch's loader is iterated (Lightning prefetches at epoch start)
        sampler = getattr(trainer.train_dataloader, "sampler", None)
        mid_epoch = 0 < self._done < trainer.num_training_batches
        if isinstance(sampler, EpochShuffle) and mid_epoch:
            sampler.skip_batches = self._done
        if not mid_epoch:
            self._sums = {}
        self._done = 0

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self._pending is not None:
            set_rng_states(self._pending)
            self._pending = None
