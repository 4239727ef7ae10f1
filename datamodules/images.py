"""Image decoding, the manifest's deterministic augmentation ops, and the manifest dataset.

The pipeline has two stages. The deterministic one (decode, manifest aug such as ``rot90``, resize
to ``S x S``, squashed or letterboxed) gives a uint8 ``(3, S, S)`` tensor (:func:`decode_resized`) and is what
:class:`~datamodules.image_cache.ImageCache` stores. The cheap one runs on that tensor each time:
:func:`normalize_transform`, or the random train augmentation either per sample on the CPU
(:func:`augment_transform`) or batch-wise on the batch's device (:func:`augment_batch`).
"""

from __future__ import annotations

import functools
import math
from pathlib import Path

import torch
import torch.nn.functional as F
from PIL import Image, ImageEnhance, ImageOps
from torch.utils.data import Dataset
from torchvision.transforms import InterpolationMode, v2
from torchvision.transforms.v2 import functional as TF

from datamodules.decode import (  # noqa: F401  (re-exported: the decoders live in decode.py)
    MEAN,
    RESIZE_MODES,
    STD,
    WIDE_INT,
    letterbox_size,
    load_rgb,
    to_rgb,
)
from datamodules.errors import DataError
from datamodules.image_cache import DecodeSettings, FileHasher, ImageCache


def apply_aug(img: Image.Image, spec: str) -> Image.Image:
    """Apply a manifest augmentation spec such as ``rot90``, ``bright:0.731``, ``rot330+hflip``.

    Rotations are clockwise by the given degrees (the paper's 90/180/270/330), with the canvas
    expanded so nothing is cropped. A ``~k`` suffix only makes a key unique and changes nothing.
    """
    if not spec:
        return img
    for op in spec.split("~")[0].split("+"):
        if op.startswith("rot"):
            img = img.rotate(-int(op[3:]), resample=Image.BILINEAR, expand=True)
        elif op.startswith("bright:"):
            img = ImageEnhance.Brightness(img).enhance(float(op.split(":", 1)[1]))
        elif op == "hflip":
            img = ImageOps.mirror(img)
        elif op in ("", "copy"):
            continue
        else:
            raise DataError(f"unknown augmentation op {op!r} in manifest aug {spec!r}.")
    return img


def eval_transform(image_size: int, resize: str = "squash", pad_value: int = 0) -> v2.Compose:
    """Resize to a square of ``image_size`` px (``resize``: ``squash`` or ``letterbox`` on
    ``pad_value``, as :func:`resize_uint8`) and normalise; PIL in, float32 ``(3, S, S)`` out."""
    if resize == "squash":
        return v2.Compose(
            [
                v2.ToImage(),
                v2.Resize((image_size, image_size), antialias=True),
                v2.ToDtype(torch.float32, scale=True),
                v2.Normalize(MEAN, STD),
            ]
        )
    settings = DecodeSettings(image_size, resize=resize, pad_value=pad_value)
    return v2.Compose(
        [
            functools.partial(resize_uint8, settings=settings),
            v2.ToDtype(torch.float32, scale=True),
            v2.Normalize(MEAN, STD),
        ]
    )


# ---- the two-stage pipeline -----------------------------------------------------------------
JITTER = 0.3
CROP_SCALE = (0.8, 1.0)
CROP_RATIO = (3 / 4, 4 / 3)


