"""Built-in synthetic detection data: a small PASCAL VOC tree of shapes on textured backgrounds.

``generate(root, settings)`` writes ``root/VOCdevkit/VOC2012/{JPEGImages, Annotations,
ImageSets/Main/trainval.txt}`` with real VOC XML (1-based corners, ``difficult`` set for objects
whose shorter side is under 12% of the image). The demo and the tests read it back with the real
VOC reader. Generation is deterministic in ``settings`` and atomic (temp folder renamed).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from datamodules.detection.records import DetCatalog, DetectionReader
from datamodules.detection.voc import VocReader
from datamodules.generated import write_once

SHAPES = ("circle", "square", "triangle", "cross")


@dataclass
class SyntheticVOC:
    """Settings of the generated tree (sizes in pixels)."""

    n_images: int = 240
    image_size: int = 96
    min_objects: int = 1
    max_objects: int = 4
    n_classes: int = 4
    noise: float = 0.25
    seed: int = 0

    def key(self) -> str:
        """Folder name that changes whenever a setting changes."""
        return "synthvoc_" + "_".join(f"{k[:3]}{v}" for k, v in asdict(self).items())


def _background(rng: np.random.Generator, size: int, noise: float) -> np.ndarray:
    """Textured background (size, size, 3) uint8: coloured low-frequency noise plus stripes."""
    coarse = rng.uniform(0, 1, (6, 6, 3))
    img = np.asarray(
        Image.fromarray((coarse * 255).astype(np.uint8)).resize((size, size), Image.BICUBIC),
        dtype=np.float64,
    )
    yy, xx = np.mgrid[0:size, 0:size] / size
    theta = rng.uniform(0, np.pi)
    freq = rng.uniform(3, 12)
    stripes = np.sin(2 * np.pi * freq * (np.cos(theta) * xx + np.sin(theta) * yy))
    img = 0.6 * img + 40 * stripes[..., None] * rng.uniform(0.3, 1.0, 3)
    img += rng.normal(0, 255 * noise * 0.3, img.shape)
    return np.clip(img, 0, 255).astype(np.uint8)


def _draw(draw: ImageDraw.ImageDraw, shape: str, box: tuple[int, int, int, int], colour) -> None:
    x0, y0, x1, y1 = box  # inclusive pixel corners
    if shape == "circle":
        draw.ellipse([x0, y0, x1, y1], fill=colour)
    elif shape == "square":
        draw.rectangle([x0, y0, x1, y1], fill=colour)
    elif shape == "triangle":
        draw.polygon([((x0 + x1) / 2, y0), (x0, y1), (x1, y1)], fill=colour)
    else:  # cross
        w, h = x1 - x0, y1 - y0
        draw.rectangle([x0 + w // 3, y0, x1 - w // 3, y1], fill=colour)
        draw.rectangle([x0, y0 + h // 3, x1, y1 - h // 3], fill=colour)


def _xml(
    image_id: str, size: int, objects: list[tuple[str, tuple[int, int, int, int], int]]
) -> str:
    parts = [
        "<annotation>",
        "  <folder>VOC2012</folder>",
        f"  <filename>{image_id}.jpg</filename>",
        "  <source><database>synthetic shapes</database></source>",
        f"  <size><width>{size}</width><height>{size}</height><depth>3</depth></size>",
        "  <segmented>0</segmented>",
    ]
    for name, (x0, y0, x1, y1), difficult in objects:
        # VOC corners are 1-based and inclusive
        parts += [
            "  <object>",
            f"    <name>{name}</name>",
            "    <pose>Unspecified</pose>",
            "    <truncated>0</truncated>",
            f"    <difficult>{difficult}</difficult>",
            f"    <bndbox><xmin>{x0 + 1}</xmin><ymin>{y0 + 1}</ymin>"
            f"<xmax>{x1 + 1}</xmax><ymax>{y1 + 1}</ymax></bndbox>",
            "  </object>",
        ]
    parts.append("</annotation>")
    return "\n".join(parts) + "\n"


def generate(root: str | Path, settings: SyntheticVOC) -> Path:
    """Write the VOC tree to ``root`` unless ``root/synthetic.json`` already matches ``settings``.

    Returns ``root``. Raises FileExistsError if ``root`` holds something else.
    """
    s = settings
    if not 1 <= s.n_classes <= len(SHAPES):
        raise ValueError(f"synthetic.n_classes={s.n_classes}: choose 1..{len(SHAPES)}.")

    def fill(tmp: Path) -> None:
        voc = tmp / "VOCdevkit" / "VOC2012"
        for sub in ("JPEGImages", "Annotations", "ImageSets/Main"):
            (voc / sub).mkdir(parents=True)
        rng = np.random.default_rng(s.seed)
        ids = []
        for i in range(s.n_images):
            image_id = f"synth_{i:06d}"
            img = Image.fromarray(_background(rng, s.image_size, s.noise))
            draw = ImageDraw.Draw(img)
            objects = []
            for _ in range(int(rng.integers(s.min_objects, s.max_objects + 1))):
                shape = SHAPES[int(rng.integers(0, s.n_classes))]
                side = int(rng.uniform(0.15, 0.45) * s.image_size)
                aspect = rng.uniform(0.7, 1.4)
                w = max(4, min(s.image_size - 1, int(side * aspect)))
                h = max(4, min(s.image_size - 1, int(side / aspect)))
                x0 = int(rng.integers(0, s.image_size - w))
                y0 = int(rng.integers(0, s.image_size - h))
                colour = tuple(int(c) for c in rng.integers(0, 256, 3))
                box = (x0, y0, x0 + w - 1, y0 + h - 1)
                _draw(draw, shape, box, colour)
                difficult = int(min(w, h) < 0.12 * s.image_size)
                objects.append((shape, box, difficult))
            img.save(voc / "JPEGImages" / f"{image_id}.jpg", quality=92)
            (voc / "Annotations" / f"{image_id}.xml").write_text(
                _xml(image_id, s.image_size, objects)
            )
            ids.append(image_id)
        (voc / "ImageSets" / "Main" / "trainval.txt").write_text("\n".join(ids) + "\n")

    return write_once(root, asdict(s), fill, "synthetic VOC tree")


class SyntheticVocReader(SyntheticVOC, DetectionReader):
    """The built-in generated VOC tree (settings: :class:`SyntheticVOC`), read with the VOC
    reader; classes: the first ``n_classes`` of :data:`SHAPES`.

    The tree is written to ``root`` (None: ``data_cache/<settings key>``) unless already there.
    """

    name = "synthetic"

    def read(self, root: str | Path | None) -> DetCatalog:
        root = Path(root or Path("data_cache") / self.key())
        generate(root, self)
        return VocReader(classes=list(SHAPES[: self.n_classes])).read(root)

    def settings(self) -> dict:
        return asdict(self)
