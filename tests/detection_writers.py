"""Tiny detection datasets written in their real on-disk formats: a VOC tree, INRIAPerson and
SynthText's gt.mat."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

VOC_XML = """<annotation>
  <folder>VOC2012</folder>
  <filename>{id}.jpg</filename>
  <size><width>{w}</width><height>{h}</height><depth>3</depth></size>
{objects}</annotation>
"""
VOC_OBJ = """  <object>
    <name>{name}</name><pose>Unspecified</pose><truncated>0</truncated>
    <difficult>{difficult}</difficult>
    <bndbox><xmin>{x0}</xmin><ymin>{y0}</ymin><xmax>{x1}</xmax><ymax>{y1}</ymax></bndbox>
  </object>
"""


def _image(path: Path, w: int, h: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8)).save(path)


def write_voc(
    root: Path,
    n: int = 12,
    size: tuple[int, int] = (64, 48),
    classes: tuple[str, ...] = ("person", "dog", "car"),
    year: str = "2012",
    objects: dict[str, list[tuple]] | None = None,
    broken_xml: tuple[str, ...] = (),
    missing_images: tuple[str, ...] = (),
) -> Path:
    """VOCdevkit/VOC<year> with ``n`` images ``img_000..``; ``objects`` overrides an image's
    objects as (name, xmin, ymin, xmax, ymax, difficult) with 1-based VOC corners."""
    voc = root / "VOCdevkit" / f"VOC{year}"
    (voc / "Annotations").mkdir(parents=True, exist_ok=True)
    (voc / "ImageSets" / "Main").mkdir(parents=True, exist_ok=True)
    w, h = size
    ids = [f"img_{i:03d}" for i in range(n)]
    for i, image_id in enumerate(ids):
        if image_id not in missing_images:
            _image(voc / "JPEGImages" / f"{image_id}.jpg", w, h, i)
        objs = (objects or {}).get(
            image_id,
            [
                (classes[i % len(classes)], 5, 6, 30, 40, 0),
                (classes[(i + 1) % len(classes)], 20, 10, 60, 45, int(i % 4 == 0)),
            ],
        )
        body = "".join(
            VOC_OBJ.format(name=o[0], x0=o[1], y0=o[2], x1=o[3], y1=o[4], difficult=o[5])
            for o in objs
        )
        text = VOC_XML.format(id=image_id, w=w, h=h, objects=body)
        if image_id in broken_xml:
            text = text[: len(text) // 2]
        (voc / "Annotations" / f"{image_id}.xml").write_text(text)
    (voc / "ImageSets" / "Main" / "trainval.txt").write_text("\n".join(ids) + "\n")
    return root


def write_inria(
    root: Path,
    n_train: int = 8,
    n_test: int = 4,
    size: tuple[int, int] = (64, 96),
    boxes: dict[str, list[tuple[int, int, int, int]]] | None = None,
) -> Path:
    """INRIAPerson/{Train,Test} with pos.lst, annotations.lst, PNG images and PASCAL v1.00 text."""
    base = root / "INRIAPerson"
    w, h = size
    k = 0
    for subset, n in (("Train", n_train), ("Test", n_test)):
        pos, ann = [], []
        for i in range(n):
            stem = f"crop_{subset.lower()}_{i:06d}"
            img_rel, ann_rel = f"{subset}/pos/{stem}.png", f"{subset}/annotations/{stem}.txt"
            _image(base / img_rel, w, h, 100 + k)
            k += 1
            bxs = (boxes or {}).get(stem, [(5, 8, 30, 90), (33, 4, 60, 80)])
            lines = [
                "# PASCAL Annotation Version 1.00",
                "",
                f'Image filename : "{img_rel}"',
                f"Image size (X x Y x C) : {w} x {h} x 3",
                'Database : "The INRIA Rural Database"',
                f"Objects with ground truth : {len(bxs)} {{ "
                + " ".join('"PASperson"' for _ in bxs)
                + " }",
                "",
            ]
            for j, (x0, y0, x1, y1) in enumerate(bxs, 1):
                lines += [
                    f'# Details for object {j} ("PASperson")',
                    f'Original label for object {j} "PASperson" : "UprightPerson"',
                    f'Center point on object {j} "PASperson" (X, Y) : ({(x0 + x1) // 2}, {y0 + 5})',
                    f'Bounding box for object {j} "PASperson" (Xmin, Ymin) - (Xmax, Ymax) : '
                    f"({x0}, {y0}) - ({x1}, {y1})",
                    "",
                ]
            (base / ann_rel).parent.mkdir(parents=True, exist_ok=True)
            (base / ann_rel).write_bytes("\n".join(lines).encode("latin-1"))
            pos.append(img_rel)
            ann.append(ann_rel)
        (base / subset / "pos.lst").write_text("\n".join(pos) + "\n")
        (base / subset / "annotations.lst").write_text("\n".join(ann) + "\n")
    return root


def write_synthtext(
    root: Path,
    n_backgrounds: int = 6,
    variants: int = 3,
    size: tuple[int, int] = (64, 48),
    single_word_every: int = 2,
) -> Path:
    """gt.mat (imnames, wordBB) + JPEGs ``<k>/<bg>_<v>.jpg``; every ``single_word_every``-th
    image has one word, stored as a squeezed 2x4 wordBB."""
    import scipy.io

    w, h = size
    names, bbs = [], []
    i = 0
    for b in range(n_backgrounds):
        for v in range(variants):
            rel = f"{b % 2 + 1}/scene{b}_{10 + b}_{v}.jpg"
            _image(root / rel, w, h, 200 + i)
            x0, y0 = 4 + v, 5 + b % 3
            quad = np.array(
                [[x0, x0 + 20, x0 + 20, x0], [y0, y0, y0 + 10, y0 + 10]], dtype=np.float64
            )
            if i % single_word_every == 0:
                bb = quad  # 2x4: one word, squeezed like MATLAB does
            else:
                bb = np.stack([quad, quad + np.array([[25.0], [20.0]])], axis=2)  # 2x4x2
            names.append(np.array([rel]))
            bbs.append(bb)
            i += 1
    imnames = np.empty((1, len(names)), dtype=object)
    wordbb = np.empty((1, len(bbs)), dtype=object)
    for k in range(len(names)):
        imnames[0, k] = names[k]
        wordbb[0, k] = bbs[k]
    scipy.io.savemat(root / "gt.mat", {"imnames": imnames, "wordBB": wordbb})
    return root
