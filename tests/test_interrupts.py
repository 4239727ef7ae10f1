"""Interruptions: a signal ends every command with ``128 + signal``, a fit told to stop by
SIGTERM saves a checkpoint it resumes from exactly, and an interrupted ``attack`` leaves no
report behind. Real processes, real signals."""

from __future__ import annotations

import json
import os
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from tests.test_resume_faults import EXTRA, finish, fit

REPO = Path(__file__).resolve().parents[1]


def wait_for(path: Path, proc: subprocess.Popen, seconds: float = 600) -> None:
    deadline = time.monotonic() + seconds
    while not path.exists():
        assert proc.poll() is None, f"exited {proc.returncode} before {path.name} appeared"
        assert time.monotonic() < deadline, f"{path} never appeared"
        time.sleep(0.1)


@pytest.mark.slow
def test_sigterm_fit_in_a_shell_chain_exits_143_and_resumes_to_the_same_weights(
    tmp_path, tiny_args
):
    """``fit && touch attacked`` with SIGTERM to the fit: the chain stops (status 143), the fit
    finished its batch and saved ``last.ckpt`` there, and resuming it ends with the weights of
    an uninterrupted fit."""
    (tmp_path / "ref").mkdir()
    reference = fit(tiny_args, tmp_path / "ref")  # runs while the interrupted one does
    work = tmp_path / "cut"
    work.mkdir()
    flag = work / "paused"
    hook = {
        "class_path": "tests.fault_hooks.PauseAtStep",
        "init_args": {"step": 4, "flag": str(flag)},
    }
    args = [*tiny_args(work, epochs=2), *EXTRA, f"--trainer.callbacks+={json.dumps(hook)}"]
    fit_cmd = shlex.join([sys.executable, "cli.py", *args])
    chain = f"{fit_cmd} 2> {shlex.quote(str(work / 'stderr.txt'))} && touch {work / 'attacked'}"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    shell = subprocess.Popen(["bash", "-c", chain], cwd=REPO, env=env)
    wait_for(flag, shell)
    os.kill(int(flag.read_text()), signal.SIGTERM)
    assert shell.wait(timeout=300) == 128 + signal.SIGTERM
    assert not (work / "attacked").exists()
    err = (work / "stderr.txt").read_text()
    assert "interrupted by SIGTERM" in err and "--ckpt_path" in err, err[-2000:]
    assert "Traceback" not in err
    run = work / "logs" / "run" / "version_0"
    cut = torch.load(run / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    assert cut["global_step"] == 5 and cut["epoch"] == 1  # the batch in flight finished
    finish(fit(tiny_args, work, "--ckpt_path", str(run / "checkpoints" / "last.ckpt")))
    finish(reference)
    ref_run = tmp_path / "ref" / "logs" / "run" / "version_0"
    ref = torch.load(ref_run / "checkpoints" / "last.ckpt", weights_only=True)
    got = torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)
    assert got["global_step"] == ref["global_step"] == 6
    for key, value in ref["state_dict"].items():
        assert torch.equal(got["state_dict"][key], value), key


@pytest.mark.slow
def test_sigterm_attack_exits_143_and_leaves_no_report(tmp_path, tiny_args):
    """SIGTERM while ``attack`` computes: status 143, no ``attacks`` folder left that a later
    ``attack`` (or a person) could take for a finished one; the run folder is otherwise as it
    was, and the next ``attack`` writes its report in the same place."""
    finish(fit(tiny_args, tmp_path))
    run = tmp_path / "logs" / "run" / "version_0"
    before = sorted(p.relative_to(run).as_posix() for p in run.rglob("*"))
    cmd = [sys.executable, "cli.py", "attack", "--run", str(run), "--config", "attack_demo.yaml"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    with (tmp_path / "attack_err.txt").open("w") as err:
        proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=err)
    wait_for(run / "attacks" / "attack_config.json", proc)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=120) == 128 + signal.SIGTERM
    text = (tmp_path / "attack_err.txt").read_text()
    assert "interrupted by SIGTERM" in text and "Traceback" not in text, text[-2000:]
    assert not (run / "attacks").exists()
    after = sorted(p.relative_to(run).as_posix() for p in run.rglob("*"))
    assert [p for p in after if not p.startswith("signals")] == [
        p for p in before if not p.startswith("signals")
    ]
