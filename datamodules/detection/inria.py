"""INRIA Person reader: ``INRIAPerson/{Train,Test}/{pos.lst, annotations.lst, pos/, annotations/}``.

``<Subset>/pos.lst`` lists the positive images (``Train/pos/crop_000010.png``), paths relative to
the ``INRIAPerson`` folder; ``<Subset>/annotations.lst`` lists the annotation files. Annotations
are PASCAL Annotation Version 1.00 text, read as latin-1::

    Image filename : "Train/pos/crop_000010.png"
    Image size (X x Y x C) : 594 x 720 x 3
    Bounding box for object 1 "PASperson" (Xmin, Ymin) - (Xmax, Ymax) : (194, 127) - (413, 647)

Corners are 1-based inclusive (PASCAL), converted as for VOC. Every object is one class,
``person``. An image is matched to its annotation by file stem.
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
    checked_size,
    finish,
    handle,
    require_root,
)
from datamodules.errors import DataError, resolve_inside

INRIA_CLASSES = ("person",)
_BOX = re.compile(
    r'Bounding box for object (\d+) "([^"]*)" \(Xmin, Ymin\) - \(Xmax, Ymax\) : '
    r"\(\s*(-?[\d.]+)\s*,\s*(-?[\d.]+)\s*\) - \(\s*(-?[\d.]+)\s*,\s*(-?[\d.]+)\s*\)"
)
_SIZE = re.compile(r"Image size \(X x Y x C\) : (\d+) x (\d+)")
_NAME = re.compile(r'Image filename : "([^"]+)"')


def find_inria(root: Path) -> Path:
    """The ``INRIAPerson`` folder: ``root`` itself or ``root/INRIAPerson``."""
    root = Path(root)
    for cand in (root / "INRIAPerson", root):
        if (cand / "Train").is_dir() or (cand / "Test").is_dir():
            return cand
    raise DataError(
        f"data.root={str(root)!r}: no INRIAPerson/Train or INRIAPerson/Test folder found. Point "
        "data.root at the folder holding INRIAPerson."
    )


def parse_inria_annotation(
    path: Path, policy: str, report: ReadReport
) -> tuple[str, int, int, np.ndarray]:
    """Parse one PASCAL v1.00 file: (image filename, width, height, boxes (K,4) 0-based)."""
    try:
        text = path.read_bytes().decode("latin-1")
    except OSError as exc:
        raise Bad("unreadable annotation", f"{path}: unreadable ({exc}).") from exc
    name = _NAME.search(text)
    size = _SIZE.search(text)
    if name is None or size is None:
        raise Bad(
            "malformed annotation",
            f"{path}: not a PASCAL Annotation v1.00 file (no 'Image filename' or 'Image size').",
        )
    width, height = int(size.group(1)), int(size.group(2))
    boxes = []
    for m in _BOX.finditer(text):
        where = f"{path} object {m.group(1)}"
        x0, y0, x1, y1 = (float(m.group(i)) for i in range(3, 7))
        try:
            boxes.append(check_box([x0 - 1, y0 - 1, x1, y1], width, height, where, policy, report))
        except Bad as exc:
            handle(exc, "object", where, policy, report, BOX_FIX)
    n_declared = text.count("Bounding box for object")
    if n_declared != len(_BOX.findall(text)):
        raise Bad("malformed annotation", f"{path}: a 'Bounding box for object' line is malformed.")
    return name.group(1), width, height, np.asarray(boxes, dtype=np.float32).reshape(-1, 4)


def _read_inria(
    root: str | Path,
    subsets: list[str] | tuple[str, ...] = ("Train", "Test"),
    on_invalid: str = "error",
) -> tuple[list[DetRecord], ReadReport]:
    """Read the positive images of the given subsets (``Train``, ``Test``).

    Returns records (paths relative to ``root``) in ``pos.lst`` order and the skip report.
    """
    policy = check_policy(on_invalid)
    root = Path(root)
    base = find_inria(root)
    prefix = base.resolve().relative_to(root.resolve())
    report = ReadReport()
    records: list[DetRecord] = []
    for subset in subsets:
        pos_lst = base / subset / "pos.lst"
        ann_lst = base / subset / "annotations.lst"
        for lst in (pos_lst, ann_lst):
            if not lst.is_file():
                raise DataError(
                    f"{lst}: list file not found. INRIA needs {subset}/pos.lst and "
                    f"{subset}/annotations.lst; set data.reader.subsets to the subsets present."
                )
        ann_by_stem = {}
        for line in ann_lst.read_text(encoding="latin-1").splitlines():
            if line.strip():
                ann_by_stem[Path(line.strip()).stem] = line.strip()
        for line_no, line in enumerate(pos_lst.read_text(encoding="latin-1").splitlines(), 1):
            rel = line.strip()
            if not rel:
                continue
            where = f"{pos_lst}:{line_no}"
            img_rel = (prefix / rel).as_posix()
            img_path = resolve_inside(root, img_rel, source=where)
            ann = ann_by_stem.get(Path(rel).stem)
            try:
                if ann is None:
                    raise Bad(
                        "missing annotation", f"{where}: {rel} has no entry in {ann_lst.name}."
                    )
                ann_rel = (prefix / ann).as_posix()
                ann_path = resolve_inside(root, ann_rel, source=f"{ann_lst}")
                if not ann_path.is_file():
                    raise Bad("missing annotation", f"{ann_path}: listed in {ann_lst} but missing.")
                if not img_path.is_file():
                    raise Bad("missing image", f"{img_path}: listed in {pos_lst} but missing.")
                _, w, h, boxes = parse_inria_annotation(ann_path, policy, report)
                w, h = checked_size(img_path, w, h, ann_path)
                if len(boxes) == 0:
                    report.note("image", "no objects", str(ann_path))
                    continue
            except Bad as exc:
                handle(exc, "image", where, policy, report, IMAGE_FIX)
                continue
            records.append(
                DetRecord(
                    img_rel,
                    w,
                    h,
                    boxes,
                    ["person"] * len(boxes),
                    np.zeros(len(boxes), dtype=bool),
                    group=img_rel,
                    annotation=ann_rel,
                )
            )
    return finish(records, str(root)), report


class InriaReader(DetectionReader):
    """INRIA Person positives under ``root`` (the folder holding ``INRIAPerson``, or it itself);
    one class, ``person``.

    Args:
        subsets: ``Train`` and/or ``Test`` (pooled).
        on_invalid: ``error``, ``skip`` or ``clip`` (see :mod:`datamodules.detection.records`).
    """

    name = "inria"

    def __init__(
        self,
        subsets: list[str] = ["Train", "Test"],  # noqa: B006  (jsonargparse needs a list)
        on_invalid: str = "error",
    ):
        self.subsets, self.on_invalid = subsets, on_invalid

    def read(self, root: str | Path | None) -> DetCatalog:
        root = require_root(root, "InriaReader", "INRIAPerson")
        recs, report = _read_inria(root, self.subsets, self.on_invalid)
        return DetCatalog(root, recs, list(INRIA_CLASSES), report)
