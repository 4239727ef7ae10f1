"""Target/shadow split of a detection dataset (detection paper, section 5.1) and its manifest.

Every image goes to exactly one of four buckets: target-in, target-out, shadow-in, shadow-out
("in" = the model's training set, "out" = held out). Whole groups (a SynthText background and its
``name_N.jpg`` variants) stay in one bucket. Protocols:

* ``random`` (default): groups are shuffled by ``seed``; ``target_fraction`` of the images go to
  the target and the rest to the shadow; each side is cut again at ``in_fraction``.
* ``sequential``: the paper's SynthText setting: the first ``n_target`` images (in reader order)
  form the target data, the next ``n_shadow`` the shadow data, each finished at a group boundary;
  each side is then split into in/out by ``seed``. Later images are left out.

Manifest row (``split_manifest.csv``; ``split_manifest.json`` holds seed, hash, settings, counts
and the reader's skip report)::

    sample_id  "<dataset>:<file>"
    dataset    voc | inria | synthtext | synthetic
    file       image path relative to the data root
    annotation annotation path relative to the root ("gt.mat" for SynthText)
    group      images of one group share a bucket
    set        target | shadow
    split      in | out
    role       member (in) | nonmember (out)
    n_objects  objects kept by the reader
"""

from __future__ import annotations

import csv
import json
from collections import defaultdict
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from datamodules.detection.records import DetRecord
from datamodules.errors import DataError, SplitLeakError
from datamodules.splits import manifest_csv as shared_manifest_csv
from datamodules.splits import write_manifest

COLUMNS = [
    "sample_id",
    "dataset",
    "file",
    "annotation",
    "group",
    "set",
    "split",
    "role",
    "n_objects",
]
PROTOCOLS = ("random", "sequential")


@dataclass(frozen=True)
class DetSplitSettings:
    """Everything the planner depends on; saved in the manifest header."""

    seed: int = 0
    protocol: str = "random"
    target_fraction: float = 0.5
    in_fraction: float = 0.5
    n_target: int = 5000
    n_shadow: int = 5000


def _groups_in_order(records: list[DetRecord]) -> tuple[list[str], dict[str, list[int]]]:
    members: dict[str, list[int]] = defaultdict(list)
    order: list[str] = []
    for i, r in enumerate(records):
        g = r.group or r.file
        if g not in members:
            order.append(g)
        members[g].append(i)
    return order, members


def _cut(groups: list[str], sizes: dict[str, int], fraction: float) -> tuple[list[str], list[str]]:
    """First groups until their images reach ``fraction`` of the total; both parts non-empty."""
    total = sum(sizes[g] for g in groups)
    want = fraction * total
    acc, k = 0, 0
    while k < len(groups) and acc + sizes[groups[k]] / 2 <= want:
        acc += sizes[groups[k]]
        k += 1
    k = min(max(k, 1), len(groups) - 1)
    return groups[:k], groups[k:]


def plan_detection_split(
    records: list[DetRecord], settings: DetSplitSettings, dataset: str
) -> tuple[list[dict], dict]:
    """Assign every record to a bucket. Returns (manifest rows in record order, counts)."""
    s = settings
    if s.protocol not in PROTOCOLS:
        raise DataError(f"data.protocol={s.protocol!r}: choose one of {list(PROTOCOLS)}.")
    for key, v in (
        ("data.target_fraction", s.target_fraction),
        ("data.in_fraction", s.in_fraction),
    ):
        if not 0 < v < 1:
            raise DataError(f"{key}={v}: give a fraction strictly between 0 and 1.")
    order, members = _groups_in_order(records)
    sizes = {g: len(members[g]) for g in order}
    if len(order) < 4:
        raise DataError(
            f"{dataset}: only {len(order)} image groups; the four buckets (target/shadow x in/out) "
            "need at least 4. Add images or check the reader's skip report."
        )
    rng = np.random.default_rng(s.seed)
    if s.protocol == "random":
        shuffled = list(order)
        rng.shuffle(shuffled)
        target, shadow = _cut(shuffled, sizes, s.target_fraction)
    else:
        target, shadow, n_t, n_s = [], [], 0, 0
        for g in order:
            if n_t < s.n_target:
                target.append(g)
                n_t += sizes[g]
            elif n_s < s.n_shadow:
                shadow.append(g)
                n_s += sizes[g]
            else:
                break
        if not shadow or len(target) < 2 or len(shadow) < 2:
            raise DataError(
                f"{dataset}: {len(records)} images cannot fill data.n_target={s.n_target} and "
                f"data.n_shadow={s.n_shadow} with two groups each. Lower them or add images."
            )
    bucket: dict[str, tuple[str, str]] = {}
    for side, groups in (("target", target), ("shadow", shadow)):
        g = list(groups)
        np.random.default_rng([s.seed, 1 if side == "target" else 2]).shuffle(g)
        gin, gout = _cut(g, sizes, s.in_fraction)
        bucket.update({x: (side, "in") for x in gin})
        bucket.update({x: (side, "out") for x in gout})
    rows = []
    for r in records:
        g = r.group or r.file
        if g not in bucket:
            continue
        side, split = bucket[g]
        rows.append(
            {
                "sample_id": f"{dataset}:{r.file}",
                "dataset": dataset,
                "file": r.file,
                "annotation": r.annotation,
                "group": g,
                "set": side,
                "split": split,
                "role": "member" if split == "in" else "nonmember",
                "n_objects": len(r.labels),
            }
        )
    counts = defaultdict(int)
    for row in rows:
        counts[f"{row['set']}_{row['split']}"] += 1
    info = {
        "counts": dict(sorted(counts.items())),
        "n_rows": len(rows),
        "n_unused": len(records) - len(rows),
    }
    return rows, info


