"""``cli.py fit --help`` (and ``validate``, ``test``, ``predict``) in well under a second.

LightningCLI builds its help from the Trainer's and the models' signatures, which needs torch and
Lightning loaded (seconds). The rendered text is kept in ``$XDG_CACHE_HOME/whale-mia/help/``
(``~/.cache`` by default) under a key made of the subcommand, the terminal width, the versions of
the libraries that shape it and the project's source files; any change makes a new key, so a
stale help is never shown. The first call renders it as before.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import os
import shutil
import sys
from importlib import metadata
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("torch", "torchvision", "pytorch-lightning", "jsonargparse", "timm", "whale-mia")
SOURCES = ("cli.py", "experiments", "datamodules", "lightning_modules", "attacks")


def cache_key(command: str) -> str:
    """Hex digest of what the help text depends on."""
    h = hashlib.sha256(f"{command}\n{shutil.get_terminal_size().columns}\n".encode())
    for name in PACKAGES:
        with contextlib.suppress(metadata.PackageNotFoundError):
            h.update(f"{name}={metadata.version(name)}\n".encode())
    for src in SOURCES:
        path = ROOT / src
        for f in sorted(path.rglob("*.py")) if path.is_dir() else [path]:
            h.update(f.relative_to(ROOT).as_posix().encode())
            h.update(f.read_bytes())
    return h.hexdigest()[:32]


def cache_file(command: str) -> Path:
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return base / "whale-mia" / "help" / f"{command}-{cache_key(command)}.txt"


def show_help(command: str, render) -> None:
    """Print ``command``'s help from the cache, or call ``render()`` (which prints it and raises
    ``SystemExit(0)``), keep what it printed, and exit 0."""
    path = cache_file(command)
    if path.is_file():
        sys.stdout.write(path.read_text(encoding="utf-8"))
        raise SystemExit(0)
    buffer = io.StringIO()
    try:
        with contextlib.redirect_stdout(buffer):
            render()
    except SystemExit as exc:
        if exc.code not in (None, 0):
            sys.stdout.write(buffer.getvalue())
            raise
    text = buffer.getvalue()
    sys.stdout.write(text)
    with contextlib.suppress(OSError):
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, path)
    raise SystemExit(0)
