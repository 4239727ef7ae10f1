"""Fit-time signal writers: the leakage monitor (per-epoch classifier signals on members and
non-members, and the curves from them) and the detector's prediction signals at the end of fit."""

from __future__ import annotations

import json
import math
import warnings
from pathlib import Path

import numpy as np
import pytorch_lightning as pl
from pytorch_lightning.loggers import TensorBoardLogger
from pytorch_lightning.utilities import rank_zero_info

from attacks.epoch_leakage import best_audit_attack, cheap_attacks, leakage_metrics
from attacks.label_only import query_rows
from attacks.report import LeakageChart, plot_leakage
from attacks.signals import epoch_path, list_epochs, load_signals, save_signals
from datamodules.detection.datamodule import DetectionDataModule
from datamodules.whale import WhaleDataModule
from experiments.run.outputs import write_json
from experiments.settings.attack import LabelOnlySettings
from experiments.side_models.boundary_queries import boundary_distances
from lightning_modules.detector import write_prediction_signals
from lightning_modules.extraction import extract_rows


class LeakageMonitor(pl.Callback):
    """Every ``every_n_epochs`` training epochs, score the signal rows and log leakage curves:
    the overfitting-vs-leakage report of every cheap attack (TF Privacy's per-epoch report).

    Each monitored epoch writes ``<run>/signals/epoch=NNN.npz`` (rank 0 only, each sample once;
    see :mod:`attacks.signals`) and ``epoch=NNN.json`` (its metrics), and logs the metrics of
    :func:`attacks.epoch_leakage.leakage_metrics` (``leak/train_acc``, ``leak/test_acc``, ``leak/gap``,
    ``leak/kl`` and ``leak/kl_null``, ``leak/<attack>_auc``, ``leak/<attack>_tpr@1%fpr``, ...;
    ``leak/eps_lb`` for DP runs). TensorBoard gets a custom-scalars layout ("overfitting vs
    leakage": accuracies and gap, KL against its null, every attack's AUC, TPR at 1% FPR and
    advantage) and the combined figure as an image per monitored epoch; ``<run>/leakage.png``
    is drawn at the end of fit. Everything is logged against the global step: the scalars
    through ``pl_module.log`` at the epoch's end, the image and the text at :func:`log_step`,
    the step Lightning gives those scalars, so an epoch's image sits at its scalars' x.

    One forward pass per scored row gives logits and (for ``nn_cosine``) the embedding; every
    cheap attack reads those arrays. Needs the whale datamodule (its ``signal_rows()`` and
    ``signal_loader(rows)``); with another datamodule it does nothing.

    Args:
        every_n_epochs: run after every n-th epoch (and after the last one).
        topk: keep only the top-k logits per sample (losses still use the full vector);
            ``None`` keeps all logits.
        save_embeddings: also save penultimate embeddings in the signal files (large for big
            backbones; ``nn_cosine`` uses them in memory either way).
        kl_bins: histogram bins for the KL divergence.
        enabled: switch the monitor off without editing the callback list.
        max_rows: score at most this many signal rows per pass: a seeded sample, stratified by
            ``(split, set, role)`` and the same every epoch, so the curves stay comparable
            (``None``: every row). A pass costs about one forward per scored row, i.e. roughly
            a third of a training step; with the paper's split there are ~5 signal rows per
            training photo, so an uncapped pass costs ~1.7 training epochs. Capping bounds the
            overhead on large catalogs (the paper configs use 4,096); the final extraction
            (``cli.py attack``) scores every row.
        rows_per_train_photo: a per-pass row budget tied to the training set:
            ``ceil(rows_per_train_photo x training photos x every_n_epochs)`` rows (then capped
            by ``max_rows``), sampled as for ``max_rows``. A scored row costs about a third of a
            training photo's step, so the amortised overhead is about ``rows_per_train_photo / 3``
            of epoch time (0.4: ~13%) plus the fixed cost of a pass; ``None``: no budget.
        seed: seed of the ``max_rows`` sample.
        attacks: the cheap attacks scored each pass (stems of
            :func:`attacks.epoch_leakage.cheap_attacks`); ``None``: all of them.
        label_only: opt-in label-only attack each pass under a small query budget (e.g.
            ``{max_per_role: 10, max_queries: 300, max_iter: 5}``); ``None``: off.
        tb_figure: add the combined figure to TensorBoard as an image every monitored epoch.
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
        attacks: list[str] | None = None,
        label_only: LabelOnlySettings | None = None,
        tb_figure: bool = True,
        rows_per_train_photo: float | None = None,
    ):
        self.every_n_epochs = max(1, every_n_epochs)
        self.topk = topk
        self.save_embeddings = save_embeddings
        self.kl_bins = kl_bins
        self.enabled = enabled
        if max_rows is not None and max_rows < 1:
            raise ValueError("leakage.max_rows must be >= 1 (or null for every row).")
        self.max_rows = max_rows
        if rows_per_train_photo is not None and not rows_per_train_photo > 0:
            raise ValueError("leakage.rows_per_train_photo must be > 0 (or null for no budget).")
        self.rows_per_train_photo = rows_per_train_photo
        self.seed = seed
        cheap = cheap_attacks()  # every attack registered with cheap=<level>
        unknown = sorted(set(attacks or ()) - set(cheap))
        if unknown:
            raise ValueError(f"leakage.attacks: unknown {unknown}; choose from {list(cheap)}")
        self.attacks = tuple(cheap if attacks is None else attacks)
        if label_only is not None and "label_only" not in self.attacks:
            self.attacks = (*self.attacks, "label_only")
        self.label_only = label_only
        self.tb_figure = tb_figure
        self.last_metrics: dict[str, float] = {}
        self.history: list[tuple[int, dict]] = []
        self._chart: LeakageChart | None = None

    def _due(self, trainer: pl.Trainer) -> bool:
        epoch = trainer.current_epoch
        last = trainer.max_epochs is not None and epoch + 1 >= trainer.max_epochs
        return (epoch + 1) % self.every_n_epochs == 0 or last or bool(trainer.fast_dev_run)

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """The "overfitting vs leakage" custom-scalars layout in every TensorBoard logger."""
        self._chart = None  # the chart's epoch range is this fit's
        if self.enabled and trainer.is_global_zero and not trainer.fast_dev_run:
            for writer in _tb_writers(trainer):
                writer.add_custom_scalars(custom_scalars_layout(self.attacks))

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        dm = trainer.datamodule
        if (
            not self.enabled
            or dm is None
            or not isinstance(dm, WhaleDataModule)
            or not self._due(trainer)
        ):
            return
        signals = self._extract(trainer, pl_module, dm)
        metrics = None
        log_dir = trainer.log_dir  # a collective under DDP: every rank must ask
        if trainer.is_global_zero:
            metrics = leakage_metrics(
                signals,
                kl_bins=self.kl_bins,
                seed=self.seed,
                attacks=self.attacks,
                delta=_dp_delta(pl_module),
            )
            if log_dir and not trainer.fast_dev_run:
                self._write(trainer, Path(log_dir), signals, metrics)
        metrics = trainer.strategy.broadcast(metrics, src=0)
        self.last_metrics = metrics
        for name, value in metrics.items():
            if value is not None and not (isinstance(value, float) and math.isnan(value)):
                pl_module.log(name, float(value), on_step=False, on_epoch=True, sync_dist=False)

    def _extract(self, trainer, pl_module, dm) -> dict:
        """One forward pass per (sampled) signal row: logits, losses and, when ``nn_cosine`` is
        scored or embeddings are saved, the embedding; plus boundary distances when opted in."""
        budget = pass_budget(
            len(dm.rows("train")), self.every_n_epochs, self.rows_per_train_photo, self.max_rows
        )
        rows = sample_rows(dm.signal_rows(), budget, self.seed)
        want_embed = self.save_embeddings or "nn_cosine" in self.attacks
        embed = getattr(pl_module, "embed", None) if want_embed else None
        # each rank scores rows[rank::world]; every rank gets all rows back, in manifest order
        # the trainer's precision (e.g. bf16 autocast on GPUs), as in its own eval loops
        with trainer.precision_plugin.forward_context():
            signals = extract_rows(
                pl_module,
                rows,
                dm.signal_loader,
                pl_module.device,
                topk=self.topk,
                embed=embed,
                max_batches=1 if trainer.fast_dev_run else None,
            )
            if self.label_only is not None and trainer.is_global_zero:
                signals = monitor_label_only(pl_module, dm, rows, signals, self.label_only)
        return signals

    def _write(self, trainer, log_dir: Path, signals: dict, metrics: dict) -> None:
        """The epoch's signal file (embeddings only when asked), its metrics JSON and the
        TensorBoard image of the curves so far."""
        epoch = trainer.current_epoch
        kept = (
            signals
            if self.save_embeddings
            else {k: v for k, v in signals.items() if k != "embedding"}
        )
        path = save_signals(epoch_path(log_dir, epoch), kept)
        write_json(metrics_path(log_dir, epoch), metrics)
        rank_zero_info(f"signals: {Path(path)}")
        self.history = [h for h in self.history if h[0] != epoch] + [(epoch, metrics)]
        step = log_step(trainer)  # the x of this epoch's leak/* scalars
        if "leak/eps_lb" in metrics:
            for writer in _tb_writers(trainer):
                writer.add_text("leak/eps_lb_attack", eps_text(metrics), step)
        writers = _tb_writers(trainer) if self.tb_figure else []
        if writers:
            img = self.chart_image(trainer.max_epochs)
            for writer in writers:
                writer.add_image("leak/overfitting_vs_leakage", img, step, dataformats="HWC")

    def chart_image(self, max_epochs: int | None = None) -> np.ndarray:
        """The combined chart of the epochs monitored so far, (H, W, 3) uint8: one
        :class:`LeakageChart` per fit, which redraws only the curves each epoch."""
        if self._chart is None:
            x_max = max_epochs - 1 if max_epochs is not None and max_epochs > 0 else None
            self._chart = LeakageChart("overfitting vs leakage", x_max=x_max)
        epochs, rows = zip(*sorted(self.history, key=lambda h: h[0]))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return self._chart.image(list(epochs), list(rows))

    def on_fit_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """Draw ``<run>/leakage.png`` from the run's epoch files (rank 0)."""
        log_dir = trainer.log_dir
        if not self.enabled or trainer.fast_dev_run or not log_dir or not trainer.is_global_zero:
            return
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # few signal rows: low-FPR figures are coarse
            path = leakage_figure(Path(log_dir))
        if path is not None:
            rank_zero_info(f"leakage curves: {path}")