def resize_uint8(img: Image.Image, settings: DecodeSettings) -> torch.Tensor:
    """PIL image -> uint8 ``(3, S, S)`` tensor.

    ``settings.resize``: ``squash`` stretches the image to ``S x S`` (as :func:`eval_transform`);
    ``letterbox`` scales its longer side to ``S``, keeping the aspect ratio, and centres it on an
    ``S x S`` canvas of ``settings.pad_value`` (0-255, every channel).
    """
    if settings.resize not in RESIZE_MODES:
        raise DataError(
            f"data.loader.resize={settings.resize!r}: choose one of {list(RESIZE_MODES)}."
        )
    x = TF.pil_to_tensor(img)
    s = settings.image_size
    h, w = (s, s) if settings.resize == "squash" else letterbox_size(*x.shape[-2:], s)
    x = TF.resize(
        x,
        [h, w],
        interpolation=InterpolationMode(settings.interpolation),
        antialias=settings.antialias,
    )
    if (h, w) == (s, s):
        return x.contiguous()
    out = torch.full((x.shape[0], s, s), int(settings.pad_value), dtype=torch.uint8)
    top, left = (s - h) // 2, (s - w) // 2
    out[:, top : top + h, left : left + w] = x
    return out


def decode_resized(path: Path, aug: str, settings: DecodeSettings) -> torch.Tensor:
    """Decode ``path``, apply the manifest ``aug`` and resize: the cached uint8 ``(3, S, S)``."""
    return resize_uint8(apply_aug(load_rgb(path), aug), settings)


def normalize_transform() -> v2.Compose:
    """uint8 ``(3, S, S)`` -> normalised float32: the rest of :func:`eval_transform`."""
    return v2.Compose([v2.ToDtype(torch.float32, scale=True), v2.Normalize(MEAN, STD)])


def augment_transform(image_size: int) -> v2.Compose:
    """Per-sample CPU train augmentation of a resized uint8 ``(3, S, S)``, then normalisation.

    The random crop is taken from the resized (cached) image, not the full-size photo.
    """
    return v2.Compose(
        [
            v2.RandomResizedCrop(
                (image_size, image_size), scale=CROP_SCALE, ratio=CROP_RATIO, antialias=True
            ),
            v2.RandomHorizontalFlip(),
            v2.ColorJitter(brightness=JITTER, contrast=JITTER),
            v2.ToDtype(torch.float32, scale=True),
            v2.Normalize(MEAN, STD),
        ]
    )


def normalize_batch(x: torch.Tensor) -> torch.Tensor:
    """uint8 (or [0, 1] float) ``(B, 3, S, S)`` -> normalised float32, on ``x``'s device."""
    x = x.float().div_(255) if x.dtype == torch.uint8 else x.float()
    mean = torch.tensor(MEAN, device=x.device).view(1, 3, 1, 1)
    std = torch.tensor(STD, device=x.device).view(1, 3, 1, 1)
    return (x - mean) / std


@torch.no_grad()
def augment_batch(x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """Batch-wise train augmentation on ``x``'s device; uint8 ``(B, 3, S, S)`` -> normalised float.

    Per sample, as :func:`augment_transform`: a random resized crop (area 0.8-1, aspect 3/4-4/3,
    clamped to the image instead of torchvision's retries), a horizontal flip with p=0.5 (both one
    ``grid_sample``), then brightness and contrast factors in ``1 +- 0.3`` (in that order). The
    random numbers come from ``generator``, else the device's global generator, so
    ``seed_everything`` makes it repeatable.
    """
    x = x.float().div_(255) if x.dtype == torch.uint8 else x.float()
    b, _, h, w = x.shape
    if b == 0:
        return normalize_batch(x)
    r = torch.rand(b, 7, device=x.device, generator=generator)
    area = CROP_SCALE[0] + (CROP_SCALE[1] - CROP_SCALE[0]) * r[:, 0]
    lo, hi = math.log(CROP_RATIO[0]), math.log(CROP_RATIO[1])
    aspect = torch.exp(lo + (hi - lo) * r[:, 1]) * (h / w)
    cw = torch.sqrt(area * aspect).clamp(max=1.0)  # crop width / image width
    ch = torch.sqrt(area / aspect).clamp(max=1.0)
    flip = torch.where(r[:, 4] < 0.5, -1.0, 1.0)
    theta = torch.zeros(b, 2, 3, device=x.device)
    theta[:, 0, 0] = cw * flip
    theta[:, 0, 2] = (1 - cw) * (2 * r[:, 2] - 1)  # crop centre, in [-1, 1] coordinates
    theta[:, 1, 1] = ch
    theta[:, 1, 2] = (1 - ch) * (2 * r[:, 3] - 1)
    grid = F.affine_grid(theta, [b, 3, h, w], align_corners=False)
    x = F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)
    bright = (1 + JITTER * (2 * r[:, 5] - 1)).view(b, 1, 1, 1)
    x = (x * bright).clamp_(0, 1)
    contrast = (1 + JITTER * (2 * r[:, 6] - 1)).view(b, 1, 1, 1)
    gray = (0.2989 * x[:, 0] + 0.587 * x[:, 1] + 0.114 * x[:, 2]).mean(dim=(1, 2))
    gray = gray.view(b, 1, 1, 1)
    x = ((x - gray) * contrast + gray).clamp_(0, 1)
    return normalize_batch(x)


