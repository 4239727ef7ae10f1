"""Decoding an image file and the evaluation transform, with PIL and numpy only (no torch).

:func:`load_rgb` is the one decoder of the suite (training, attacks and ``discriminate``).
:func:`eval_array` is the evaluation transform of :func:`datamodules.images.eval_transform` for
the exported target (``cli.py export``): the same resize (antialiased bilinear, squash or
letterbox), scaling and normalisation, on a numpy array. Its resize is PIL's, whose fixed-point
rounding differs from torch's uint8 kernel by at most one grey level on a few per cent of pixels;
``cli.py export`` measures what that changes in the model's outputs.
"""

from __future__ import annotations

import re
import warnings
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from datamodules.errors import DataError

MEAN, STD = (0.5, 0.5, 0.5), (0.25, 0.25, 0.25)


def load_rgb(path: Path) -> Image.Image:
    """Decode an image file to 8-bit RGB as a viewer shows it: EXIF orientation applied, every
    mode scaled to 0-255 (:func:`to_rgb`). A missing, corrupt or truncated file, or one larger
    than Pillow's decompression-bomb limit ``PIL.Image.MAX_IMAGE_PIXELS`` (checked from the
    header, before any pixel is decoded), raises DataError naming it."""
    try:
        # Pillow only warns between 1x and 2x the limit; such files are refused below instead.
        # (catch_warnings is process-wide: at worst a concurrent decode also misses that warning)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            im = Image.open(path)
        with im:
            refuse_bomb(path, *im.size)
            im.load()
            return to_rgb(im)
    except DataError:
        raise
    except FileNotFoundError as exc:
        raise DataError(
            f"{path}: image not found. Restore it or drop it from the catalog."
        ) from exc
    except Image.DecompressionBombError as exc:  # over 2x the limit: refused by Image.open
        found = re.search(r"\((\d+) pixels\)", str(exc))
        size = f"{found.group(1) if found else 'too many'} pixels"
        raise DataError(_bomb_message(path, size)) from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise DataError(
            f"{path}: unreadable or corrupt image ({exc.__class__.__name__}: {exc}). Replace the "
            "file or remove it from the catalog."
        ) from exc


def refuse_bomb(path: Path, width: int, height: int) -> None:
    """DataError when a ``width x height`` image is over ``PIL.Image.MAX_IMAGE_PIXELS`` (None:
    no limit), so it is never decoded (it could exhaust memory)."""
    limit = Image.MAX_IMAGE_PIXELS
    if limit is not None and width * height > limit:
        raise DataError(_bomb_message(path, f"{width}x{height} = {width * height} pixels"))


def _bomb_message(path: Path, size: str) -> str:
    """One line: ``path`` is over the decompression-bomb limit (``size`` says by how much)."""
    return (
        f"{path}: image of {size} is over Pillow's decompression-bomb limit "
        f"(PIL.Image.MAX_IMAGE_PIXELS={Image.MAX_IMAGE_PIXELS} pixels), so it is not decoded. "
        "Replace the file with a smaller copy or remove it from the catalog."
    )


#: integer modes wider than 8 bits, by the divisor that maps their full range onto 0-255
WIDE_INT = {"I;16": 257, "I;16B": 257, "I;16L": 257, "I;16N": 257}


def to_rgb(im: Image.Image) -> Image.Image:
    """An opened image as 8-bit RGB: EXIF orientation applied; 16-bit grey divided by 257; 32-bit
    integer ``I`` taken as 16-bit when any value exceeds 255 (PNG decoders use it for 16-bit
    grey); float ``F`` taken as 0-1 when its maximum is at most 1, else as 0-255; alpha (LA, PA,
    RGBA, P with transparency) dropped, keeping the stored colours; CMYK and YCbCr converted."""
    im = ImageOps.exif_transpose(im) or im
    if im.mode in WIDE_INT or im.mode in ("I", "F"):
        arr = np.asarray(im, dtype=np.float64)
        if im.mode in WIDE_INT:
            arr = arr / WIDE_INT[im.mode]
        elif im.mode == "I" and arr.size and arr.max() > 255:
            arr = arr / 257
        elif im.mode == "F" and arr.size and arr.max() <= 1.0:
            arr = arr * 255
        grey = Image.fromarray(np.clip(np.rint(arr), 0, 255).astype(np.uint8), "L")
        return grey.convert("RGB")
    if im.mode == "P" and "transparency" in im.info:
        im = im.convert("RGBA")
    return im.convert("RGB")


#: ``data.loader.resize`` modes: stretch to the square, or keep the aspect ratio and pad
RESIZE_MODES = ("squash", "letterbox")


def letterbox_size(h: int, w: int, size: int) -> tuple[int, int]:
    """``(h', w')`` of an ``h x w`` image scaled so its longer side is ``size`` (each >= 1 px)."""
    scale = size / max(h, w)
    return max(1, min(size, round(h * scale))), max(1, min(size, round(w * scale)))


def eval_array(
    img: Image.Image, size: int, resize: str = "squash", pad_value: int = 0
) -> np.ndarray:
    """RGB PIL image -> normalised float32 ``(3, size, size)``: resized as the run's
    ``data.loader.resize`` (``squash`` or ``letterbox`` centred on ``pad_value``, 0-255), scaled
    to 0-1 and normalised by :data:`MEAN` and :data:`STD`."""
    if resize not in RESIZE_MODES:
        raise DataError(f"data.loader.resize={resize!r}: choose one of {list(RESIZE_MODES)}.")
    w, h = img.size
    th, tw = (size, size) if resize == "squash" else letterbox_size(h, w, size)
    small = np.asarray(img.resize((tw, th), Image.BILINEAR), dtype=np.uint8)
    if (th, tw) != (size, size):
        canvas = np.full((size, size, 3), int(pad_value), dtype=np.uint8)
        top, left = (size - th) // 2, (size - tw) // 2
        canvas[top : top + th, left : left + tw] = small
        small = canvas
    x = small.transpose(2, 0, 1).astype(np.float32) / np.float32(255)
    mean = np.asarray(MEAN, dtype=np.float32)[:, None, None]
    std = np.asarray(STD, dtype=np.float32)[:, None, None]
    return (x - mean) / std