def log_step(trainer: pl.Trainer) -> int:
    """The global step Lightning logs epoch-end metrics at: that of the epoch's last optimizer
    step (its fit loop lowers its stepped-batch count by one while it logs them; the count
    equals ``trainer.global_step`` with one optimizer)."""
    loop = getattr(trainer.fit_loop, "epoch_loop", None)
    stepped = getattr(loop, "_batches_that_stepped", None)
    return (trainer.global_step if stepped is None else int(stepped)) - 1


def _tb_writers(trainer: pl.Trainer) -> list:
    """The ``SummaryWriter`` of every TensorBoard logger of ``trainer``."""
    return [
        lg.experiment
        for lg in trainer.loggers
        if isinstance(lg, TensorBoardLogger) and hasattr(lg.experiment, "add_custom_scalars")
    ]


def _dp_delta(pl_module) -> float | None:
    """The delta of a DP-SGD module's guarantee (None without DP)."""
    cfg = getattr(getattr(pl_module, "dp", None), "cfg", None)
    return None if cfg is None else float(cfg.delta)


def eps_text(metrics: dict) -> str:
    """One line for TensorBoard: the empirical lower bound on epsilon and the attack behind it."""
    stem, eps = best_audit_attack(metrics)
    n = sum(k.startswith("leak/eps_lb_") for k in metrics)
    who = f"best attack `{stem}`" if stem else "no attack proves a bound above 0"
    return f"epsilon >= {eps:.3f} (95%, Bonferroni over {n} sample-level attacks): {who}"


