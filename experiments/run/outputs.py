"""Output paths that never overwrite, and atomic writes (write a temp file, then rename).

Every command that writes a result goes through :func:`claim`: the path is fresh, or the user
named it with ``--output`` and asked for ``--overwrite``. Files are written with
:func:`atomic_path` so a killed process never leaves half a file under the final name.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

from datamodules.errors import DataError

#: outputs this process created (folders made by :func:`make_output_dir`, files first written by
#: :func:`atomic_path`), newest last; ``cli.py`` removes them when the command fails or is
#: interrupted, so no half-made result is left that a later run could take as finished
CREATED: list[Path] = []


def make_output_dir(path: str | Path) -> Path:
    """Create the output folder ``path`` (and its parents), recording it in :data:`CREATED` when
    it did not exist before; return it."""
    path = Path(path)
    if not path.is_dir():
        path.mkdir(parents=True, exist_ok=True)
        CREATED.append(path)
    return path


def remove_created() -> list[Path]:
    """Remove every output in :data:`CREATED` (newest first); return what was removed."""
    import shutil

    removed = []
    while CREATED:
        path = CREATED.pop()
        if path.is_dir():
            shutil.rmtree(path, ignore_errors=True)
        elif path.exists():
            path.unlink(missing_ok=True)
        removed.append(path)
    return removed


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def claim(path: str | Path, *, overwrite: bool = False, option: str = "--output") -> Path:
    """Return ``path`` if nothing exists there (or ``overwrite``); else raise DataError.

    The parent folder is created. ``option`` names the command-line option in the message.
    """
    path = Path(path)
    if path.exists() and not overwrite:
        raise DataError(
            f"{path}: already exists and is kept. Choose another {option} or pass --overwrite "
            "to replace it."
        )
    path.parent.mkdir(parents=True, exist_ok=True)
    return path


def fresh_name(folder: str | Path, stem: str, suffix: str) -> Path:
    """``folder/stem{suffix}``, or ``folder/stem-1{suffix}``, ``-2``, ... : the first unused name."""
    folder = Path(folder)
    return folder / f"{stem}{fresh_tag(folder, [(stem, suffix)])}{suffix}"


def fresh_tag(folder: str | Path, names: list[tuple[str, str]]) -> str:
    """The first of ``""``, ``"-1"``, ``"-2"``, ... that leaves every ``folder/stem{tag}{suffix}``
    of ``names`` (``(stem, suffix)`` pairs) unused: one tag for a set of files written together."""
    folder, k = Path(folder), 0
    tag = ""
    while any((folder / f"{stem}{tag}{suffix}").exists() for stem, suffix in names):
        k += 1
        tag = f"-{k}"
    return tag


def claim_folder(path: str | Path, *, overwrite: bool = False, option: str = "--output") -> Path:
    """Return ``path`` if it is absent or an empty folder (or ``overwrite``); else DataError.

    Nothing is created (the caller makes the folder once its other inputs are checked). A file at
    ``path`` is always refused.
    """
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise DataError(f"{path}: is a file, not a folder. Choose another {option}.")
    if path.is_dir() and any(path.iterdir()) and not overwrite:
        raise DataError(
            f"{path}: already exists and holds results, which are kept. Choose another {option} "
            "or pass --overwrite to write into it."
        )
    return path


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temp path beside ``path``; on success rename it onto ``path`` (``os.replace``).

    On an exception the temp file is removed and ``path`` is left as it was. The file's mode
    follows the umask; a file that did not exist before is recorded in :data:`CREATED`.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    existed = path.exists()
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=path.suffix, dir=path.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        # mkstemp makes owner-only files; the result gets the mode the user's umask gives
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
        if not existed:
            CREATED.append(path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def write_text(path: str | Path, text: str) -> Path:
    """Write ``text`` (UTF-8) to ``path`` atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return Path(path)


def write_json(path: str | Path, obj) -> Path:
    """Write ``obj`` as indented JSON to ``path`` atomically."""
    return write_text(path, json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n")
