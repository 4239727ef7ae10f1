"""Common record type of the detection readers and the bad-input policy.

Boxes are stored in 0-based pixel corners ``[x0, y0, x1, y1]`` (float, x1/y1 exclusive), so a
VOC box with 1-based inclusive corners ``(xmin, ymin, xmax, ymax)`` becomes
``[xmin - 1, ymin - 1, xmax, ymax]``.

Bad input follows ``on_invalid``:

* ``error`` (default): raise :class:`~datamodules.errors.DataError` naming the file and the object.
* ``skip``: drop the bad object (box outside the image, zero-area box, unknown class) or the whole
  image (malformed annotation, listed but missing image, image left without objects); every skip
  is counted by reason in :class:`ReadReport`, logged, and saved in the manifest header.
* ``clip``: like ``skip``, but boxes reaching outside the image are clipped to it first (useful for
  INRIA and SynthText, whose boxes often overhang the border by a few pixels).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from datamodules.errors import DataError

POLICIES = ("error", "skip", "clip")


@dataclass
class DetRecord:
    """One image and its objects.

    Attributes:
        file: image path relative to the dataset root (POSIX).
        width, height: image size in pixels.
        boxes: (K, 4) float32, 0-based pixel corners ``x0, y0, x1, y1``.
        labels: K class names.
        difficult: (K,) bool, VOC ``difficult`` flags (all False elsewhere).
        group: images of one group stay on one side of the split (SynthText background).
        annotation: annotation path relative to the root ("" when in a shared file).
    """

    file: str
    width: int
    height: int
    boxes: np.ndarray
    labels: list[str]
    difficult: np.ndarray
    group: str = ""
    annotation: str = ""


@dataclass
class DetCatalog:
    """What a detection reader read: the data root, its images, the class names (index k is
    label k + 1; 0 is background) and the skip report."""

    root: Path
    records: list[DetRecord]
    classes: list[str]
    report: ReadReport


class DetectionReader:
    """How to read a detection data root; the config picks one by ``class_path``/``init_args``.

    Subclasses set ``name`` (the manifest's ``dataset`` column) and implement :meth:`read`.
    """

    name = ""

    def read(self, root: str | Path | None) -> DetCatalog:
        """The images and objects under ``root`` (``data.root``)."""
        raise NotImplementedError

    def settings(self) -> dict:
        """Constructor arguments, saved in the manifest header."""
        return dict(vars(self))


def require_root(root: str | Path | None, reader: str, holding: str) -> Path:
    """``root`` as a Path; DataError naming ``data.root`` when it is not set."""
    if not root:
        raise DataError(f"data.root is required for {reader} (the folder holding {holding}).")
    return Path(root)


@dataclass
class ReadReport:
    """What a reader skipped, by reason, with a few example files per reason."""

    skipped_images: Counter = field(default_factory=Counter)
    skipped_objects: Counter = field(default_factory=Counter)
    clipped_boxes: int = 0
    examples: dict[str, list[str]] = field(default_factory=dict)

    def note(self, kind: str, reason: str, where: str) -> None:
        (self.skipped_images if kind == "image" else self.skipped_objects)[reason] += 1
        ex = self.examples.setdefault(reason, [])
        if len(ex) < 5:
            ex.append(where)

    @property
    def n_skipped_images(self) -> int:
        return sum(self.skipped_images.values())

    @property
    def n_skipped_objects(self) -> int:
        return sum(self.skipped_objects.values())

    def summary(self) -> str:
        """One line, e.g. ``skipped 2 images (missing image: 1, malformed XML: 1), 3 objects...``."""
        parts = []
        for label, counter in (("images", self.skipped_images), ("objects", self.skipped_objects)):
            if counter:
                inner = ", ".join(f"{k}: {v}" for k, v in sorted(counter.items()))
                parts.append(f"skipped {sum(counter.values())} {label} ({inner})")
        if self.clipped_boxes:
            parts.append(f"clipped {self.clipped_boxes} boxes to the image")
        return "; ".join(parts) if parts else "nothing skipped"

    def as_dict(self) -> dict:
        return {
            "skipped_images": dict(self.skipped_images),
            "skipped_objects": dict(self.skipped_objects),
            "clipped_boxes": self.clipped_boxes,
            "examples": self.examples,
        }


def check_policy(on_invalid: str) -> str:
    if on_invalid not in POLICIES:
        raise DataError(f"data.reader.on_invalid={on_invalid!r}: choose one of {list(POLICIES)}.")
    return on_invalid


class Bad(Exception):
    """Internal: one bad image or object, with a reason key and a message."""

    def __init__(self, reason: str, message: str):
        super().__init__(message)
        self.reason = reason


def handle(exc: Bad, kind: str, where: str, policy: str, report: ReadReport, fix: str) -> None:
    """Raise a DataError under ``error``; otherwise count the skip."""
    if policy == "error":
        raise DataError(f"{exc} {fix}") from None
    report.note(kind, exc.reason, where)


def check_box(
    box: list[float] | np.ndarray,
    width: int,
    height: int,
    where: str,
    policy: str,
    report: ReadReport,
) -> np.ndarray | None:
    """Validate one ``[x0, y0, x1, y1]`` box (0-based corners) against the image size.

    Returns the (possibly clipped) box, or None when the box is skipped. Raises ``Bad`` for the
    caller's policy handling when the box is outside the image or has zero area.
    """
    b = np.asarray(box, dtype=np.float64)
    if not np.all(np.isfinite(b)):
        raise Bad("non-finite box", f"{where}: box {b.tolist()} has non-finite corners.")
    outside = b[0] < 0 or b[1] < 0 or b[2] > width or b[3] > height
    if outside:
        if policy == "clip":
            c = np.array(
                [max(b[0], 0), max(b[1], 0), min(b[2], width), min(b[3], height)], dtype=np.float64
            )
            if c[2] > c[0] and c[3] > c[1]:
                report.clipped_boxes += 1
                return c.astype(np.float32)
        raise Bad(
            "box outside image",
            f"{where}: box {b.tolist()} (0-based x0,y0,x1,y1) lies outside the {width}x{height} "
            "image.",
        )
    if b[2] <= b[0] or b[3] <= b[1]:
        raise Bad(
            "zero-area box",
            f"{where}: box {b.tolist()} (0-based x0,y0,x1,y1) has zero or negative area.",
        )
    return b.astype(np.float32)


BOX_FIX = (
    "Fix the annotation, or set data.reader.on_invalid=skip (drop the object, count shown) or "
    "data.reader.on_invalid=clip (clip overhanging boxes to the image)."
)
IMAGE_FIX = (
    "Fix or remove the entry, or set data.reader.on_invalid=skip to leave the image out (counted)."
)


def image_size(path: Path) -> tuple[int, int]:
    """(width, height) from the image header; DataError when the file is unreadable."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            return int(im.width), int(im.height)
    except (UnidentifiedImageError, OSError, ValueError) as exc:
        raise Bad("unreadable image", f"{path}: unreadable image ({exc}).") from exc


def checked_size(img_path: Path, w: int, h: int, ann_path: Path) -> tuple[int, int]:
    """The image's (width, height): the annotation's, which must match the file's header, or the
    file's when the annotation gives none (``w`` or ``h`` <= 0). A mismatch raises ``Bad``."""
    iw, ih = image_size(img_path)
    if w > 0 and h > 0 and (w, h) != (iw, ih):
        raise Bad(
            "size mismatch",
            f"{ann_path}: annotated size {w}x{h} but {img_path.name} is {iw}x{ih}; the boxes "
            "would be misplaced. Fix the annotation or the image.",
        )
    return iw, ih


def finish(records: list[DetRecord], source: str) -> list[DetRecord]:
    if not records:
        raise DataError(
            f"{source}: no usable images were read. Check the data root and the image sets."
        )
    return records
