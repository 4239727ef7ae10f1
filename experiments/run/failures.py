"""The command line's one failure boundary: every way a command can end becomes one line on
stderr and an exit status a script can trust.

=========  ====================================================================================
status     meaning
=========  ====================================================================================
0          the command finished
1          an internal error: one line, the traceback in ``<run>/logs/error-<time>.log`` (or
           ``lightning_logs/errors/``; with ``--debug`` on stderr)
2          bad input, a full disk or a place that cannot be written: one line naming the file or
           key and the fix
128 + N    ended by signal N (SIGHUP 129, SIGINT 130, SIGTERM 143)
=========  ====================================================================================

A command that fails or is interrupted removes the outputs it created
(:data:`experiments.run.outputs.CREATED`); a fit keeps its run folder once it holds a checkpoint, so
it can resume. Kept free of heavy imports.
"""

from __future__ import annotations

import errno
import importlib
import signal
import sys
import time
import traceback
from pathlib import Path

from datamodules.errors import DataError
from experiments.run import interrupts, outputs

#: OSError numbers that mean the place, not the program, is at fault
PLACE_ERRORS = {
    errno.ENOSPC: "the disk is full; free some space or write elsewhere",
    errno.EDQUOT: "the disk quota is used up; free some space or write elsewhere",
    errno.EROFS: "the file system is read-only; write elsewhere (--output) or make it writable",
    errno.EACCES: "permission denied; write elsewhere (--output) or fix the folder's mode",
    errno.EPERM: "operation not permitted; choose another place (--output) or fix its owner/mode",
}


def run_command(argv, *, from_sys: bool, debug: bool, commands: dict, lightning) -> None:
    """Run ``argv`` (subcommand first) and turn how it ended into an exit status."""
    name = argv[0]
    outputs.CREATED.clear()
    saved = {s: signal.getsignal(s) for s in interrupts.SIGNALS}
    try:
        interrupts.install()
    except ValueError:  # not the main thread: signals keep their handlers
        pass
    try:
        _dispatch(argv, from_sys, commands, lightning)
        outputs.CREATED.clear()
    except BaseException as exc:  # noqa: BLE001 - the boundary: every ending gets its status
        code = _ending(exc, argv, debug, keep_outputs=name in lightning)
        raise SystemExit(code) from None
    finally:
        for signum, handler in saved.items():
            if handler is not None:
                _setsignal(signum, handler)


def _dispatch(argv, from_sys: bool, commands: dict, lightning) -> None:
    if argv[0] in lightning and argv[1:] in (["--help"], ["-h"]):
        from experiments.run.help_cache import show_help

        module = commands[argv[0]][0]
        show_help(argv[0], lambda: importlib.import_module(module).main(argv, from_sys=False))
    module = importlib.import_module(commands[argv[0]][0])
    if argv[0] in lightning:
        module.main(argv, from_sys=from_sys)
    else:
        from experiments.run.config_files import resolve_config_args

        module.main(resolve_config_args(argv[1:]))


def _ending(exc: BaseException, argv, debug: bool, keep_outputs: bool) -> int:
    """Print the one line for ``exc``, clean up, and return the exit status."""
    if isinstance(exc, SystemExit):
        code = exc.code
        if code in (None, 0):
            return 0
        if not keep_outputs:
            outputs.remove_created()
        if not isinstance(code, int):  # SystemExit("message"): a message, a failure
            print(f"error: {code}", file=sys.stderr)
            return 2
        return code
    if not keep_outputs:
        outputs.remove_created()
    outputs.CREATED.clear()
    if isinstance(exc, KeyboardInterrupt):
        exc = interrupts.Interrupted(2)
    if isinstance(exc, interrupts.Interrupted):
        detail = f"; {exc.detail}" if exc.detail else ""
        print(f"{exc}: stopped{detail}", file=sys.stderr)
        return exc.exit_code
    if isinstance(exc, DataError):
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if isinstance(exc, OSError) and exc.errno in PLACE_ERRORS:
        where = exc.filename or "an output file"
        print(f"error: {where}: {PLACE_ERRORS[exc.errno]}", file=sys.stderr)
        return 2
    if isinstance(exc, MemoryError):
        print("error: out of memory; use a smaller batch_size or image_size", file=sys.stderr)
        return 2
    log = _keep_traceback(exc, argv, debug)
    where = "above" if debug else f"in {log}"
    summary = " ".join(f"{type(exc).__name__}: {exc}".split())[:300]
    print(f"internal error: {summary} (traceback {where})", file=sys.stderr)
    return 1


def _keep_traceback(exc: BaseException, argv, debug: bool) -> Path | None:
    """Write the traceback to a log file (the run folder's ``logs/`` when ``--run`` names one);
    with ``debug`` print it too. Return the log file (None when none could be written)."""
    text = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
    if debug:
        print(text, file=sys.stderr, end="")
    stamp = time.strftime("%Y%m%d-%H%M%S")
    for folder in _log_folders(argv):
        try:
            folder.mkdir(parents=True, exist_ok=True)
            path = folder / f"error-{stamp}.log"
            path.write_text(f"cli.py {' '.join(argv)}\n\n{text}", encoding="utf-8")
            return path
        except OSError:
            continue
    return None


def _log_folders(argv) -> list[Path]:
    import tempfile

    folders = []
    for i, arg in enumerate(argv[:-1]):
        if arg == "--run" and Path(argv[i + 1]).is_dir():
            folders.append(Path(argv[i + 1]) / "logs")
    return [*folders, Path("lightning_logs") / "errors", Path(tempfile.gettempdir()) / "whale-mia"]


def _setsignal(signum, handler) -> None:
    try:
        signal.signal(signum, handler)
    except ValueError:  # not the main thread
        pass
