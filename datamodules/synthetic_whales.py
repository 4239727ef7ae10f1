"""Procedural whale-like photo-ID catalog, written in the folder layout.

Each individual gets a body shape, a base tone and a fixed set of marks (scars, nicks, pigment
patches) in body coordinates. Each photo re-draws the same body and marks under a new pose,
lighting, background, blur and partial occlusion. Photos are grouped into encounters: frames of one
encounter share pose, light and background up to a small jitter, so they are near-duplicates, as in
real catalogs.

``difficulty`` runs from 0 (distinct, humpback-like: many high-contrast marks, varied tones) to 1
(faint, beluga-like: few low-contrast marks on near-identical white bodies).

Layout written: ``root/whale_NNN/enc_K/frame_J.jpg`` plus ``root/synthetic.json`` (the settings).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from datamodules.generated import write_once


@dataclass(frozen=True)
class SyntheticWhales:
    """Settings of the generated catalog (all sizes in pixels)."""

    n_individuals: int = 36
    encounters_per_individual: int = 4
    photos_per_encounter: int = 3
    difficulty: float = 0.3
    image_size: int = 64
    seed: int = 0

    def key(self) -> str:
        """Folder name that changes whenever a setting changes."""
        d = asdict(self)
        return "synthetic_" + "_".join(f"{k[:3]}{v}" for k, v in d.items())


def _body_outline(length: float, width: float, n: int = 48) -> list[tuple[float, float]]:
    """Outline of a spindle body with a tail stock and flukes, centred at 0, axis along x."""
    top, bottom = [], []
    for i in range(n + 1):
        t = i / n  # 0 = head, 1 = tail stock
        half = width * (math.sin(math.pi * min(1.0, t * 1.15) ** 0.7) * (1 - 0.75 * t) + 0.04)
        x = -length / 2 + t * length * 0.85
        top.append((x, -half))
        bottom.append((x, half))
    tail_x = -length / 2 + length * 0.85
    flukes = [
        (tail_x + length * 0.1, -width * 0.9),
        (tail_x + length * 0.15, -width * 0.95),
        (tail_x + length * 0.08, 0.0),
        (tail_x + length * 0.15, width * 0.95),
        (tail_x + length * 0.1, width * 0.9),
    ]
    return top + flukes + bottom[::-1]


def _individual(rng: np.random.Generator, difficulty: float) -> dict:
    """Persistent traits of one individual."""
    contrast = 0.12 + 0.75 * (1.0 - difficulty)
    n_scars = int(rng.integers(1, 3 + round(4 * (1 - difficulty)) + 1))
    n_patches = int(rng.integers(1, 2 + round(4 * (1 - difficulty)) + 1))
    n_nicks = int(rng.integers(0, 2 + round(3 * (1 - difficulty)) + 1))
    tone_spread = 0.05 + 0.45 * (1 - difficulty)
    base = float(np.clip(0.8 - tone_spread * rng.random(), 0.25, 0.95))
    return {
        "length": 0.78 + 0.12 * rng.random(),
        "width": 0.15 + 0.06 * rng.random(),
        "base": base,
        "scars": [
            (
                rng.uniform(0.1, 0.8),
                rng.uniform(-0.7, 0.7),
                rng.uniform(0, math.pi),
                rng.uniform(0.08, 0.25),
                rng.choice([-1, 1]) * contrast,
            )
            for _ in range(n_scars)
        ],
        "patches": [
            (
                rng.uniform(0.1, 0.75),
                rng.uniform(-0.6, 0.6),
                rng.uniform(0.04, 0.12),
                rng.uniform(0.2, 0.6),
                rng.choice([-1, 1]) * contrast,
            )
            for _ in range(n_patches)
        ],
        "nicks": [(rng.uniform(0.15, 0.8), rng.choice([-1, 1])) for _ in range(n_nicks)],
    }


def _to_canvas(u: float, v: float, traits: dict, size: int) -> tuple[float, float]:
    """Body coordinates (u along the axis in [0, 1], v across in [-1, 1]) to canvas pixels."""
    length, width = traits["length"] * size, traits["width"] * size
    t = u
    half = width * (math.sin(math.pi * min(1.0, t * 1.15) ** 0.7) * (1 - 0.75 * t) + 0.04)
    x = size / 2 - length / 2 + t * length * 0.85
    return x, size / 2 + v * half


def _grey(level: float) -> int:
    return int(np.clip(level, 0, 1) * 255)


def _render_whale(traits: dict, size: int) -> Image.Image:
    """The individual on a transparent square canvas, axis horizontal, head on the left."""
    canvas = Image.new("RGBA", (size, size), (0, 0, 0, 0))
    draw = ImageDraw.Draw(canvas)
    outline = [
        (x + size / 2, y + size / 2)
        for x, y in _body_outline(traits["length"] * size, traits["width"] * size)
    ]
    g = _grey(traits["base"])
    draw.polygon(outline, fill=(g, g, min(255, g + 8), 255))
    body_mask = canvas.split()[3]
    marks = Image.new("RGBA", (size, size), (0, 0, 0, 0))
    md = ImageDraw.Draw(marks)
    for u, v, angle, length, delta in traits["scars"]:
        x0, y0 = _to_canvas(u, v, traits, size)
        dx, dy = math.cos(angle) * length * size * 0.5, math.sin(angle) * length * size * 0.25
        level = _grey(traits["base"] + delta)
        md.line(
            [(x0 - dx, y0 - dy), (x0 + dx, y0 + dy)],
            fill=(level, level, level, 255),
            width=max(1, size // 90),
        )
    for u, v, radius, aspect, delta in traits["patches"]:
        x0, y0 = _to_canvas(u, v, traits, size)
        rx, ry = radius * size * 0.5, radius * size * 0.5 * aspect
        level = _grey(traits["base"] + delta)
        md.ellipse([x0 - rx, y0 - ry, x0 + rx, y0 + ry], fill=(level, level, level, 255))
    canvas.alpha_composite(Image.composite(marks, Image.new("RGBA", marks.size), body_mask))
    cut = ImageDraw.Draw(canvas)
    for u, side in traits["nicks"]:
        x0, y0 = _to_canvas(u, side * 1.0, traits, size)
        r = size * 0.025
        cut.polygon(
            [(x0 - r, y0 + side * r), (x0 + r, y0 + side * r), (x0, y0 - side * r)],
            fill=(0, 0, 0, 0),
        )
    return canvas


def _background(rng: np.random.Generator, size: int) -> Image.Image:
    """Water: a tinted vertical gradient with wave stripes and noise."""
    c1 = np.array([rng.uniform(0.05, 0.3), rng.uniform(0.2, 0.45), rng.uniform(0.35, 0.7)])
    c2 = c1 * rng.uniform(0.5, 1.2, size=3)
    t = np.linspace(0, 1, size)[:, None, None]
    img = (1 - t) * c1 + t * c2
    yy, xx = np.mgrid[0:size, 0:size] / size
    freq, phase, angle = rng.uniform(4, 14), rng.uniform(0, 2 * math.pi), rng.uniform(0, math.pi)
    waves = np.sin(freq * 2 * math.pi * (xx * math.cos(angle) + yy * math.sin(angle)) + phase)
    img = img + 0.05 * waves[..., None] + 0.03 * rng.standard_normal((size, size, 1))
    img = np.broadcast_to(img, (size, size, 3))
    return Image.fromarray((np.clip(img, 0, 1) * 255).astype(np.uint8), "RGB")


def _photo(traits: dict, scene: dict, rng: np.random.Generator, size: int) -> Image.Image:
    """One frame: the individual under the encounter's scene plus a small per-frame jitter."""
    big = size * 2
    whale = _render_whale(traits, big)
    angle = scene["angle"] + rng.normal(0, 2.0)
    scale = scene["scale"] * (1 + rng.normal(0, 0.02))
    whale = whale.rotate(angle, resample=Image.BILINEAR, expand=False)
    side = max(8, int(big * scale))
    whale = whale.resize((side, side), Image.BILINEAR)
    frame = _background(np.random.default_rng(scene["bg_seed"]), big)
    ox = int(big / 2 - side / 2 + (scene["dx"] + rng.normal(0, 0.01)) * big)
    oy = int(big / 2 - side / 2 + (scene["dy"] + rng.normal(0, 0.01)) * big)
    frame.paste(whale, (ox, oy), whale)
    if scene["occlude"]:
        od = ImageDraw.Draw(frame)
        cx, cy, r = scene["occ_x"] * big, scene["occ_y"] * big, scene["occ_r"] * big
        foam = _grey(0.85)
        od.ellipse([cx - r, cy - r * 0.6, cx + r, cy + r * 0.6], fill=(foam, foam, foam))
    arr = np.asarray(frame).astype(np.float32) / 255
    gain = scene["light"] * (1 + rng.normal(0, 0.02))
    arr = np.clip(((arr * gain) ** scene["gamma"]), 0, 1)
    frame = Image.fromarray((arr * 255).astype(np.uint8), "RGB")
    if scene["blur"] > 0.05:
        frame = frame.filter(ImageFilter.GaussianBlur(scene["blur"] * 2))
    return frame.resize((size, size), Image.BILINEAR)