def custom_scalars_layout(attacks: tuple[str, ...]) -> dict:
    """TensorBoard custom-scalars layout of the monitor's tags (``Multiline`` charts)."""
    stems = "|".join(attacks)
    return {
        "overfitting vs leakage": {
            "accuracy and gap": ["Multiline", ["leak/train_acc", "leak/test_acc", "leak/gap"]],
            "KL against its permutation null (nats)": [
                "Multiline",
                ["leak/kl", "leak/kl_null", "leak/kl_photo", "leak/kl_photo_null"],
            ],
            "attack AUC": ["Multiline", [rf"leak/({stems})_auc"]],
            "attack TPR at 1% FPR": ["Multiline", [rf"leak/({stems})_tpr@1%fpr"]],
            "attacker advantage (max TPR - FPR)": ["Multiline", [rf"leak/({stems})_adv"]],
            "accountant's epsilon and the empirical lower bound (DP runs)": [
                "Multiline",
                ["^dp/epsilon$", "^leak/eps_lb"],
            ],
        }
    }


def monitor_label_only(pl_module, dm, rows: list[dict], signals: dict, lo) -> dict:
    """``signals`` plus ``boundary_distance`` (NaN except on the few picked attack- and
    evaluation-set rows, capped by ``lo.max_per_role``) from the batched boundary search."""
    import torch

    sel = query_rows(signals, lo.seed, lo.max_per_role)
    picked = [rows[i] for i in signals["index"][sel]]
    x = torch.cat([b[0] for b in dm.signal_loader(picked)]).to(pl_module.device)
    hsj = lo.search_options()
    dist, _ = boundary_distances(pl_module, x, dm.num_classes, method=lo.method, **hsj)
    out = dict(signals)
    out["boundary_distance"] = np.full(len(signals["index"]), np.nan)
    out["boundary_distance"][sel] = dist["distance"]
    return out


