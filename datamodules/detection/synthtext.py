"""SynthText reader: ``gt.mat`` with ``imnames`` and ``wordBB``; images under the same root.

``imnames{i}`` is an image path relative to the root (``8/ballet_106_0.jpg``). ``wordBB{i}`` holds
the word quadrilaterals as a 2x4xN array (row 0: x, row 1: y, 0-based pixel coordinates, four
corners); a single word squeezes to 2x4. Each quadrilateral becomes its axis-aligned bounding box.
All words form one class, ``text``.

Images rendered from one background are named ``<background>_<N>.jpg``; their ``group`` is the
background name without the folder and the ``_N`` suffix, so the split keeps them on one side.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from datamodules.detection.records import (
    BOX_FIX,
    IMAGE_FIX,
    Bad,
    DetCatalog,
    DetectionReader,
    DetRecord,
    ReadReport,
    check_box,
    check_policy,
    finish,
    handle,
    image_size,
    require_root,
)
from datamodules.errors import DataError, resolve_inside

SYNTHTEXT_CLASSES = ("text",)
_VARIANT = re.compile(r"_\d+$")


def background_of(imname: str) -> str:
    """``8/ballet_106_0.jpg`` -> ``ballet_106`` (the background shared by its variants)."""
    return _VARIANT.sub("", Path(imname).stem)


def _cell(arr: np.ndarray, i: int) -> np.ndarray:
    return arr.ravel()[i]


def _name(cell) -> str:
    a = np.asarray(cell)
    return str(a.ravel()[0]) if a.size else ""


def word_boxes(bb) -> np.ndarray:
    """(N, 4) ``x0, y0, x1, y1`` from a 2x4xN (or squeezed 2x4) wordBB entry."""
    a = np.asarray(bb, dtype=np.float64)
    if a.ndim == 2:
        a = a[:, :, None]
    if a.ndim != 3 or a.shape[:2] != (2, 4):
        raise Bad("malformed wordBB", f"wordBB entry has shape {a.shape}; expected 2x4xN or 2x4.")
    xs, ys = a[0], a[1]  # (4, N)
    return np.stack([xs.min(0), ys.min(0), xs.max(0), ys.max(0)], axis=1)


def _read_synthtext(
    root: str | Path,
    gt_file: str = "gt.mat",
    limit: int | None = None,
    on_invalid: str = "error",
) -> tuple[list[DetRecord], ReadReport]:
    """Read ``root/gt_file`` in its own order (the first ``limit`` entries when given).

    Image sizes come from the image headers (the file carries none).
    """
    import scipy.io

    policy = check_policy(on_invalid)
    root = Path(root)
    gt_path = root / gt_file
    if not gt_path.is_file():
        raise DataError(
            f"{gt_path}: SynthText ground truth not found. Point data.root at the folder holding "
            "gt.mat (set data.reader.gt_file for another name)."
        )
    try:
        gt = scipy.io.loadmat(gt_path, variable_names=["imnames", "wordBB"])
    except Exception as exc:  # scipy raises several types for corrupt files
        raise DataError(f"{gt_path}: unreadable .mat file ({exc}).") from exc
    for key in ("imnames", "wordBB"):
        if key not in gt:
            raise DataError(f"{gt_path}: no {key!r} variable; a SynthText gt.mat needs it.")
    names, bbs = gt["imnames"], gt["wordBB"]
    n = names.size
    if bbs.size != n:
        raise DataError(f"{gt_path}: imnames has {n} entries but wordBB has {bbs.size}.")
    if limit is not None:
        n = min(n, int(limit))
    report = ReadReport()
    records: list[DetRecord] = []
    for i in range(n):
        imname = _name(_cell(names, i))
        where = f"{gt_path} entry {i} ({imname})"
        try:
            if not imname:
                raise Bad("malformed entry", f"{where}: empty image name.")
            img_path = resolve_inside(root, imname, source=where)
            if not img_path.is_file():
                raise Bad("missing image", f"{img_path}: listed in {gt_path} but missing.")
            w, h = image_size(img_path)
            raw = word_boxes(_cell(bbs, i))
        except Bad as exc:
            handle(exc, "image", where, policy, report, IMAGE_FIX)
            continue
        boxes = []
        for k, b in enumerate(raw):
            owhere = f"{where} word {k}"
            try:
                boxes.append(check_box(b, w, h, owhere, policy, report))
            except Bad as exc:
                handle(exc, "object", owhere, policy, report, BOX_FIX)
        if not boxes:
            report.note("image", "no objects", where)
            continue
        arr = np.asarray(boxes, dtype=np.float32).reshape(-1, 4)
        records.append(
            DetRecord(
                Path(imname).as_posix(),
                w,
                h,
                arr,
                ["text"] * len(arr),
                np.zeros(len(arr), dtype=bool),
                group=background_of(imname),
                annotation=gt_file,
            )
        )
    return finish(records, str(gt_path)), report


class SynthTextReader(DetectionReader):
    """SynthText under ``root`` (the folder holding ``gt.mat`` and the images); one class, ``text``.

    Args:
        gt_file: ground-truth file under ``root``.
        limit: read only the first ``limit`` entries of ``gt_file`` (None: all).
        on_invalid: ``error``, ``skip`` or ``clip`` (see :mod:`datamodules.detection.records`).
    """

    name = "synthtext"

    def __init__(
        self, gt_file: str = "gt.mat", limit: int | None = None, on_invalid: str = "error"
    ):
        self.gt_file, self.limit, self.on_invalid = gt_file, limit, on_invalid

    def read(self, root: str | Path | None) -> DetCatalog:
        root = require_root(root, "SynthTextReader", "gt.mat")
        recs, report = _read_synthtext(root, self.gt_file, self.limit, self.on_invalid)
        return DetCatalog(root, recs, list(SYNTHTEXT_CLASSES), report)
