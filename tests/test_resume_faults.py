"""Fault injection: a fit killed (SIGKILL) or interrupted (SIGINT) in the middle of an epoch and
resumed from ``<run>/checkpoints/last.ckpt`` ends exactly where an uninterrupted fit ends.

Every fit is a real ``python cli.py fit`` process. To keep the five fits cheap, the network is the
smallest torchvision classifier with a linear head (``shufflenet_v2_x0_5``: a 10x smaller
checkpoint than resnet18), the leakage figure is not drawn, and the one uninterrupted reference
fit (shared by both cases) runs while the first case's fit is killed and resumed."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from attacks.signals import load_signals

REPO = Path(__file__).resolve().parents[1]
#: 3 training batches per epoch; checkpoints every 2 steps and at each epoch's end
EXTRA = [
    "--data.init_args.loader.batch_size",
    "2",
    "--model.init_args.arch",
    "shufflenet_v2_x0_5",
    "--leakage.tb_figure",
    "false",
    "--checkpoint.every_n_train_steps",
    "2",
    "--trainer.log_every_n_steps",
    "1",
]
TAGS = ("train/loss_step", "train/loss_epoch", "leak/gap", "val/acc", "epoch")


def fit(tiny_args, tmp: Path, *extra: str) -> subprocess.Popen:
    """Start ``cli.py fit`` on the tiny catalog in ``tmp``; its stderr goes to a file in ``tmp``
    (``proc.log``), so a process nobody reads from never blocks on a full pipe."""
    args = [*tiny_args(tmp, epochs=2), *EXTRA, *extra]
    log = tmp / f"stderr-{len(list(tmp.glob('stderr-*')))}.txt"
    with log.open("w") as err:
        proc = subprocess.Popen(
            [sys.executable, "cli.py", *args],
            cwd=REPO,
            stdout=subprocess.DEVNULL,
            stderr=err,
            env={"OMP_NUM_THREADS": "1", **os.environ},
        )
    proc.log = log
    return proc


def tail(proc: subprocess.Popen) -> str:
    return proc.log.read_text()[-3000:]


def finish(proc: subprocess.Popen) -> None:
    proc.wait(timeout=600)
    assert proc.returncode == 0, tail(proc)


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


class Reference:
    """The uninterrupted fit, started at once and waited for on first use."""

    def __init__(self, proc: subprocess.Popen, run: Path):
        self.proc, self._run = proc, run

    @property
    def run(self) -> Path:
        if self.proc.returncode is None:
            finish(self.proc)
        return self._run


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory, tiny_args):
    tmp = tmp_path_factory.mktemp("ref")
    ref = Reference(fit(tiny_args, tmp), tmp / "logs" / "run" / "version_0")
    yield ref
    if ref.proc.poll() is None:
        ref.proc.kill()
        ref.proc.wait()


def interrupted(tmp: Path, tiny_args, sig: int, pause: int) -> tuple[Path, dict[str, str]]:
    """Fit until the start of the batch that makes ``global_step == pause`` (4 or 5; the last
    checkpoint is the step-4 one, 1 batch into epoch 1), deliver ``sig``, and return the run
    folder and the hashes of what the first part wrote."""
    flag = tmp / "paused"
    hook = {
        "class_path": "tests.fault_hooks.PauseAtStep",
        "init_args": {"step": pause, "flag": str(flag)},
    }
    proc = fit(tiny_args, tmp, f"--trainer.callbacks+={json.dumps(hook)}")
    deadline = time.monotonic() + 600
    while not flag.exists():
        assert proc.poll() is None, tail(proc)
        assert time.monotonic() < deadline
        time.sleep(0.1)
    proc.send_signal(sig)
    try:
        proc.wait(timeout=120)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
    run = tmp / "logs" / "run" / "version_0"
    ckpt = torch.load(run / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    assert ckpt["global_step"] == 4 and ckpt["epoch"] == 1  # inside epoch 1 (3 batches each)
    kept = ["config.yaml", "environment.json", "split_manifest.csv", "signals/epoch=000.npz"]
    kept += [p.name for p in run.glob("events.out.tfevents.*")]
    return run, {name: digest(run / name) for name in kept}


def same_signals(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(
        np.array_equal(a[k], b[k], equal_nan=a[k].dtype.kind == "f") for k in a
    )


def shown(run: Path, tag: str) -> list[tuple[int, float]]:
    """(step, value) pairs of ``tag`` as TensorBoard shows the run folder: all its event files
    read in order by one accumulator, which drops the events a later file's ``purge_step``
    covers."""
    acc = EventAccumulator(str(run))
    acc.Reload()
    return (
        sorted((e.step, e.value) for e in acc.Scalars(tag)) if tag in acc.Tags()["scalars"] else []
    )


@pytest.mark.slow
@pytest.mark.parametrize(
    "sig, pause", [(signal.SIGKILL, 4), (signal.SIGINT, 5)], ids=["sigkill", "sigint"]
)
def test_resume_mid_epoch_equals_uninterrupted(
    tmp_path, tiny_args, scalars, uninterrupted, sig, pause
):
    """SIGKILL lands right after the step-4 checkpoint. SIGINT lands one step later: step 4 is
    logged after the checkpoint and flushed by the graceful shutdown, so the event files hold it
    twice and TensorBoard must hide the interrupted part's copy (the writer's ``purge_step``)."""
    run, before = interrupted(tmp_path, tiny_args, sig, pause)
    finish(fit(tiny_args, tmp_path, "--ckpt_path", str(run / "checkpoints" / "last.ckpt")))
    assert not (run.parent / "version_1").exists()  # the same run folder
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["last.ckpt"]
    for name, sha in before.items():  # nothing the first part wrote was lost or changed
        assert digest(run / name) == sha, name
    assert (run / "environment-resume-1.json").is_file()
    assert (run / "config_resume_1.yaml").is_file()
    uninterrupted = uninterrupted.run
    ref = torch.load(uninterrupted / "checkpoints" / "last.ckpt", weights_only=True)
    got = torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)
    assert got["global_step"] == ref["global_step"] == 6
    for key, value in ref["state_dict"].items():
        assert torch.equal(got["state_dict"][key], value), key
    for tag in TAGS:
        got_s, ref_s = shown(run, tag), shown(uninterrupted, tag)
        assert got_s == ref_s, tag
    steps = [s for s, _ in shown(run, "train/loss_step")]
    assert steps == sorted(set(steps)) == list(range(6))  # no step shown twice
    raw = [s for s, _ in scalars(run, "train/loss_step")]  # every event file, nothing purged
    assert raw == sorted([*range(6), *range(4, pause)])  # SIGINT: step 4 twice, purge needed
    for name in ("epoch=000.npz", "epoch=001.npz"):
        assert same_signals(
            load_signals(run / "signals" / name), load_signals(uninterrupted / "signals" / name)
        ), name
