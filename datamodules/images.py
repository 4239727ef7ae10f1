"""Image decoding, the manifest's deterministic augmentation ops, and the manifest dataset."""

from __future__ import annotations

from pathlib import Path

import torch
from PIL import Image, ImageEnhance, ImageOps, UnidentifiedImageError
from torch.utils.data import Dataset
from torchvision.transforms import v2

from datamodules.errors import DataError

MEAN, STD = (0.5, 0.5, 0.5), (0.25, 0.25, 0.25)


def load_rgb(path: Path) -> Image.Image:
    """Decode an image file to RGB; a corrupt or unreadable file raises DataError naming it."""
    try:
        with Image.open(path) as im:
            im.load()
            return im.convert("RGB")
    except FileNotFoundError as exc:
        raise DataError(
            f"{path}: image not found. Restore it or drop it from the catalog."
        ) from exc
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise DataError(
            f"{path}: unreadable or corrupt image ({exc.__class__.__name__}: {exc}). Replace the "
            "file or remove it from the catalog."
        ) from exc


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


def eval_transform(image_size: int) -> v2.Compose:
    """Resize to a square of ``image_size`` px and normalise; output float32 (3, S, S)."""
    return v2.Compose(
        [
            v2.ToImage(),
            v2.Resize((image_size, image_size), antialias=True),
            v2.ToDtype(torch.float32, scale=True),
            v2.Normalize(MEAN, STD),
        ]
    )


def train_transform(image_size: int, augment: bool) -> v2.Compose:
    """Eval transform, plus random flip, small affine and colour jitter when ``augment``."""
    if not augment:
        return eval_transform(image_size)
    return v2.Compose(
        [
            v2.ToImage(),
            v2.RandomResizedCrop((image_size, image_size), scale=(0.8, 1.0), antialias=True),
            v2.RandomHorizontalFlip(),
            v2.ColorJitter(brightness=0.3, contrast=0.3),
            v2.ToDtype(torch.float32, scale=True),
            v2.Normalize(MEAN, STD),
        ]
    )


class ManifestDataset(Dataset):
    """Rows of a split manifest as ``(image (3,S,S) float32, label int64, index int64)``.

    ``index`` is the row's position in ``rows``, so per-sample outputs can be put back in order
    whatever the sampler or process did.
    """

    def __init__(self, rows: list[dict], roots: dict[str, Path], transform):
        self.rows = rows
        self.roots = {k: Path(v) for k, v in roots.items()}
        self.transform = transform

    def __len__(self) -> int:
        return len(self.rows)

    def path(self, i: int) -> Path:
        r = self.rows[i]
        return self.roots[r["catalog"]] / r["file"]

    def __getitem__(self, i: int):
        r = self.rows[i]
        img = apply_aug(load_rgb(self.path(i)), r["aug"])
        return self.transform(img), torch.tensor(int(r["label"])), torch.tensor(i)
