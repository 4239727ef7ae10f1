"""A tiny demo run: run-folder contents, resume without duplicated epochs, and 2-process DDP."""

from __future__ import annotations

import glob
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

import cli
from attacks.signals import list_epochs, load_signals
from datamodules.manifest import read_manifest

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


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("demo")
    cli.main(tiny_args(tmp, epochs=2))
    return tmp, tmp / "logs" / "run" / "version_0"


def test_run_folder_holds_everything(demo_run):
    _, run = demo_run
    for name in (
        "config.yaml",
        "environment.json",
        "split_manifest.csv",
        "split_manifest.json",
        "checkpoints/last.ckpt",
        "signals/epoch=000.npz",
        "signals/epoch=001.npz",
    ):
        assert (run / name).is_file(), name
    rows, header = read_manifest(run)
    assert header["seed"] == 0 and len(header["hash"]) == 64
    sig = load_signals(run / "signals" / "epoch=001.npz")
    assert len(sig["index"]) == len(rows)
    assert np.array_equal(sig["index"], np.arange(len(rows)))
    assert list(sig["sample_id"]) == [r["sample_id"] for r in rows]
    assert sig["logits"].shape == (len(rows), header["n_individuals"]["ID1"])
    nonmember = sig["label"] == -1
    assert np.isnan(sig["loss_true"][nonmember]).all() and np.isfinite(sig["loss_pred"]).all()
    for tag in (
        "leak/train_acc",
        "leak/test_acc",
        "leak/gap",
        "leak/kl",
        "attack/acc",
        "attack/auc",
        "attack/tpr@1%fpr",
        "train/loss_epoch",
        "val/acc",
    ):
        assert len(scalars(run, tag)) == 2, tag


def test_resume_continues_without_duplicated_epochs(demo_run):
    tmp, run = demo_run
    before = scalars(run, "leak/gap")
    cli.main(tiny_args(tmp, epochs=4) + ["--ckpt_path", str(run / "checkpoints" / "last.ckpt")])
    assert not (tmp / "logs" / "run" / "version_1").exists()  # same run folder
    assert list_epochs(run) == [0, 1, 2, 3]
    after = scalars(run, "leak/gap")
    steps = [s for s, _ in after]
    assert len(after) == 4 and len(set(steps)) == 4 and after[:2] == before
    epochs = [v for _, v in scalars(run, "epoch")]
    assert sorted(set(epochs)) == [0, 1, 2, 3]
    assert (run / "config.yaml").is_file() and (run / "config_resume_1.yaml").is_file()


@pytest.mark.ddp
@pytest.mark.slow
def test_ddp_two_cpu_processes_write_each_sample_once(tmp_path):
    epochs = 2
    args = tiny_args(tmp_path, epochs=epochs, name="ddp") + [
        "--data.init_args.reader.init_args.photos_per_encounter",
        "3",  # 45 rows: the two ranks' shards differ in size (no sampler padding may duplicate)
        "--trainer.devices",
        "2",
        "--trainer.strategy",
        "ddp",
        "--trainer.num_nodes",
        "1",
    ]
    run_cli(args)
    run = tmp_path / "logs" / "ddp" / "version_0"
    rows, _ = read_manifest(run)
    assert len(rows) % 2 == 1, len(rows)
    assert list_epochs(run) == list(range(epochs))
    for epoch in range(epochs):
        sig = load_signals(run / "signals" / f"epoch={epoch:03d}.npz")
        assert len(sig["sample_id"]) == len(rows) == len(set(sig["sample_id"])), epoch
        assert np.array_equal(sig["index"], np.arange(len(rows))), epoch
        assert list(sig["sample_id"]) == [r["sample_id"] for r in rows], epoch
    # written by rank 0 only, and once: no second run folder, event file or leftover temp file
    assert sorted(p.name for p in (run / "signals").iterdir()) == [
        f"epoch={e:03d}.npz" for e in range(epochs)
    ]
    assert [p.name for p in (tmp_path / "logs" / "ddp").iterdir()] == ["version_0"]
    assert len(glob.glob(str(run / "events.out.tfevents.*"))) == 1  # rank 0 logs only
    for tag in ("leak/gap", "leak/train_acc", "attack/acc", "attack/auc", "attack/tpr@1%fpr"):
        steps = [s for s, _ in scalars(run, tag)]
        assert len(steps) == epochs and len(set(steps)) == epochs, (tag, steps)
