"""Rectangular, seeded views of catalog photos, decoded once and kept on disk (no Lightning).

A re-identification embedding sees each photo as ``views`` fixed views at ``height x width``
(top-view beluga crops are about 3:1): view 0 is the photo itself, view 1 its mirror image, and
views 2, 3, ... random crops (80-100 % of the area, any position) with a random mirror and a
brightness/contrast change, drawn from ``(seed, photo index, view)`` so that they are the same on
every run. Fixed views are what makes frozen-stage activations cacheable: every epoch trains on
the same views, and the frozen stages of the backbone never need to see a photo twice.

:class:`ArrayCache` keeps one array per key as ``<root>/<key[:2]>/<key>.npy`` written atomically
(temp file + ``os.replace``); the view tensor of a catalog is keyed by the sha256 of its files and
the :class:`ViewSettings`, frozen-stage activations by the frozen weights as well.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageEnhance

from datamodules.decode import load_rgb
from datamodules.errors import DataError

#: bump when what a view holds changes
VIEWS_VERSION = 1


@dataclass(frozen=True)
class ViewSettings:
    """``data.views``: the fixed views each photo is trained and embedded as.

    Args:
        height, width: input size in pixels (e.g. 256 x 96 or 384 x 128 for top-view belugas;
            photos are stretched to it, as the Where's Whale-do winners did).
        views: views per photo: 1 = the photo, 2 = + its mirror image, 3+ = + seeded random crops.
        seed: seed of the random views.
    """

    height: int = 256
    width: int = 96
    views: int = 3
    seed: int = 0

    def check(self) -> None:
        for key in ("height", "width", "views"):
            value = getattr(self, key)
            if not isinstance(value, int) or value < 1 or value > 4096:
                raise DataError(f"data.views.{key}={value!r}: give a whole number from 1 to 4096.")


def _random_view(img: Image.Image, rng: np.random.Generator) -> Image.Image:
    w, h = img.size
    area = rng.uniform(0.8, 1.0)
    cw, ch = max(1, round(w * area**0.5)), max(1, round(h * area**0.5))
    left, top = int(rng.integers(0, w - cw + 1)), int(rng.integers(0, h - ch + 1))
    img = img.crop((left, top, left + cw, top + ch))
    if rng.random() < 0.5:
        img = img.transpose(Image.FLIP_LEFT_RIGHT)
    img = ImageEnhance.Brightness(img).enhance(rng.uniform(0.75, 1.25))
    return ImageEnhance.Contrast(img).enhance(rng.uniform(0.75, 1.25))


def photo_views(path: Path, index: int, settings: ViewSettings) -> np.ndarray:
    """uint8 ``(V, 3, H, W)`` views of one photo (see the module docstring)."""
    img = load_rgb(path)
    out = []
    for v in range(settings.views):
        if v == 0:
            x = img
        elif v == 1:
            x = img.transpose(Image.FLIP_LEFT_RIGHT)
        else:
            x = _random_view(img, np.random.default_rng([settings.seed, index, v]))
        x = x.resize((settings.width, settings.height), Image.BILINEAR)
        out.append(np.asarray(x, dtype=np.uint8).transpose(2, 0, 1))
    return np.stack(out)


def decode_views(paths: list[Path], settings: ViewSettings, threads: int = 4) -> np.ndarray:
    """uint8 ``(N, V, 3, H, W)``: :func:`photo_views` of every path (decoded in threads)."""
    if not paths:
        return np.zeros((0, settings.views, 3, settings.height, settings.width), np.uint8)
    with ThreadPoolExecutor(threads) as pool:
        return np.stack(
            list(pool.map(photo_views, paths, range(len(paths)), [settings] * len(paths)))
        )


def key_of(*parts) -> str:
    """sha256 of the JSON of ``parts`` (dataclasses as dicts)."""
    plain = [asdict(p) if hasattr(p, "__dataclass_fields__") else p for p in parts]
    return hashlib.sha256(json.dumps(plain, sort_keys=True, default=str).encode()).hexdigest()


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


class ArrayCache:
    """Arrays on disk by key; ``root`` None keeps nothing (every call computes)."""

    def __init__(self, root: str | Path | None):
        self.root = Path(root) if root else None

    def path(self, key: str) -> Path | None:
        return None if self.root is None else self.root / key[:2] / f"{key}.npy"

    def get(self, key: str, compute: Callable[[], np.ndarray]) -> np.ndarray:
        """The array stored under ``key``, or ``compute()`` stored there first. An entry that does
        not read back is rebuilt; a cache folder that cannot be written is simply not used."""
        path = self.path(key)
        if path is not None and path.is_file():
            try:
                return np.load(path, allow_pickle=False)
            except (OSError, ValueError, EOFError):
                pass
        value = compute()
        if path is not None:
            try:
                path.parent.mkdir(parents=True, exist_ok=True)
                fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".tmp")
                with os.fdopen(fd, "wb") as fh:
                    np.save(fh, value, allow_pickle=False)
                os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes it owner-only
                os.replace(tmp, path)
            except OSError:
                pass
        return value