def verify_detection_split(rows: list[dict], content_hash: dict[str, str] | None = None) -> None:
    """Fail loudly (``SplitLeakError``) unless the four buckets are disjoint and non-empty.

    Checks: no file twice, every group in one bucket, target and shadow share no file or group,
    and (with ``content_hash``: file -> sha256) no byte-identical image in two buckets.
    """
    where: dict[str, set[tuple[str, str]]] = defaultdict(set)
    seen: set[str] = set()
    for r in rows:
        if r["file"] in seen:
            raise SplitLeakError(f"image {r['file']!r} appears twice in the split manifest.")
        seen.add(r["file"])
        where[r["group"]].add((r["set"], r["split"]))
    for g, buckets in where.items():
        if len(buckets) > 1:
            raise SplitLeakError(
                f"group {g!r} is spread over {sorted(buckets)}; a group (e.g. one SynthText "
                "background and its variants) must stay in one bucket. Re-plan the split."
            )
    target = {r["file"] for r in rows if r["set"] == "target"}
    shadow = {r["file"] for r in rows if r["set"] == "shadow"}
    if target & shadow:
        raise SplitLeakError(f"target and shadow share {len(target & shadow)} images.")
    for side in ("target", "shadow"):
        for split in ("in", "out"):
            if not any(r["set"] == side and r["split"] == split for r in rows):
                raise SplitLeakError(f"bucket {side}-{split} is empty; add images.")
    if content_hash is not None:
        first: dict[str, tuple[str, str, str]] = {}
        for r in rows:
            h = content_hash[r["file"]]
            b = (r["set"], r["split"], r["file"])
            if h in first and first[h][:2] != b[:2]:
                raise SplitLeakError(
                    f"byte-identical images {first[h][2]!r} ({first[h][0]}-{first[h][1]}) and "
                    f"{r['file']!r} ({b[0]}-{b[1]}) sit in different buckets. Remove the "
                    "duplicate or give both one group."
                )
            first.setdefault(h, b)


def verify_cross_runs(target_rows: list[dict], shadow_rows: list[dict]) -> None:
    """Target run's target rows and shadow run's shadow rows must share no image or group.

    Only meaningful when both runs read the same dataset; rows of different datasets never match.
    """
    t = {(r["dataset"], r["file"]) for r in target_rows if r["set"] == "target"}
    tg = {(r["dataset"], r["group"]) for r in target_rows if r["set"] == "target"}
    s = {(r["dataset"], r["file"]) for r in shadow_rows if r["set"] == "shadow"}
    sg = {(r["dataset"], r["group"]) for r in shadow_rows if r["set"] == "shadow"}
    if t & s or tg & sg:
        n = len(t & s) or len(tg & sg)
        raise SplitLeakError(
            f"the target's and the shadow's data overlap ({n} images or groups): the two runs "
            "used different split settings. Use one data config and seed for both."
        )


def manifest_csv(rows: list[dict]) -> str:
    """Canonical CSV text of detection manifest rows."""
    return shared_manifest_csv(rows, COLUMNS)


def write_detection_manifest(folder: str | Path, rows: list[dict], header: dict) -> Path:
    """Write ``split_manifest.{csv,json}``; an existing, different manifest is a SplitLeakError."""
    return write_manifest(Path(folder), rows, header, COLUMNS)


def read_detection_manifest(folder: str | Path) -> tuple[list[dict], dict]:
    folder = Path(folder)
    with (folder / "split_manifest.csv").open(newline="") as fh:
        rows = list(csv.DictReader(fh))
    return rows, json.loads((folder / "split_manifest.json").read_text())


def settings_dict(s: DetSplitSettings) -> dict:
    return asdict(s)
