"""``cli.py fit|validate|test|predict``: the suite's LightningCLI run once, with the run folder
left as it was found when the fit fails before its first checkpoint, and an interrupted fit
ending in the line that resumes it."""

from __future__ import annotations

import sys
from pathlib import Path

from jsonargparse import ArgumentError

from datamodules.errors import DataError
from experiments.fitting.config_keys import config_key_error
from experiments.fitting.suite_cli import (
    DEFAULT_ROOT,
    TENSORBOARD,
    SuiteCLI,
    nested_nulls,
    suite_cli,
)
from experiments.run import interrupts
from experiments.run.config_files import config_stem, resolve_config_args


def _close_process_group() -> None:
    """End a DDP run cleanly: a gloo/NCCL group left open at interpreter exit can abort the
    process ("terminate called without an active exception") after all work is written."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()


def run_fit(argv: list[str], from_sys: bool = False) -> None:
    """``cli.py fit|validate|test|predict ...``: run the suite's LightningCLI on ``argv``.

    With ``from_sys`` LightningCLI reads ``sys.argv`` (the DDP launcher re-runs that argv).
    """
    argv = nested_nulls(resolve_config_args(argv))
    # LightningCLI warns when given args while sys.argv holds others
    saved_argv = sys.argv
    sys.argv = saved_argv[:1] + argv if from_sys else saved_argv[:1]
    SuiteCLI.new_run_dir = None
    before = resumed_run_files(argv)
    try:
        init = {"save_dir": DEFAULT_ROOT, "name": config_stem(argv), "default_hp_metric": False}
        suite_cli(None if from_sys else argv, logger={"class_path": TENSORBOARD, "init_args": init})
        _close_process_group()
    except ArgumentError as exc:
        raise config_key_error(str(exc), argv) from None
    except Exception as exc:
        # any failure: a run folder this fit created and that holds no checkpoint goes, and a
        # resume that failed before its first checkpoint leaves the run folder as it found it
        remove_half_made(SuiteCLI.new_run_dir)
        restore_resumed_run(before)
        cause = data_error_in(exc)  # jsonargparse wraps a DataError raised in a constructor
        if cause is not None and cause is not exc:
            raise cause from None
        raise
    except SystemExit as exc:
        # Lightning ends a fit told to stop (SIGTERM, or SIGHUP through experiments.run.interrupts)
        # with a bare SystemExit; the command must not report success for a half-trained model
        signum = interrupts.received()
        if signum is None or exc.code not in (None, 0):
            raise
        raise interrupts.Interrupted(signum, resume_hint(SuiteCLI.new_run_dir, argv)) from None
    finally:
        sys.argv = saved_argv


def resumed_run_files(argv: list[str]) -> tuple[Path, dict[Path, float]] | None:
    """``(run folder, {file: mtime})`` of the run a ``--ckpt_path <run>/checkpoints/x.ckpt``
    resumes (None when the fit starts a new run)."""
    ckpt = next((argv[i + 1] for i, a in enumerate(argv[:-1]) if a == "--ckpt_path"), None)
    if not ckpt or Path(ckpt).parent.name != "checkpoints":
        return None
    run = Path(ckpt).resolve().parent.parent
    return run, {p: p.stat().st_mtime for p in run.rglob("*") if p.is_file()}


def restore_resumed_run(before: tuple[Path, dict[Path, float]] | None) -> None:
    """Remove what a failed resume added to its run folder while no checkpoint changed (its
    event file, a config_resume_K.yaml): the folder stays as the interrupted fit left it."""
    if before is None:
        return
    run, files = before
    now = {p: p.stat().st_mtime for p in run.rglob("*") if p.is_file()}
    if any(p.suffix == ".ckpt" and files.get(p) != t for p, t in now.items()):
        return  # it trained and saved: what it wrote belongs to the run now
    for path in set(now) - set(files):
        path.unlink(missing_ok=True)


def data_error_in(exc: BaseException) -> DataError | None:
    """The first :class:`DataError` in ``exc``'s chain of causes (None when there is none)."""
    seen = set()
    while exc is not None and id(exc) not in seen and not isinstance(exc, DataError):
        seen.add(id(exc))
        exc = exc.__cause__ or exc.__context__
    return exc


def resume_hint(run_dir: Path | None, argv: list[str]) -> str:
    """How to resume an interrupted fit (the run folder's ``last.ckpt``)."""
    ckpt = (run_dir / "checkpoints" / "last.ckpt") if run_dir else None
    if ckpt is None or not ckpt.is_file():
        return "no checkpoint was written; run the fit again"
    return f"resume with: python cli.py fit {' '.join(argv)} --ckpt_path {ckpt}"


def remove_half_made(run_dir: Path | None) -> None:
    """Delete a run folder this process created when it holds no checkpoint yet (a fit that
    failed on bad input before training), and the logger's folders above it that it leaves
    empty: no half-made run folder is left behind."""
    if run_dir is None or not run_dir.is_dir() or any(run_dir.glob("checkpoints/*.ckpt")):
        return
    import shutil

    shutil.rmtree(run_dir, ignore_errors=True)
    for parent in list(run_dir.parents)[:2]:  # the logger's name and save_dir folders, if empty
        try:
            parent.rmdir()
        except OSError:
            break
