"""Tiny whale catalogs written in their real on-disk formats (GREMM folders, Where's Whale-do
metadata.csv, Happywhale train.csv), an in-memory dated catalog, and a run folder as a fit leaves it."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
from PIL import Image

from datamodules.catalogs import Catalog, Record


def tiny_image(path: Path, seed: int, size: int = 24) -> Path:
    """A small random JPEG (distinct bytes per seed)."""
    rng = np.random.default_rng(seed)
    arr = rng.integers(0, 255, (size, size, 3), dtype=np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr).save(path, quality=90)
    return path


def folder_catalog(
    root: Path, n_ind: int = 9, n_enc: int = 3, per_enc: int = 2, nested: bool = True
) -> Path:
    """GREMM layout: root/<ind>/[enc_k/]img.jpg."""
    seed = 0
    for i in range(n_ind):
        for e in range(n_enc):
            for f in range(per_enc):
                sub = f"ind_{i:02d}/enc_{e}" if nested else f"ind_{i:02d}"
                tiny_image(root / sub / f"e{e}_f{f}.jpg", seed)
                seed += 1
    return root


def noaa_catalog(
    root: Path,
    n_ind: int = 9,
    n_enc: int = 3,
    per_enc: int = 2,
    extra_rows: list[dict] | None = None,
    drop_column: str | None = None,
) -> Path:
    """Where's Whale-do layout: root/metadata.csv + root/images/trainNNNN.jpg."""
    cols = [
        "image_id",
        "path",
        "height",
        "width",
        "viewpoint",
        "date",
        "timestamp",
        "whale_id",
        "encounter_id",
    ]
    rows, k = [], 0
    for i in range(n_ind):
        for e in range(n_enc):
            for _ in range(per_enc):
                image_id = f"train{k:04d}"
                tiny_image(root / "images" / f"{image_id}.jpg", 1000 + k)
                rows.append(
                    {
                        "image_id": image_id,
                        "path": f"images/{image_id}.jpg",
                        "height": 24,
                        "width": 24,
                        "viewpoint": "top" if k % 7 else "lateral",
                        "date": f"2019-08-{e + 1:02d}",
                        "timestamp": f"2019-08-{e + 1:02d} 10:00:00",
                        "whale_id": f"whale{i:03d}",
                        "encounter_id": f"whale{i:03d}-{e:03d}",
                    }
                )
                k += 1
    rows += extra_rows or []
    if drop_column:
        cols = [c for c in cols if c != drop_column]
    with (root / "metadata.csv").open("w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=cols, extrasaction="ignore")
        w.writeheader()
        w.writerows(rows)
    return root


def happywhale_catalog(root: Path, n_ind: int = 9, per_ind: int = 6) -> Path:
    """Happywhale layout: root/train.csv + root/train_images/."""
    rows, k = [], 0
    for i in range(n_ind):
        for _ in range(per_ind):
            name = f"{k:06x}.jpg"
            tiny_image(root / "train_images" / name, 5000 + k)
            rows.append({"image": name, "species": "humpback_whale", "individual_id": f"hw{i:03d}"})
            k += 1
    # another species that the filter must drop
    for j in range(4):
        name = f"dolphin{j}.jpg"
        tiny_image(root / "train_images" / name, 9000 + j)
        rows.append({"image": name, "species": "bottlenose_dolphin", "individual_id": "bd000"})
    with (root / "train.csv").open("w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=["image", "species", "individual_id"])
        w.writeheader()
        w.writerows(rows)
    return root


def make_run_folder(
    tmp: Path,
    *,
    n_individuals: int = 12,
    encounters: int = 2,
    photos: int = 3,
    size: int = 32,
    batch_size: int = 16,
    model_args: dict | None = None,
) -> Path:
    """A run folder like ``cli.py fit`` leaves (``config.yaml``, split manifest, ``last.ckpt``)
    of an untrained, seeded demo model on generated synthetic whales; no training.
    ``model_args``: extra ``model.init_args`` (e.g. a ``dp`` block). One recipe with the
    benchmarks: :func:`benchmarks.common.tiny_run_folder`."""
    from benchmarks.common import tiny_run_folder

    return tiny_run_folder(
        tmp,
        n_individuals=n_individuals,
        encounters=encounters,
        photos=photos,
        size=size,
        batch_size=batch_size,
        model_args=model_args,
    )


def dated_catalog() -> Catalog:
    """In memory, 3 photos per encounter: 8 individuals; w0-w3 seen in 2017 (w0-w2 again in
    2018/2019), w4-w7 first seen in 2019 (dates ``<year>-08-0<k>``, encounter ``w<i>-<year>``)."""
    recs = []
    plan = {0: ("2017", "2018", "2019"), 1: ("2017", "2019"), 2: ("2017", "2018"), 3: ("2017",)}
    plan |= {k: ("2019",) for k in range(4, 8)}
    for i, years in plan.items():
        for e, year in enumerate(years):
            for f in range(3):
                meta = {"date": f"{year}-08-0{e + 1}", "encounter_id": f"w{i}-{year}"}
                recs.append(Record(f"w{i}_{year}_{f}.jpg", f"w{i}", f"w{i}-{year}", None, meta))
    return Catalog(root=Path("/nowhere"), records=recs)
