"""On-disk cache of decoded, manifest-augmented and resized images, keyed by content and settings.

Decoding a photo and resizing it is most of what a loader worker does, and it gives the same
result every epoch. :class:`ImageCache` keeps that result as a uint8 ``(3, S, S)`` array, one
``.npy`` file per entry::

    <root>/<key[:2]>/<key>.npy

``key`` is the sha256 of the image file's sha256, the manifest augmentation spec (the ``~k``
uniqueness suffix dropped, as it changes nothing) and the :class:`DecodeSettings` (image size,
resize mode (``squash`` or ``letterbox``) and pad value, interpolation and antialias,
:data:`FORMAT_VERSION`). Changing a photo gives it a new hash,
changing a setting gives every photo a new key: either way a new entry is built on first use and
the stale one is simply never read again (:func:`prune` deletes such leftovers).

Entries are written to a temp file in the same folder and renamed into place (``os.replace``), so
several loader workers, DDP ranks or runs can fill one cache at once: a reader sees a whole entry
or none. An entry that cannot be read back (truncated, garbage, wrong shape or dtype) is rebuilt;
a cache folder that cannot be written to is warned about once and the images are served
uncached. Pixel corruption that keeps a valid ``.npy`` header is not detected (no checksum).

:class:`FileHasher` hashes the photos. It remembers each file's hash together with its size,
mtime, ctime and inode, and hashes again when any of them changes. As in git's "racily clean"
rule, a hash taken within :data:`FileHasher.RACY_NS` of the file's last change is never trusted
(the file could change again inside one timestamp tick), so such files are re-hashed on each use
until they are older.

Counters (:class:`CacheStats`) are per process: with ``num_workers > 0`` each worker counts its
own hits and misses.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
import time
import warnings
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from datamodules.hashing import FileHasher, sha256_file  # noqa: F401  (re-exported)

FORMAT_VERSION = 2
"""2: EXIF orientation applied, 16-bit and float modes scaled. Bump when what an entry holds changes (decoding, augmentation ops, layout)."""

SUFFIX = ".npy"


@dataclass(frozen=True)
class DecodeSettings:
    """Everything besides the file and its aug spec that decides an entry's pixels."""

    image_size: int
    interpolation: str = "bilinear"
    antialias: bool = True
    version: int = FORMAT_VERSION
    resize: str = "squash"
    pad_value: int = 0


@dataclass
class CacheStats:
    """Per-process counters; ``misses`` counts entries built (``corrupt`` of them were rebuilt)."""

    hits: int = 0
    misses: int = 0
    corrupt: int = 0
    write_errors: int = 0

    def reset(self) -> None:
        self.hits = self.misses = self.corrupt = self.write_errors = 0


def aug_key(spec: str) -> str:
    """The part of a manifest aug spec that changes pixels (``rot90~3`` -> ``rot90``)."""
    return (spec or "").split("~")[0]


class ImageCache:
    """Decoded uint8 ``(3, S, S)`` images under ``root``, keyed by file hash, aug and settings.

    Picklable (loader workers get a copy with their own counters).
    """

    def __init__(self, root: str | Path, settings: DecodeSettings):
        self.root = Path(root)
        self.settings = settings
        self.stats = CacheStats()
        self._settings_json = json.dumps(asdict(settings), sort_keys=True)
        self._warned = False

    def key(self, file_hash: str, aug: str = "") -> str:
        blob = json.dumps([file_hash, aug_key(aug), self._settings_json])
        return hashlib.sha256(blob.encode()).hexdigest()

    def path(self, key: str) -> Path:
        return self.root / key[:2] / f"{key}{SUFFIX}"

    def get(self, file_hash: str, aug: str, build: Callable[[], torch.Tensor]) -> torch.Tensor:
        """The cached entry, or ``build()`` (a uint8 ``(3, S, S)`` tensor) stored and returned."""
        path = self.path(self.key(file_hash, aug))
        cached = self._load(path)
        if cached is not None:
            self.stats.hits += 1
            return cached
        self.stats.misses += 1
        img = build()
        self._store(path, img)
        return img

    # ---- entries --------------------------------------------------------------------------
    def _expected_shape(self) -> tuple[int, int, int]:
        s = self.settings.image_size
        return (3, s, s)

    def _load(self, path: Path) -> torch.Tensor | None:
        try:
            with open(path, "rb") as fh:
                arr = np.load(fh, allow_pickle=False)
        except FileNotFoundError:
            return None
        except Exception:  # truncated, garbage, unreadable: rebuild it
            self.stats.corrupt += 1
            return None
        if arr.dtype != np.uint8 or arr.shape != self._expected_shape():
            self.stats.corrupt += 1
            return None
        return torch.from_numpy(arr)

    def _store(self, path: Path, img: torch.Tensor) -> None:
        arr = img.detach().cpu().contiguous().numpy()
        if arr.dtype != np.uint8 or arr.shape != self._expected_shape():
            raise ValueError(
                f"image cache: an entry must be uint8 {self._expected_shape()}, got "
                f"{arr.dtype} {arr.shape}."
            )
        tmp = None
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(prefix=f".{path.stem[:12]}-", suffix=".tmp", dir=path.parent)
            with os.fdopen(fd, "wb") as fh:
                os.fchmod(fh.fileno(), 0o666 & ~_umask())  # mkstemp: owner-only
                np.save(fh, arr, allow_pickle=False)
            os.replace(tmp, path)
            tmp = None
        except OSError as exc:
            self.stats.write_errors += 1
            if not self._warned:
                self._warned = True
                warnings.warn(
                    f"image cache {self.root}: cannot write entries ({exc}); serving images "
                    "uncached. Set data.loader.cache_dir to a writable folder, or null to turn it "
                    "off.",
                    stacklevel=3,
                )
        finally:
            if tmp is not None:
                try:
                    os.unlink(tmp)
                except OSError:
                    pass


def prune(root: str | Path, keep: Iterable[str], *, tmp_older_than_s: float = 3600) -> int:
    """Delete entries under ``root`` whose key is not in ``keep``, and temp files left over by
    interrupted writes (older than ``tmp_older_than_s``). Returns how many files were removed.

    ``keep`` is every key still wanted, e.g. ``ManifestDataset.cache_keys()`` of each dataset
    (all image sizes in use) sharing the folder.
    """
    root = Path(root)
    keep = set(keep)
    removed = 0
    now = time.time()
    if not root.is_dir():
        return 0
    for sub in root.iterdir():
        if not sub.is_dir() or len(sub.name) != 2:
            continue
        for f in sub.iterdir():
            stale = (f.suffix == SUFFIX and f.stem not in keep) or (
                f.suffix == ".tmp" and now - f.stat().st_mtime > tmp_older_than_s
            )
            if stale:
                try:
                    f.unlink()
                    removed += 1
                except FileNotFoundError:
                    pass
    return removed


def _umask() -> int:
    """The process's umask (read by setting and restoring it)."""
    mask = os.umask(0)
    os.umask(mask)
    return mask
