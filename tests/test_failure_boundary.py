"""The command line's failure boundary (``experiments.run.failures``): every ending gets one line and
a status a script can trust, and a failed command leaves none of its outputs behind."""

from __future__ import annotations

import errno
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest

import cli
from datamodules.errors import DataError
from experiments.run import interrupts, outputs
from tests.cli_checks import ending

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def planted(monkeypatch, tmp_path):
    """``cli.py export --run <tmp>`` runs a planted main: it makes an output folder and a file,
    then raises what the test puts in ``planted.error``."""
    import experiments.commands.export as export

    class Plant:
        error: BaseException | None = None
        out = tmp_path / "made"

    def fake_main(argv):
        outputs.make_output_dir(Plant.out)
        outputs.write_text(Plant.out / "half.txt", "half")
        outputs.write_text(tmp_path / "loose.txt", "half")
        if Plant.error is not None:
            raise Plant.error

    monkeypatch.setattr(export, "main", fake_main)
    return Plant


def test_an_internal_error_is_one_line_and_its_traceback_is_kept_in_the_run(
    planted, tmp_path, capsys
):
    planted.error = ZeroDivisionError("planted")
    code, lines = ending(["export", "--run", str(tmp_path)], capsys)
    assert code == 1 and len(lines) == 1
    assert lines[0].startswith("internal error: ZeroDivisionError: planted (traceback in ")
    logs = list((tmp_path / "logs").glob("error-*.log"))
    assert len(logs) == 1 and "Traceback" in logs[0].read_text()
    assert str(logs[0]) in lines[0]
    assert not planted.out.exists() and not (tmp_path / "loose.txt").exists()


def test_debug_shows_the_traceback(planted, tmp_path, capsys):
    planted.error = ZeroDivisionError("planted")
    code, lines = ending(["export", "--run", str(tmp_path), "--debug"], capsys)
    assert code == 1 and lines[0] == "Traceback (most recent call last):"
    assert "traceback above" in lines[-1]


@pytest.mark.parametrize(
    "number, words",
    [(errno.ENOSPC, "the disk is full"), (errno.EROFS, "read-only"), (errno.EACCES, "permission")],
)
def test_a_full_disk_or_read_only_place_is_one_line_naming_the_path(
    planted, tmp_path, capsys, number, words
):
    planted.error = OSError(number, os.strerror(number), str(tmp_path / "made" / "roc.png"))
    code, lines = ending(["export", "--run", str(tmp_path)], capsys)
    assert code == 2 and len(lines) == 1
    assert lines[0].startswith(f"error: {tmp_path / 'made' / 'roc.png'}: ") and words in lines[0]
    assert not planted.out.exists()


def test_bad_input_removes_what_the_command_created(planted, tmp_path, capsys):
    planted.error = DataError("x.csv, row 3: bad cell")
    (tmp_path / "kept.txt").write_text("from before")
    code, lines = ending(["export", "--run", str(tmp_path)], capsys)
    assert (code, lines) == (2, ["error: x.csv, row 3: bad cell"])
    assert not planted.out.exists() and (tmp_path / "kept.txt").read_text() == "from before"


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGHUP, signal.SIGINT])
def test_an_interruption_exits_128_plus_the_signal(planted, tmp_path, capsys, signum):
    planted.error = interrupts.Interrupted(signum)
    code, lines = ending(["export", "--run", str(tmp_path)], capsys)
    assert code == 128 + signum and len(lines) == 1 and "interrupted by SIG" in lines[0]
    assert not planted.out.exists()


def test_a_keyboard_interrupt_is_sigint(planted, tmp_path, capsys):
    planted.error = KeyboardInterrupt()
    assert ending(["export", "--run", str(tmp_path)], capsys)[0] == 130


def test_a_finished_command_keeps_its_outputs_and_the_signal_handlers(planted, tmp_path, capsys):
    before = signal.getsignal(signal.SIGTERM)
    assert ending(["export", "--run", str(tmp_path)], capsys) == (0, [])
    assert (planted.out / "half.txt").is_file() and not outputs.CREATED
    assert signal.getsignal(signal.SIGTERM) is before


def test_a_real_sigterm_reaches_the_boundary(tmp_path):
    """A real signal to a real process: the installed handler turns it into status 143."""
    code = (
        "import os, signal, sys, time; sys.argv = ['cli.py', 'export', '--run', '.'];"
        "import experiments.commands.export as e;"
        "e.main = lambda argv: (os.kill(os.getpid(), signal.SIGTERM), time.sleep(30));"
        "import cli; cli.main()"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 143, proc.stderr
    assert proc.stderr.strip().splitlines() == ["interrupted by SIGTERM: stopped"]


def test_version_and_the_console_script(capsys):
    with pytest.raises(SystemExit) as info:
        cli.main(["--version"])
    assert info.value.code == 0 and capsys.readouterr().out.startswith("whale-mia 0.")
    script = shutil.which("whale-mia")
    if script is None:
        pytest.skip("the package is not installed (pip install -e .)")
    proc = subprocess.run([script, "--version"], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0 and proc.stdout.startswith("whale-mia ")


@pytest.mark.parametrize("mask, mode", [(0o022, 0o644), (0o077, 0o600), (0o002, 0o664)])
def test_atomic_outputs_follow_the_umask(tmp_path, mask, mode):
    old = os.umask(mask)
    try:
        path = outputs.write_text(tmp_path / "report.md", "x")
    finally:
        os.umask(old)
        outputs.CREATED.clear()
    assert path.stat().st_mode & 0o777 == mode


def test_a_full_disk_during_a_fit_leaves_no_partial_checkpoint(
    tmp_path, tiny_args, capsys, monkeypatch, one_thread
):
    """The second checkpoint write fails as on a full disk: one line naming the file, status 2,
    no ``.last.ckpt.partial``; the first ``last.ckpt`` is kept, so the run can resume."""
    import pytorch_lightning as pl

    real, calls = pl.Trainer.save_checkpoint, []

    def full_disk(self, filepath, weights_only=False, storage_options=None):
        calls.append(filepath)
        if len(calls) < 2:
            return real(self, filepath, weights_only)
        Path(filepath).write_bytes(b"half a checkpoint")
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(filepath))

    monkeypatch.setattr(pl.Trainer, "save_checkpoint", full_disk)
    code, lines = ending([*tiny_args(tmp_path, epochs=2), "--leakage.every_n_epochs", "5"], capsys)
    assert code == 2 and len(lines) == 1 and "the disk is full" in lines[0], lines
    ckpts = tmp_path / "logs" / "run" / "version_0" / "checkpoints"
    assert sorted(p.name for p in ckpts.iterdir()) == ["last.ckpt"]


def test_a_fit_defers_the_first_sigterm_to_a_batch_boundary_and_not_the_second(monkeypatch):
    class Connector:
        received_sigterm = False

    class Trainer:
        _signal_connector = Connector()

    monkeypatch.setattr(interrupts._State, "trainer", Trainer())
    monkeypatch.setattr(interrupts._State, "received", None)
    interrupts._handler(signal.SIGTERM, None)  # deferred: Lightning stops after the batch
    assert Trainer._signal_connector.received_sigterm and interrupts.received() == signal.SIGTERM
    with pytest.raises(interrupts.Interrupted) as second:
        interrupts._handler(signal.SIGTERM, None)
    assert second.value.exit_code == 143
    monkeypatch.setattr(interrupts._State, "received", None)
    with pytest.raises(interrupts.Interrupted):  # Ctrl-C is never deferred
        interrupts._handler(signal.SIGINT, None)
