"""Leakage-monitor overhead, measured within one run: epochs with and without the monitor
alternate in the same fit, at demo scale and at 1,000 individuals, every cheap attack enabled.

    python benchmarks/monitor_overhead.py [--scales demo 1000] [--runs 3] [--pairs N]
        [--warmup-batches 4] [--every N] [--max-rows N] [--rows-per-train-photo F]
        [--threads 2] [--device cpu] [--full]

Scales (the demo fit of :mod:`fit_throughput`: ``configs/fit/demo.yaml``'s model, resnet18 at 48 px,
batch 32; ``--full``: resnet50 at 224 px):

* ``demo``: the demo catalog (36 individuals) with the demo's monitor settings
  (``configs/fit/demo.yaml``: every 4 epochs, 0.4 rows per training photo and epoch);
* ``1000``: the synthetic generator at 1,000 individuals, 4 encounters of 2 photos each
  (8,000 photos), with the paper configs' monitor settings (``configs/humpback_resnet50_overfit
  .yaml``: every 5 epochs, 0.4 rows per training photo and epoch, ``max_rows`` 4,096).

The rows scored per pass follow :func:`experiments.callbacks.leakage_monitor.pass_budget`.

Each scale's datamodule is planned, verified and its decoded-image cache filled for every row once,
before the runs (so no timed epoch or pass pays a first decode). Each run is one fit of a fresh
model: a warm-up epoch cut after ``--warmup-batches`` batches (the first steps, the optimizer
state and the loader; not timed), then ``--pairs`` pairs of epochs (default 2 at demo scale, 1 at
1,000 individuals), the first of each pair with a monitor pass, the second without (validation,
logger, checkpointing and progress bar off).
The pass is the CLI's ``LeakageMonitor`` with every cheap attack (Yeom on both losses, maximum
softmax, entropy, nearest-neighbour cosine; label-only is opt-in and off), writing its signal and
metrics files, plus the combined figure it sends to TensorBoard, rendered as the monitor does
(its per-fit chart; the same chart rebuilt from scratch is timed outside the epochs to compare).
Per run: pass overhead ``p = median(epochs with) / median(epochs without) - 1`` (the cost of
one pass in epochs), amortised over the scale's ``every_n_epochs``: ``p / every_n_epochs``. The
result is the median over ``--runs`` runs with its min-max spread. Load that drifts during a run
hits both kinds of epoch alike.

Goal: the amortised overhead <= 0.15 at both scales; the JSON's ``value`` is the larger of the
two medians. Writes ``benchmarks/results/leakage_monitor_overhead.json``.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import pytorch_lightning as pl
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # run as a script: the repository root is importable

from attacks.epoch_leakage import CHEAP_ATTACKS  # noqa: E402
from attacks.report import LeakageChart, leakage_image  # noqa: E402
from benchmarks.common import add_common_args, apply_threads, write_result  # noqa: E402
from benchmarks.fit_throughput import (  # noqa: E402
    demo_settings,
    make_datamodule,
    make_model,
    quiet_lightning,
    timed_fit,
)
from experiments.callbacks.leakage_monitor import LeakageMonitor, pass_budget  # noqa: E402

#: a paper config: its ``leakage`` section is the monitor setting at catalog scale
REAL_CONFIG = ROOT / "configs" / "fit" / "humpback_resnet50_overfit.yaml"
DEMO_CONFIG = ROOT / "configs" / "fit" / "demo.yaml"

#: the 1,000-individual catalog: 4 encounters x 2 photos per individual
BIG = {"n_individuals": 1000, "encounters_per_individual": 4, "photos_per_encounter": 2}


def monitor_settings(path: Path) -> dict:
    """``every_n_epochs``, ``max_rows`` and ``rows_per_train_photo`` of a config's
    ``leakage`` section."""
    section = (yaml.safe_load(path.read_text()) or {}).get("leakage") or {}
    return {
        "every_n_epochs": int(section.get("every_n_epochs", 1)),
        "max_rows": section.get("max_rows"),
        "rows_per_train_photo": section.get("rows_per_train_photo"),
    }


class Alternate(pl.Callback):
    """Runs ``monitor`` after every other epoch (the first timed epoch of each pair), and renders
    the figure the monitor sends to TensorBoard (its :class:`LeakageChart`); records which
    epochs had a pass."""

    def __init__(self, monitor: LeakageMonitor):
        self.monitor = monitor
        self.with_pass: list[bool] = []
        self.pass_s: list[float] = []
        self.figure_s: list[float] = []

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        on = trainer.current_epoch % 2 == 1
        self.with_pass.append(on)
        if not on:
            return
        t0 = time.perf_counter()
        self.monitor.on_train_epoch_end(trainer, pl_module)
        t1 = time.perf_counter()
        if self.monitor.history:
            self.monitor.chart_image()
        self.pass_s.append(time.perf_counter() - t0)
        self.figure_s.append(time.perf_counter() - t1)


class FromScratch(pl.Callback):
    """Outside the timed epochs: the same chart rebuilt from scratch each pass
    (:func:`leakage_image`, the monitor's former way), timed for comparison."""

    def __init__(self, alt: Alternate):
        self.alt = alt
        self.figure_s: list[float] = []

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        if not (self.alt.with_pass and self.alt.with_pass[-1] and self.alt.monitor.history):
            return
        epochs, rows = zip(*sorted(self.alt.monitor.history, key=lambda h: h[0]))
        t0 = time.perf_counter()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            leakage_image(list(epochs), list(rows), "overfitting vs leakage")
        self.figure_s.append(time.perf_counter() - t0)


#: timed (with, without) epoch pairs per fit when ``--pairs`` is not given
PAIRS = {"demo": 2, "1000": 1}


def short_warmup(model: pl.LightningModule, batches: int) -> None:
    """End the model's first epoch (the untimed warm-up) after ``batches`` batches: Lightning
    skips the rest of an epoch when ``on_train_batch_start`` returns -1."""

    def on_train_batch_start(batch, batch_idx: int):
        return -1 if model.current_epoch == 0 and batch_idx >= batches else None

    model.on_train_batch_start = on_train_batch_start


def prepared_datamodule(data_args: dict, data_dir) -> tuple:
    """The scale's datamodule, planned and verified, with the decoded-image cache filled for
    every row; returns ``(datamodule, seconds)``."""
    t0 = time.perf_counter()
    dm = make_datamodule(data_args, data_dir)
    dm.verify()
    ds = dm.dataset(dm.rows())
    for i in range(len(ds)):
        ds.resized(i)
    return dm, time.perf_counter() - t0


def one_run(dm, model_args, pairs: int, device: str, max_rows, warmup_batches: int) -> dict:
    """Epoch times with and without a monitor pass in one fit, and the pass overhead."""
    pl.seed_everything(0, verbose=False)
    model = make_model(model_args, dm.num_classes)
    if warmup_batches > 0:
        short_warmup(model, warmup_batches)
    alt = Alternate(LeakageMonitor(every_n_epochs=1, max_rows=max_rows))
    scratch = FromScratch(alt)
    with tempfile.TemporaryDirectory(prefix="monitor_overhead_") as tmp:
        times = timed_fit(dm, model, 2 * pairs, device, tmp, [alt], after=[scratch])
        n_files = len(list(Path(tmp).glob("signals/epoch=*.npz")))
    flags = alt.with_pass[1:]  # the warm-up epoch is not timed
    with_m = [t for t, f in zip(times, flags) if f]
    without = [t for t, f in zip(times, flags) if not f]
    if n_files != len(with_m) + (1 if alt.with_pass[0] else 0):
        raise RuntimeError(f"monitor wrote {n_files} signal files for {len(with_m)} passes")
    p = statistics.median(with_m) / statistics.median(without) - 1
    return {
        "with": with_m,
        "without": without,
        "pass_overhead": p,
        "pass_s": alt.pass_s,
        "figure_s": alt.figure_s,
        "figure_from_scratch_s": scratch.figure_s,
    }


def scale_settings(scale: str, full: bool) -> tuple[dict, dict, dict]:
    """``(data args, model args, monitor settings)`` of a scale (``demo`` or ``1000``)."""
    data_args, model_args = demo_settings(full)
    if scale == "demo":
        return data_args, model_args, monitor_settings(DEMO_CONFIG)
    data_args["reader"].update(BIG)
    return data_args, model_args, monitor_settings(REAL_CONFIG)


def measure_scale(scale: str, a: argparse.Namespace) -> dict:
    """Every run of one scale, printed, and its summary (median and spread)."""
    data_args, model_args, mon = scale_settings(scale, a.full)
    if a.every is not None:
        mon["every_n_epochs"] = a.every
    if a.max_rows is not None:
        mon["max_rows"] = a.max_rows or None
    if a.rows_per_train_photo is not None:
        mon["rows_per_train_photo"] = a.rows_per_train_photo or None
    pairs = a.pairs or PAIRS[scale]
    dm, ready_s = prepared_datamodule(data_args, a.data_dir)
    n_train, n_probe = len(dm.rows("train")), len(dm.signal_rows())
    budget = pass_budget(
        n_train, mon["every_n_epochs"], mon["rows_per_train_photo"], mon["max_rows"]
    )
    scored = n_probe if budget is None else min(n_probe, budget)
    print(
        f"[{scale}] catalog ready and cached in {ready_s:.1f} s: {n_train} training "
        f"photos, {n_probe} signal rows, {scored} scored per pass, every "
        f"{mon['every_n_epochs']} epoch(s)"
    )
    runs = []
    for r in range(max(1, a.runs)):
        res = one_run(dm, model_args, pairs, a.device, budget, a.warmup_batches)
        res["amortised"] = res["pass_overhead"] / mon["every_n_epochs"]
        runs.append(res)
        print(
            f"[{scale}] run {r + 1}: epochs with pass {_fmt(res['with'])}, without "
            f"{_fmt(res['without'])}: pass {res['pass_overhead']:+.1%} of an epoch, "
            f"amortised {res['amortised']:+.1%}; inside: pass {_fmt(res['pass_s'])}, of which "
            f"the TensorBoard figure {_fmt(res['figure_s'])} (rebuilt from scratch: "
            f"{_fmt(res['figure_from_scratch_s'])})"
        )
    amort = [r["amortised"] for r in runs]
    passes = [r["pass_overhead"] for r in runs]
    out = {
        "overhead_median": statistics.median(amort),
        "overhead_min": min(amort),
        "overhead_max": max(amort),
        "pass_overhead_median": statistics.median(passes),
        "pass_overhead_min": min(passes),
        "pass_overhead_max": max(passes),
        "epoch_s_without_median": statistics.median(t for r in runs for t in r["without"]),
        "train_photos": n_train,
        "signal_rows": n_probe,
        "rows_scored_per_pass": scored,
        "pairs": pairs,
        "setup_s": ready_s,
        **mon,
        "runs": runs,
    }
    print(
        f"[{scale}] amortised overhead median {out['overhead_median']:+.1%} (runs "
        f"{out['overhead_min']:+.1%} .. {out['overhead_max']:+.1%}); goal <= 15%: ratio to "
        f"goal {out['overhead_median'] / 0.15:.2f}"
    )
    return out


def chart_timing(epochs: int = 20) -> dict:
    """Render time of the TensorBoard chart over a ``epochs``-epoch fit monitored every epoch
    (synthetic metrics with every cheap attack): rebuilt from scratch each pass
    (:func:`leakage_image`) against the monitor's per-fit :class:`LeakageChart`, interleaved in
    one process (medians over the passes, s)."""
    rng = np.random.default_rng(0)
    chart, rows, scratch, kept = LeakageChart("overfitting vs leakage", epochs - 1), [], [], []
    for e in range(epochs):
        row = {
            "leak/train_acc": min(1.0, 0.1 + 0.05 * e),
            "leak/test_acc": 0.1,
            "leak/gap": 0.05 * e,
        }
        row |= {"leak/kl": 0.02 * e, "leak/kl_null": 0.02}
        for stem in CHEAP_ATTACKS:
            row |= {
                f"leak/{stem}_auc": rng.uniform(0.5, 0.9),
                f"leak/{stem}_tpr@1%fpr": rng.uniform(0, 0.1),
            }
        rows.append(row)
        t0 = time.perf_counter()
        leakage_image(list(range(e + 1)), rows, "overfitting vs leakage")
        t1 = time.perf_counter()
        chart.image(list(range(e + 1)), rows)
        scratch.append(t1 - t0)
        kept.append(time.perf_counter() - t1)
    out = {"epochs": epochs, "from_scratch_median_s": statistics.median(scratch)}
    out["per_fit_chart_median_s"] = statistics.median(kept)
    print(
        f"TensorBoard chart over {epochs} monitored epochs: rebuilt each pass "
        f"{out['from_scratch_median_s']:.3f} s, per-fit chart {out['per_fit_chart_median_s']:.3f} s "
        f"(medians)"
    )
    return out


def _fmt(xs: list[float]) -> str:
    return "[" + ", ".join(f"{x:.2f}" for x in xs) + "] s"


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--scales", nargs="+", default=["demo", "1000"], choices=["demo", "1000"])
    ap.add_argument("--runs", type=int, default=3, help="fits per scale (median and spread)")
    ap.add_argument(
        "--pairs",
        type=int,
        default=None,
        help="timed (with, without) epoch pairs per fit (default: 2 at demo scale, 1 at 1,000)",
    )
    ap.add_argument(
        "--warmup-batches",
        type=int,
        default=4,
        help="batches of the untimed warm-up epoch of each fit (0: a whole epoch)",
    )
    ap.add_argument(
        "--every", type=int, default=None, help="every_n_epochs to amortise over (all scales)"
    )
    ap.add_argument(
        "--max-rows", type=int, default=None, help="LeakageMonitor max_rows (all scales; 0: all)"
    )
    ap.add_argument(
        "--rows-per-train-photo",
        type=float,
        default=None,
        help="LeakageMonitor rows_per_train_photo (all scales; 0: no budget)",
    )
    ap.add_argument("--data-dir", default=str(ROOT / "data_cache"), help="synthetic catalog cache")
    add_common_args(ap)
    a = ap.parse_args(argv)
    threads = apply_threads(a.threads)
    quiet_lightning()
    chart = chart_timing()
    scales = {s: measure_scale(s, a) for s in a.scales}
    value = max(v["overhead_median"] for v in scales.values())
    details = {
        "value_is": "largest over the scales of the median amortised per-epoch overhead",
        "scales": scales,
        "arch": demo_settings(a.full)[1]["arch"],
        "image_size": demo_settings(a.full)[0]["loader"]["image_size"],
        "runs": a.runs,
        "pairs": {s: v["pairs"] for s, v in scales.items()},
        "warmup_batches": a.warmup_batches,
        "full": a.full,
        "attacks": "every cheap attack (label-only off)",
        "chart_render": chart,
    }
    print(
        "ratio vs goal (<= 0.15): "
        + ", ".join(
            f"{s} {v['overhead_median']:.3f} ({v['overhead_median'] / 0.15:.2f}x goal)"
            for s, v in scales.items()
        )
    )
    return write_result(
        "leakage_monitor_overhead",
        value,
        "fraction of epoch time (monitor pass cost / epoch, amortised over every_n_epochs)",
        "<= 0.15",
        details,
        argv,
        a.out,
        threads=threads,
        device=a.device,
    )


if __name__ == "__main__":
    main()
