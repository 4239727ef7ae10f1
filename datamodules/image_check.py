"""The up-front image check: every image fully decoded once, in parallel, before anything trains.

``Image.verify()`` reads headers only (a truncated JPEG passes it), so each file is decoded for
real with :func:`datamodules.images.load_rgb`. A file decoded without error is remembered by its
sha256: in this process, and, with a decoded-image cache, as an empty marker
``<cache>/checked/<hash[:2]>/<hash>`` so the next run skips it.

An image larger than Pillow's decompression-bomb limit (``PIL.Image.MAX_IMAGE_PIXELS`` pixels,
read from its header) counts as unreadable: it is never decoded (:func:`load_rgb`).

Policies for an image that cannot be read:

* ``error`` (default): stop with one line naming the first bad file (all of them are counted).
* ``skip``: leave the bad files out, with one warning naming how many and the first one.
  :func:`write_skipped` lists them (``skipped_images.csv`` in a run folder).
"""

from __future__ import annotations

import csv
import io
import os
import warnings
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from datamodules.decode import load_rgb
from datamodules.errors import DataError
from datamodules.hashing import FileHasher

POLICIES = ("error", "skip")
_CHECKED: set[str] = set()


def _marker(cache_root: Path | None, file_hash: str) -> Path | None:
    return None if cache_root is None else cache_root / "checked" / file_hash[:2] / file_hash


def _check_one(path: Path, hasher: FileHasher, cache_root: Path | None) -> str | None:
    """None when ``path`` decodes, else the reason."""
    try:
        file_hash = hasher(path)
    except OSError as exc:
        return f"cannot be read ({exc.__class__.__name__})"
    if path.stat().st_size == 0:
        return "empty file"
    marker = _marker(cache_root, file_hash)
    if file_hash in _CHECKED or (marker is not None and marker.exists()):
        return None
    try:
        load_rgb(path)
    except DataError as exc:
        return str(exc).split(": ", 1)[-1].split(". Replace", 1)[0]
    _CHECKED.add(file_hash)
    if marker is not None:
        try:
            marker.parent.mkdir(parents=True, exist_ok=True)
            marker.touch()
        except OSError:
            pass  # a read-only cache: check again next time
    return None


def check_images(
    paths: Iterable[str | Path],
    policy: str = "error",
    *,
    hasher: FileHasher | None = None,
    cache_root: str | Path | None = None,
    workers: int | None = None,
    option: str = "the unreadable-image policy",
) -> tuple[list[Path], dict[Path, str]]:
    """Decode every file of ``paths`` (threads; each distinct file once).

    Returns ``(good, bad)``: the readable paths in input order and ``{path: reason}`` for the
    rest. ``policy="error"`` raises DataError naming the first bad file instead of returning
    any (its message says to set ``option`` to skip); ``"skip"`` warns once and returns both.
    """
    if policy not in POLICIES:
        raise DataError(f"unreadable-image policy {policy!r}: use one of {', '.join(POLICIES)}.")
    paths = [Path(p) for p in paths]
    unique = list(dict.fromkeys(paths))
    hasher = hasher or FileHasher()
    root = Path(cache_root) if cache_root else None
    n = workers or min(8, (os.cpu_count() or 1) + 1)
    with ThreadPoolExecutor(max_workers=max(1, n)) as pool:
        reasons = dict(zip(unique, pool.map(lambda p: _check_one(p, hasher, root), unique)))
    bad = {p: r for p, r in reasons.items() if r is not None}
    if bad and policy == "error":
        first = next(iter(bad))
        more = f" ({len(bad) - 1} more unreadable)" if len(bad) > 1 else ""
        raise DataError(
            f"{first}: {bad[first]}{more}. Replace the file, remove it from the catalog, or set "
            f"{option} to skip."
        )
    if bad:
        first = next(iter(bad))
        warnings.warn(
            f"skipping {len(bad)} unreadable image(s), e.g. {first}: {bad[first]}", stacklevel=2
        )
    return [p for p in paths if p not in bad], bad


def write_skipped(path: str | Path, rows: list[dict]) -> Path:
    """Write ``rows`` (``catalog``, ``file``, ``reason``) as CSV to ``path``: a temp file beside
    it, then renamed."""
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=["catalog", "file", "reason"], lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    path = Path(path)
    tmp = path.with_name(f".{path.name}.partial")
    tmp.write_text(buf.getvalue(), encoding="utf-8")
    os.replace(tmp, path)
    return path
