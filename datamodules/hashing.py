"""sha256 of files, with a memo keyed on size, times and inode (no torch: ``discriminate``'s
exported path and the decode check use it)."""

from __future__ import annotations

import hashlib
import os
import time
from pathlib import Path


class FileHasher:
    """sha256 of image files, remembered while a file's size, mtime, ctime and inode stay put.

    Picklable; ``hashed`` counts the files this process actually read and hashed.
    """

    RACY_NS = 2_000_000_000

    def __init__(self):
        self._memo: dict[str, tuple[tuple[int, int, int, int], int, str]] = {}
        self.hashed = 0

    def __call__(self, path: str | Path) -> str:
        key = os.fspath(path)
        st = os.stat(key)
        sig = (st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino)
        memo = self._memo.get(key)
        if memo is not None and memo[0] == sig and memo[1] - max(sig[1], sig[2]) > self.RACY_NS:
            return memo[2]
        started = time.time_ns()
        digest = sha256_file(Path(key))
        self.hashed += 1
        self._memo[key] = (sig, started, digest)
        return digest


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    """sha256 (hex) of a file's bytes, read in ``chunk``-byte blocks."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            h.update(block)
    return h.hexdigest()
