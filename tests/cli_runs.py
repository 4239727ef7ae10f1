"""A tiny fit's command line, child ``cli.py`` runs (DDP-ready) and the run folder's TensorBoard
scalars read back."""

from __future__ import annotations

import glob
import os
import subprocess
import sys
from pathlib import Path

from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

REPO = Path(__file__).resolve().parents[1]


def tiny_args(tmp: Path, epochs: int, name: str = "run") -> list[str]:
    return [
        "fit",
        "--config",
        "demo.yaml",
        "--trainer.max_epochs",
        str(epochs),
        "--trainer.accelerator",
        "cpu",
        "--trainer.enable_progress_bar",
        "false",
        "--trainer.logger.init_args.save_dir",
        str(tmp / "logs"),
        "--trainer.logger.init_args.name",
        name,
        "--data.init_args.root",
        str(tmp / "catalog"),
        "--data.init_args.reader.init_args.n_individuals",
        "9",
        "--data.init_args.reader.init_args.encounters_per_individual",
        "3",
        "--data.init_args.reader.init_args.photos_per_encounter",
        "2",
        "--data.init_args.reader.init_args.image_size",
        "32",
        "--data.init_args.loader.image_size",
        "32",
        "--data.init_args.loader.batch_size",
        "8",
        "--data.init_args.loader.num_workers",
        "0",
        "--model.init_args.arch",
        "resnet18",
        "--attack_after_fit",
        "null",  # the attacks have tests of their own
        # the monitor every epoch on every row (the demo's per-pass row budget is for speed)
        "--leakage.every_n_epochs",
        "1",
        "--leakage.rows_per_train_photo",
        "null",
    ]


def ddp_env() -> dict:
    """Environment for a 2-process CPU DDP child: one thread each and a free rendezvous port
    (a fixed port can still be held by the previous DDP test's exiting processes)."""
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return {
        **os.environ,
        "OMP_NUM_THREADS": "1",
        "PYTHONUNBUFFERED": "1",
        "MASTER_ADDR": "127.0.0.1",
        "MASTER_PORT": str(port),
    }


def run_cli(args: list[str]) -> None:
    """``python cli.py ARGS`` in a child process (as a user runs it, so Lightning's DDP launcher
    can re-run it per rank); fails the test with the child's stderr tail."""
    proc = subprocess.run(
        [sys.executable, "cli.py", *args],
        cwd=REPO,
        env=ddp_env(),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]


def scalars(run: Path, tag: str) -> list[tuple[int, float]]:
    """(step, value) pairs of ``tag`` over every event file in ``run``, sorted by step."""
    out = []
    for ev in sorted(glob.glob(str(run / "events.out.tfevents.*"))):
        acc = EventAccumulator(ev)
        acc.Reload()
        if tag in acc.Tags()["scalars"]:
            out += [(e.step, e.value) for e in acc.Scalars(tag)]
    return sorted(out)


def reid_fit_args(pop: Path, out: Path, *extra: str) -> list[str]:
    """A one-epoch embedding fit of ``beluga_reid_cpu.yaml`` on a tiny catalog (64 x 32 views,
    3 reference whales), its runs and caches under ``out``."""
    return [
        "fit", "--config", "beluga_reid_cpu.yaml", "--data.root", str(pop),
        "--data.init_args.views.height", "64", "--data.init_args.views.width", "32",
        "--data.init_args.holdout_individuals", "3", "--data.init_args.batch_size", "8",
        "--data.init_args.cache_dir", str(out / "cache"), "--trainer.max_epochs", "1",
        "--trainer.default_root_dir", str(out / "runs"),
        "--trainer.enable_progress_bar", "false", *extra,
    ]  # fmt: skip


def accumulators(run: Path) -> list[EventAccumulator]:
    """One loaded accumulator per event file in ``run`` (every image, tensor and scalar kept)."""
    out = []
    for ev in sorted(glob.glob(str(run / "events.out.tfevents.*"))):
        acc = EventAccumulator(ev, size_guidance={"images": 0, "tensors": 0, "scalars": 0})
        acc.Reload()
        out.append(acc)
    return out
