"""PASCAL VOC 2007/2012 reader: ``VOCdevkit/VOC20xx/{Annotations, ImageSets/Main, JPEGImages}``.

Images are enumerated from ``ImageSets/Main/<set>.txt`` (never by globbing). Each
``Annotations/<id>.xml`` gives ``size`` and ``object`` entries with ``name``, ``difficult`` and a
``bndbox`` of 1-based inclusive pixel corners, converted to 0-based ``[xmin-1, ymin-1, xmax,
ymax]`` (see :mod:`datamodules.detection.records`). The ``difficult`` flags are kept.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
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

VOC_CLASSES = (
    "aeroplane",
    "bicycle",
    "bird",
    "boat",
    "bottle",
    "bus",
    "car",
    "cat",
    "chair",
    "cow",
    "diningtable",
    "dog",
    "horse",
    "motorbike",
    "person",
    "pottedplant",
    "sheep",
    "sofa",
    "train",
    "tvmonitor",
)


def find_years(root: Path, years: list[str] | None) -> list[Path]:
    """The ``VOC20xx`` folders under ``root`` (root may be the parent of ``VOCdevkit``,
    ``VOCdevkit`` itself or one ``VOC20xx`` folder)."""
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"data.root={str(root)!r} is not a folder. Point it at the VOC tree.")
    if (root / "Annotations").is_dir() and (root / "ImageSets").is_dir():
        found = [root]
    else:
        base = root / "VOCdevkit" if (root / "VOCdevkit").is_dir() else root
        found = sorted(p for p in base.glob("VOC*") if (p / "Annotations").is_dir())
    if years:
        want = {f"VOC{y}" if not str(y).startswith("VOC") else str(y) for y in years}
        found = [p for p in found if p.name in want]
    if not found:
        raise DataError(
            f"{root}: no VOCdevkit/VOC20xx folder with Annotations/ and ImageSets/ was found"
            + (f" for data.reader.years={list(years)}" if years else "")
            + ". Point data.root at the folder holding VOCdevkit."
        )
    return found


def _text(node: ET.Element, tag: str, where: str) -> str:
    child = node.find(tag)
    if child is None or child.text is None or not child.text.strip():
        raise Bad("malformed XML", f"{where}: missing <{tag}>.")
    return child.text.strip()


def parse_annotation(
    xml_path: Path,
    where: str,
    policy: str,
    report: ReadReport,
    classes: set[str] | None,
) -> tuple[int, int, np.ndarray, list[str], np.ndarray]:
    """Parse one VOC XML file: (width, height, boxes (K,4), names, difficult (K,))."""
    try:
        tree = ET.parse(xml_path)
    except ET.ParseError as exc:
        raise Bad("malformed XML", f"{where}: malformed XML ({exc}).") from exc
    ann = tree.getroot()
    size = ann.find("size")
    width = height = 0
    if size is not None:
        try:
            width = int(float(_text(size, "width", where)))
            height = int(float(_text(size, "height", where)))
        except ValueError as exc:
            raise Bad("malformed XML", f"{where}: bad <size> ({exc}).") from exc
    boxes, names, difficult = [], [], []
    for k, obj in enumerate(ann.findall("object")):
        owhere = f"{where} object {k + 1}"
        try:
            name = _text(obj, "name", owhere)
            bb = obj.find("bndbox")
            if bb is None:
                raise Bad("malformed XML", f"{owhere}: missing <bndbox>.")
            try:
                corners = [float(_text(bb, t, owhere)) for t in ("xmin", "ymin", "xmax", "ymax")]
            except ValueError as exc:
                raise Bad("malformed XML", f"{owhere}: non-numeric <bndbox> ({exc}).") from exc
            if classes is not None and name not in classes:
                raise Bad(
                    "unknown class", f"{owhere}: class {name!r} is not in data.reader.classes."
                )
            if width <= 0 or height <= 0:
                raise Bad("malformed XML", f"{where}: missing or zero <size>.")
            x0, y0, x1, y1 = corners
            box = check_box([x0 - 1, y0 - 1, x1, y1], width, height, owhere, policy, report)
        except Bad as exc:
            if exc.reason == "malformed XML":
                raise
            handle(exc, "object", owhere, policy, report, BOX_FIX)
            continue
        d = obj.find("difficult")
        boxes.append(box)
        names.append(name)
        difficult.append(d is not None and (d.text or "0").strip() == "1")
    arr = np.asarray(boxes, dtype=np.float32).reshape(-1, 4)
    return width, height, arr, names, np.asarray(difficult, dtype=bool)


def _read_voc(
    root: str | Path,
    years: list[str] | None = None,
    image_sets: list[str] | tuple[str, ...] = ("trainval",),
    classes: list[str] | None = None,
    on_invalid: str = "error",
    keep_empty: bool = False,
) -> tuple[list[DetRecord], ReadReport]:
    """Read VOC images listed in ``ImageSets/Main/<set>.txt`` of each year.

    Args:
        root: folder holding ``VOCdevkit`` (or ``VOCdevkit``, or one ``VOC20xx`` folder).
        years: e.g. ``["2007", "2012"]``; None reads every VOC20xx folder found.
        image_sets: list files under ``ImageSets/Main`` (``trainval``, ``test``, ...).
        classes: accepted class names; None accepts any (objects of other classes are bad input).
        on_invalid: ``error``, ``skip`` or ``clip`` (see :mod:`datamodules.detection.records`).
        keep_empty: keep images whose objects were all skipped (else they are skipped too).

    Returns:
        (records, report): records in list-file order, paths relative to ``root``.
    """
    policy = check_policy(on_invalid)
    root = Path(root)
    report = ReadReport()
    accept = set(classes) if classes else None
    records: list[DetRecord] = []
    seen: set[str] = set()
    for year_dir in find_years(root, years):
        for set_name in image_sets:
            lst = year_dir / "ImageSets" / "Main" / f"{set_name}.txt"
            if not lst.is_file():
                raise DataError(
                    f"{lst}: image-set list not found. Set data.reader.image_sets to lists that "
                    f"exist in {lst.parent} (e.g. trainval, test)."
                )
            for line_no, line in enumerate(lst.read_text().splitlines(), 1):
                parts = line.split()
                if not parts:
                    continue
                image_id = parts[0]
                where = f"{lst}:{line_no} ({image_id})"
                rel_dir = year_dir.resolve().relative_to(root.resolve())
                xml_rel = (rel_dir / "Annotations" / f"{image_id}.xml").as_posix()
                img_rel = (rel_dir / "JPEGImages" / f"{image_id}.jpg").as_posix()
                if img_rel in seen:
                    continue
                xml_path = resolve_inside(root, xml_rel, source=where)
                img_path = resolve_inside(root, img_rel, source=where)
                try:
                    if not xml_path.is_file():
                        raise Bad("missing annotation", f"{xml_path}: listed in {lst} but missing.")
                    if not img_path.is_file():
                        raise Bad("missing image", f"{img_path}: listed in {lst} but missing.")
                    w, h, boxes, names, diff = parse_annotation(
                        xml_path, str(xml_path), policy, report, accept
                    )
                    w, h = checked_size(img_path, w, h, xml_path)
                    if not names and not keep_empty:
                        raise Bad("no objects", f"{xml_path}: no usable objects.")
                except Bad as exc:
                    if exc.reason == "no objects":  # not corrupt: always a counted skip
                        report.note("image", exc.reason, str(xml_path))
                    else:
                        handle(exc, "image", str(xml_path), policy, report, IMAGE_FIX)
                    continue
                seen.add(img_rel)
                records.append(
                    DetRecord(img_rel, w, h, boxes, names, diff, group=img_rel, annotation=xml_rel)
                )
    return finish(records, str(root)), report


class VocReader(DetectionReader):
    """PASCAL VOC 2007/2012 under ``root`` (the folder holding ``VOCdevkit``, ``VOCdevkit`` itself
    or one ``VOC20xx`` folder).

    Args:
        years: e.g. ``["2007", "2012"]``; None reads every VOC20xx folder found.
        image_sets: list files under ``ImageSets/Main`` (``trainval``, ``test``, ...).
        classes: class names (index 1..C). None: VOC's 20 classes (or, when the data hold other
            names, the sorted names found); objects of other classes are bad input when given.
        on_invalid: ``error``, ``skip`` or ``clip`` (see :mod:`datamodules.detection.records`).
    """

    name = "voc"

    def __init__(
        self,
        years: list[str] | None = None,
        image_sets: list[str] = ["trainval"],  # noqa: B006  (jsonargparse needs a list)
        classes: list[str] | None = None,
        on_invalid: str = "error",
    ):
        self.years, self.image_sets = years, image_sets
        self.classes, self.on_invalid = classes, on_invalid

    def read(self, root: str | Path | None) -> DetCatalog:
        root = require_root(root, "VocReader", "VOCdevkit")
        recs, report = _read_voc(root, self.years, self.image_sets, self.classes, self.on_invalid)
        found = {n for r in recs for n in r.labels}
        if self.classes:
            names = list(self.classes)
        else:
            names = list(VOC_CLASSES) if found <= set(VOC_CLASSES) else sorted(found)
        return DetCatalog(root, recs, names, report)
