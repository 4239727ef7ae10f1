"""Fit-time signal writers: the leakage monitor (per-epoch classifier signals on members and
non-members, and the curves from them) and the detector's prediction signals at the end of fit."""

from __future__ import annotations

import math
import warnings
from pathlib import Path

import numpy as np
import pytorch_lightning as pl
from pytorch_lightning.utilities import rank_zero_info

from attacks.leakage import leakage_metrics
from attacks.report import plot_leakage
from attacks.signals import epoch_path, list_epochs, load_signals, save_signals
from datamodules.detection.datamodule import DetectionDataModule
from datamodules.whale import WhaleDataModule
from lightning_modules.detector import write_prediction_signals
from lightning_modules.extraction import extract_rows


class LeakageMonitor(pl.Callback):
    """Every ``every_n_epochs`` training epochs, score all signal rows and log leakage curves.

    Writes ``<run>/signals/epoch=NNN.npz`` (rank 0 only, each sample once; see
    :mod:`attacks.signals`) and logs ``leak/train_acc``, ``leak/test_acc``, ``leak/gap``,
    ``leak/kl``, ``leak/kl_photo``, ``attack/acc``, ``attack/auc``, ``attack/tpr@1%fpr`` (see
    :func:`attacks.leakage.leakage_metrics`).

    Needs the whale datamodule (its ``signal_rows()`` and ``signal_loader(rows)``);
    with another datamodule it does nothing.

    Args:
        every_n_epochs: run after every n-th epoch (and after the last one).
        topk: keep only the top-k logits per sample (losses still use the full vector);
            ``None`` keeps all logits.
        save_embeddings: also save penultimate embeddings (large for big backbones).
        kl_bins: histogram bins for the KL divergence.
        enabled: switch the monitor off without editing the callback list.
        max_rows: score at most this many signal rows per pass: a seeded sample, stratified by
            ``(split, set, role)`` and the same every epoch, so the curves stay comparable
            (``None``: every row). A pass costs about one forward per scored row, i.e. roughly
            a third of a training step; with the paper's split there are ~5 signal rows per
            training photo, so an uncapped pass costs ~1.7 training epochs. Capping bounds the
            overhead on large catalogs; the final extraction (``cli.py attack``) scores every row.
        seed: seed of the ``max_rows`` sample.
    """

    def __init__(
        self,
        every_n_epochs: int = 1,
        topk: int | None = None,
        save_embeddings: bool = False,
        kl_bins: int = 20,
        enabled: bool = True,
        max_rows: int | None = None,
        seed: int = 0,
    ):
        self.every_n_epochs = max(1, every_n_epochs)
        self.topk = topk
        self.save_embeddings = save_embeddings
        self.kl_bins = kl_bins
        self.enabled = enabled
        if max_rows is not None and max_rows < 1:
            raise ValueError("leakage.max_rows must be >= 1 (or null for every row).")
        self.max_rows = max_rows
        self.seed = seed
        self.last_metrics: dict[str, float] = {}

    def _due(self, trainer: pl.Trainer) -> bool:
        epoch = trainer.current_epoch
        last = trainer.max_epochs is not None and epoch + 1 >= trainer.max_epochs
        return (epoch + 1) % self.every_n_epochs == 0 or last or bool(trainer.fast_dev_run)

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        dm = trainer.datamodule
        if (
            not self.enabled
            or dm is None
            or not isinstance(dm, WhaleDataModule)
            or not self._due(trainer)
        ):
            return
        rows = sample_rows(dm.signal_rows(), self.max_rows, self.seed)
        # each rank scores rows[rank::world]; every rank gets all rows back, in manifest order
        # the trainer's precision (e.g. bf16 autocast on GPUs), as in its own eval loops
        with trainer.precision_plugin.forward_context():
            signals = extract_rows(
                pl_module,
                rows,
                dm.signal_loader,
                pl_module.device,
                topk=self.topk,
                embed=pl_module.embed if self.save_embeddings else None,
                max_batches=1 if trainer.fast_dev_run else None,
            )
        metrics = None
        log_dir = trainer.log_dir  # a collective under DDP: every rank must ask
        if trainer.is_global_zero:
            metrics = leakage_metrics(signals, kl_bins=self.kl_bins)
            if log_dir and not trainer.fast_dev_run:
                path = save_signals(epoch_path(log_dir, trainer.current_epoch), signals)
                rank_zero_info(f"signals: {Path(path)}")
        metrics = trainer.strategy.broadcast(metrics, src=0)
        self.last_metrics = metrics
        for name, value in metrics.items():
            if value is not None and not (isinstance(value, float) and math.isnan(value)):
                pl_module.log(name, float(value), on_step=False, on_epoch=True, sync_dist=False)

    def on_fit_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """Draw ``<run>/leakage.png`` from the run's epoch signal files (rank 0)."""
        log_dir = trainer.log_dir
        if not self.enabled or trainer.fast_dev_run or not log_dir or not trainer.is_global_zero:
            return
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # few signal rows: low-FPR figures are coarse
            path = leakage_figure(Path(log_dir))
        if path is not None:
            rank_zero_info(f"leakage curves: {path}")


def leakage_figure(run: Path) -> Path | None:
    """``<run>/leakage.png``: the leakage metrics of every ``signals/epoch=NNN.npz`` of the run
    (recomputed from the files, so a resumed run's figure covers all its epochs)."""
    epochs = list_epochs(run)
    if not epochs:
        return None
    rows = [leakage_metrics(load_signals(epoch_path(run, e))) for e in epochs]
    return plot_leakage(epochs, rows, run / "leakage.png", f"overfitting vs leakage: {run}")


def sample_rows(rows: list[dict], max_rows: int | None, seed: int = 0) -> list[dict]:
    """At most ``max_rows`` of ``rows``, stratified by ``(split, set, role)`` (each stratum keeps
    its share, at least one row), seeded, in manifest order; all rows when ``max_rows`` is None or
    not smaller than ``len(rows)``."""
    if max_rows is None or len(rows) <= max_rows:
        return rows
    strata: dict[tuple, list[int]] = {}
    for i, r in enumerate(rows):
        strata.setdefault((r.get("split"), r.get("set"), r.get("role")), []).append(i)
    rng = np.random.default_rng(seed)
    keep: list[int] = []
    for key in sorted(strata, key=str):
        idx = strata[key]
        n = max(1, round(max_rows * len(idx) / len(rows)))
        keep.extend(rng.choice(idx, size=min(n, len(idx)), replace=False).tolist())
    return [rows[i] for i in sorted(keep)]


class PredictionSignals(pl.Callback):
    """At the end of ``fit``, write ``<run>/signals/predictions.npz`` for a detection datamodule
    (:class:`DetectionDataModule`): the detector's boxes and scores on its in and out sets, which the
    detector audit attacks. Under ``fast_dev_run`` the path runs on one batch and writes nothing.
    """

    def on_fit_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        dm = trainer.datamodule
        if not isinstance(dm, DetectionDataModule):
            return
        if trainer.fast_dev_run:
            write_prediction_signals(None, pl_module, dm, max_batches=1)
            return
        if trainer.is_global_zero and trainer.logger is not None and trainer.log_dir:
            _, path = write_prediction_signals(trainer.log_dir, pl_module, dm)
            rank_zero_info(f"prediction signals: {path}")
