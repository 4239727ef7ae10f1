"""Leakage-monitor overhead: epoch time of the demo fit with the ``LeakageMonitor`` against
without it.

    python benchmarks/monitor_overhead.py [--epochs 5] [--rounds 2] [--threads 2] [--device cpu]
        [--full]

The demo fit of :mod:`fit_throughput` (``configs/demo.yaml``: resnet18, 48 px, batch 32, on the
generated synthetic whales; ``--full``: resnet50 at 224 px), validation, logger, checkpointing and
progress bar off, run three times with the same seed:

* without the monitor;
* with ``LeakageMonitor(every_n_epochs=1)`` (``configs/demo.yaml``): every epoch scores every
  manifest row (members and non-members), computes the leakage metrics and writes
  ``signals/epoch=NNN.npz`` (into a temporary run folder);
* with ``LeakageMonitor(every_n_epochs=5)``, the paper configs' setting (``configs/*_resnet50_*``).

``--rounds`` rounds of the three, in alternating order (A B C, C B A), so that load drifting
during the benchmark hurts no setting more.

The monitor is built as the CLI's forced ``leakage:`` callback builds it (``LeakageMonitor`` with
the config's ``init_args``) and sits before the epoch timer, so its epoch-end work is inside the
timed epoch. Each fit: one warm-up epoch, then ``--epochs`` timed epochs (a multiple of 5, so the
``every_n_epochs=5`` run pays for exactly one monitor pass per 5 epochs; the fit is stopped there,
so no "last epoch" pass is counted; half as many with ``every_n_epochs=1``). Overhead = (mean
epoch with - mean epoch without) / mean epoch without, i.e. amortised per epoch. The JSON's
``value`` is the paper configs' setting (every 5 epochs); the demo's every-epoch overhead is in
``details``, with a cross-check from inside each run (two marks around the monitor time its own
epoch-end work). Goal: <= 0.15. Writes
``benchmarks/results/leakage_monitor_overhead.json``.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import pytorch_lightning as pl
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # run as a script: the repository root is importable

from benchmarks.common import add_common_args, apply_threads, sync, write_result  # noqa: E402
from benchmarks.fit_throughput import (  # noqa: E402
    demo_settings,
    make_datamodule,
    make_model,
    quiet_lightning,
    timed_fit,
)
from experiments.monitor import LeakageMonitor  # noqa: E402

#: a paper config: its ``leakage.every_n_epochs`` is the "real" monitor frequency
REAL_CONFIG = ROOT / "configs" / "humpback_resnet50_overfit.yaml"


def real_every(path: Path = REAL_CONFIG) -> int:
    """``leakage.every_n_epochs`` of the paper configs (5 when unreadable)."""
    try:
        return int(yaml.safe_load(path.read_text())["leakage"]["every_n_epochs"])
    except (OSError, KeyError, TypeError, ValueError):
        return 5


REAL_EVERY = real_every()


class Mark(pl.Callback):
    """Records the time of each ``on_train_epoch_end`` call (placed before and after the
    monitor, two marks time the monitor's own epoch-end work)."""

    def __init__(self):
        self.times: list[float] = []

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        sync(pl_module.device)
        self.times.append(time.perf_counter())


def run(data_args, model_args, data_dir, epochs, device, every: int | None, max_rows=None):
    """``(epoch times, monitor times)`` of the timed epochs of one demo fit; ``every=None``:
    without the monitor (monitor times all 0)."""
    pl.seed_everything(0, verbose=False)
    dm = make_datamodule(data_args, data_dir)
    model = make_model(model_args, dm.num_classes)
    before, after = Mark(), Mark()
    monitor = [] if every is None else [LeakageMonitor(every_n_epochs=every, max_rows=max_rows)]
    callbacks = [before, *monitor]
    with tempfile.TemporaryDirectory(prefix="monitor_overhead_") as tmp:
        times = timed_fit(dm, model, epochs, device, tmp, [*callbacks, after])
        if every is not None:
            n_files = len(list(Path(tmp).glob("signals/epoch=*.npz")))
            expected = sum(1 for e in range(1 + epochs) if (e + 1) % every == 0)
            if n_files != expected:
                raise RuntimeError(f"monitor wrote {n_files} signal files, expected {expected}")
    monitor = [b - a for a, b in zip(before.times, after.times)][1:]
    return times, monitor


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument(
        "--epochs",
        type=int,
        default=5,
        help=f"timed epochs per run without the monitor and with every_n_epochs={REAL_EVERY} "
        f"(rounded up to a multiple of {REAL_EVERY}); with every_n_epochs=1: half as many",
    )
    ap.add_argument(
        "--rounds",
        type=int,
        default=2,
        help="rounds of the three runs, in alternating order (A B C, C B A, ...)",
    )
    ap.add_argument("--data-dir", default=str(ROOT / "data_cache"), help="synthetic catalog cache")
    ap.add_argument(
        "--max-rows",
        type=int,
        default=None,
        help="LeakageMonitor(max_rows=...): score a stratified sample of the probe rows",
    )
    add_common_args(ap)
    a = ap.parse_args(argv)
    epochs = -(-max(1, a.epochs) // REAL_EVERY) * REAL_EVERY
    epochs1 = max(1, epochs // 2)
    every_real = f"every_{REAL_EVERY}"
    threads = apply_threads(a.threads)
    quiet_lightning()
    data_args, model_args = demo_settings(a.full)
    dm = make_datamodule(data_args, a.data_dir)
    n_train, n_probe = len(dm.rows("train")), len(dm.signal_rows())

    def mean(xs):
        return sum(xs) / len(xs)

    settings = (
        ("without", None, epochs),
        ("every_1", 1, epochs1),
        (every_real, REAL_EVERY, epochs),
    )
    runs: dict[str, list[float]] = {k: [] for k, _, _ in settings}
    mon: dict[str, list[float]] = {k: [] for k, _, _ in settings}
    for r in range(max(1, a.rounds)):
        # alternating order: load that drifts during the run hurts no setting more
        for key, every, n_ep in settings if r % 2 == 0 else settings[::-1]:
            t, m = run(data_args, model_args, a.data_dir, n_ep, a.device, every, a.max_rows)
            runs[key] += t
            mon[key] += m
            print(
                f"round {r + 1} {key:9s}: mean epoch {mean(t):.3f} s, of which monitor "
                f"{mean(m):.3f} s  ({', '.join(f'{x:.2f}' for x in t)})"
            )
    base = mean(runs["without"])
    over = {k: (mean(v) - base) / base for k, v in runs.items() if k != "without"}
    # the same figures from inside each run: the monitor's own epoch-end time over the rest of
    # the epoch (robust to load drift between the runs)
    inside = {k: sum(mon[k]) / (sum(runs[k]) - sum(mon[k])) for k in runs if k != "without"}
    value = over[every_real]
    print(
        f"{model_args['arch']} {data_args['loader']['image_size']} px: {n_train} training photos, "
        f"{n_probe} probe rows per monitor pass; epoch without monitor {base:.3f} s"
    )
    print(
        f"overhead per epoch: every_n_epochs=1 (demo) {over['every_1']:+.1%}, every_n_epochs="
        f"{REAL_EVERY} (paper configs) {value:+.1%}; goal <= 15%  (monitor time / rest of the "
        f"epoch inside the runs: {inside['every_1']:.1%}, {inside[every_real]:.1%})"
    )
    details = {
        "value_is": f"amortised per-epoch overhead at every_n_epochs={REAL_EVERY} (paper configs)",
        "overhead_every_1": over["every_1"],
        f"overhead_{every_real}": value,
        "overhead_inside_runs": inside,
        "monitor_pass_s": mean(mon["every_1"]),
        "epoch_s_without": base,
        "epoch_s": runs,
        "monitor_s": mon,
        "arch": model_args["arch"],
        "image_size": data_args["loader"]["image_size"],
        "batch_size": dm.batch_size,
        "eval_batch_size": dm.eval_batch_size,
        "train_samples": n_train,
        "probe_rows": n_probe,
        "max_rows": a.max_rows,
        "epochs_timed_per_round": {k: n for k, _, n in settings},
        "rounds": max(1, a.rounds),
        "full": a.full,
    }
    result = write_result(
        "leakage_monitor_overhead",
        value,
        f"fraction (epoch time with LeakageMonitor(every_n_epochs={REAL_EVERY}) / without - 1)",
        "<= 0.15",
        details,
        argv,
        a.out,
        threads=threads,
        device=a.device,
    )
    return result


if __name__ == "__main__":
    main()
