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
    side       target | shadow (the model that trains or is scored on the image)
    split      in | out
    role       member (in) | nonmember (out)
    n_objects  objects kept by the reader
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass

import numpy as np

from datamodules.detection.records import DetRecord
from datamodules.errors import DataError

COLUMNS = [
    "sample_id",
    "dataset",
    "file",
    "annotation",
    "group",
    "side",
    "split",
    "role",
    "n_objects",
]
PROTOCOLS = ("random", "sequential")


@dataclass(frozen=True)
class DetSplitSettings:
    """Everything the planner depends on (``data.split``); saved in the manifest header.

    Args:
        seed: split seed.
        protocol: ``random`` or ``sequential`` (module docstring).
        target_fraction: ``random``: share of the images for the target (the rest: shadow).
        in_fraction: share of each side's images in its training ("in") set.
        n_target, n_shadow: ``sequential``: images of the target data, then of the shadow data.
    """

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


def reference_training_rows(pool: list[dict], index: int, seed: int = 0) -> list[dict]:
    """The training rows of reference detector ``index``: one half of ``pool`` (the target's in
    and out images), cut by whole groups.

    References come in complementary pairs: references ``2j`` and ``2j + 1`` shuffle the pool's
    groups with the same seed ``[seed, j]`` and take the first and the second half, so with an
    even number of references every image is in the training set of exactly half of them (the
    IN and OUT references of online LiRA). Deterministic in (pool, index, seed); pool order kept.
    """
    if index < 0:
        raise DataError(f"data.reference_index={index}: give an index >= 0.")
    order = list(dict.fromkeys(r["group"] or r["file"] for r in pool))
    if len(order) < 2:
        raise DataError("a reference detector needs a pool of at least 2 image groups.")
    sizes: dict[str, int] = defaultdict(int)
    for r in pool:
        sizes[r["group"] or r["file"]] += 1
    np.random.default_rng([seed, index // 2, 3]).shuffle(order)
    first, second = _cut(order, sizes, 0.5)
    keep = set(first if index % 2 == 0 else second)
    return [r for r in pool if (r["group"] or r["file"]) in keep]


def plan_detection_split(
    records: list[DetRecord], settings: DetSplitSettings, dataset: str
) -> tuple[list[dict], dict]:
    """Assign every record to a bucket. Returns (manifest rows in record order, counts)."""
    s = settings
    if s.protocol not in PROTOCOLS:
        raise DataError(f"data.split.protocol={s.protocol!r}: choose one of {list(PROTOCOLS)}.")
    for key, v in (
        ("data.split.target_fraction", s.target_fraction),
        ("data.split.in_fraction", s.in_fraction),
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
                f"{dataset}: {len(records)} images cannot fill data.split.n_target={s.n_target} "
                f"and data.split.n_shadow={s.n_shadow} with two groups each. Lower them or add "
                "images."
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
                "side": side,
                "split": split,
                "role": "member" if split == "in" else "nonmember",
                "n_objects": len(r.labels),
            }
        )
    counts = defaultdict(int)
    for row in rows:
        counts[f"{row['side']}_{row['split']}"] += 1
    info = {
        "counts": dict(sorted(counts.items())),
        "n_rows": len(rows),
        "n_unused": len(records) - len(rows),
    }
    return rows, info