class ManifestDataset(Dataset):
    """Rows of a split manifest as ``(image (3,S,S) float32, label int64, index int64)``.

    ``index`` is the row's position in ``rows``, so per-sample outputs can be put back in order
    whatever the sampler or process did.

    Without ``image_size``, ``transform`` gets the decoded, manifest-augmented PIL image (e.g.
    :func:`eval_transform`). With ``image_size``, the image is first resized to a uint8
    ``(3, S, S)`` tensor (:func:`decode_resized`), read from / written to ``cache`` when given
    (keyed by the file's sha256 from ``hasher``), and ``transform`` gets that tensor (e.g.
    :func:`normalize_transform`); ``transform=None`` returns it as is. The resize follows the
    cache's settings, else ``decode`` (e.g. ``letterbox``), else a squash to ``image_size``.
    """

    def __init__(
        self,
        rows: list[dict],
        roots: dict[str, Path],
        transform,
        *,
        image_size: int | None = None,
        cache: ImageCache | None = None,
        hasher: FileHasher | None = None,
        decode: DecodeSettings | None = None,
    ):
        self.rows = rows
        self.roots = {k: Path(v) for k, v in roots.items()}
        self.transform = transform
        if cache is not None:
            if image_size not in (None, cache.settings.image_size):
                raise ValueError(
                    f"image cache is for {cache.settings.image_size} px, dataset for {image_size} px."
                )
            self.settings: DecodeSettings | None = cache.settings
        elif decode is not None:
            self.settings = decode
        else:
            self.settings = DecodeSettings(image_size) if image_size is not None else None
        self.cache = cache
        self.hasher = hasher if hasher is not None else FileHasher()

    def __len__(self) -> int:
        return len(self.rows)

    def path(self, i: int) -> Path:
        r = self.rows[i]
        return self.roots[r["catalog"]] / r["file"]

    def resized(self, i: int) -> torch.Tensor:
        """Row ``i`` decoded, manifest-augmented and resized: uint8 ``(3, S, S)``, via the cache."""
        r, path = self.rows[i], self.path(i)
        if self.cache is None:
            return decode_resized(path, r["aug"], self.settings)
        try:
            file_hash = self.hasher(path)
        except OSError:  # missing or unreadable: let the decoder raise the DataError naming it
            return decode_resized(path, r["aug"], self.settings)
        return self.cache.get(
            file_hash, r["aug"], lambda: decode_resized(path, r["aug"], self.settings)
        )

    def cache_keys(self) -> set[str]:
        """Cache keys of every row (hashes each file not hashed yet), e.g. for ``prune``."""
        if self.cache is None:
            return set()
        return {
            self.cache.key(self.hasher(self.path(i)), r["aug"]) for i, r in enumerate(self.rows)
        }

    def __getitem__(self, i: int):
        r = self.rows[i]
        if self.settings is None:
            img = apply_aug(load_rgb(self.path(i)), r["aug"])
        else:
            img = self.resized(i)
        x = img if self.transform is None else self.transform(img)
        return x, torch.tensor(int(r["label"])), torch.tensor(i)