def _scene(rng: np.random.Generator, difficulty: float) -> dict:
    return {
        "angle": rng.uniform(-35, 35) + (180 if rng.random() < 0.5 else 0),
        "scale": rng.uniform(0.75, 1.0),
        "dx": rng.uniform(-0.08, 0.08),
        "dy": rng.uniform(-0.08, 0.08),
        "bg_seed": int(rng.integers(0, 2**31)),
        "light": rng.uniform(0.7, 1.3),
        "gamma": rng.uniform(0.8, 1.25),
        "blur": rng.uniform(0, 0.4 + 0.8 * difficulty),
        "occlude": bool(rng.random() < 0.3),
        "occ_x": rng.uniform(0.3, 0.7),
        "occ_y": rng.uniform(0.35, 0.65),
        "occ_r": rng.uniform(0.06, 0.14),
    }


def generate(root: str | Path, settings: SyntheticWhales) -> Path:
    """Write the catalog to ``root`` once (atomically; see :func:`datamodules.generated.write_once`).

    Returns ``root``. If ``root/synthetic.json`` already records the same settings, nothing is
    redone, so concurrent DDP ranks and repeated runs share one catalog.
    """

    def fill(tmp: Path) -> None:
        for i in range(settings.n_individuals):
            traits = _individual(np.random.default_rng([settings.seed, i]), settings.difficulty)
            for e in range(settings.encounters_per_individual):
                scene = _scene(np.random.default_rng([settings.seed, i, e, 7]), settings.difficulty)
                folder = tmp / f"whale_{i:03d}" / f"enc_{e}"
                folder.mkdir(parents=True)
                for f in range(settings.photos_per_encounter):
                    rng = np.random.default_rng([settings.seed, i, e, f, 11])
                    img = _photo(traits, scene, rng, settings.image_size)
                    img.save(folder / f"frame_{f}.jpg", quality=92)

    return write_once(root, asdict(settings), fill, "synthetic whale catalog")