def metrics_path(run: Path, epoch: int) -> Path:
    """``<run>/signals/epoch=NNN.json``: the monitor's metrics of that epoch."""
    return epoch_path(run, epoch).with_suffix(".json")


def leakage_figure(run: Path) -> Path | None:
    """``<run>/leakage.png``: the leakage metrics of every ``signals/epoch=NNN.npz`` of the run,
    read from each epoch's metrics JSON (recomputed from the signal file when it is missing), so
    a resumed run's figure covers all its epochs."""
    epochs = list_epochs(run)
    if not epochs:
        return None
    rows = []
    for e in epochs:
        mp = metrics_path(run, e)
        if mp.is_file():
            rows.append(json.loads(mp.read_text()))
        else:
            rows.append(leakage_metrics(load_signals(epoch_path(run, e))))
    return plot_leakage(epochs, rows, run / "leakage.png", f"overfitting vs leakage: {run}")


def pass_budget(
    n_train: int, every_n_epochs: int, rows_per_train_photo: float | None, max_rows: int | None
) -> int | None:
    """Rows scored per monitor pass: ``ceil(rows_per_train_photo x n_train x every_n_epochs)``
    (at least 1), capped by ``max_rows``; ``None`` (every row) when neither is set."""
    caps = [] if max_rows is None else [max_rows]
    if rows_per_train_photo is not None:
        want = round(rows_per_train_photo * n_train * max(1, every_n_epochs), 9)
        caps.append(max(1, math.ceil(want)))
    return min(caps) if caps else None


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
