"""The split settings (:class:`SplitSettings`, ``data.split``) and how the photos of one known
individual (ID1) are split between train, val and test: one function per split protocol
(:data:`PROTOCOLS`: ``photo``, ``group``, ``paper``, ``time``), and the augmented copies that fill
a split up to its target (``rot90`` ... and flips, the paper's Figure 5).
:mod:`datamodules.splits` plans the whole catalog with them."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from datetime import datetime

import numpy as np

from datamodules.catalogs import Record, group_key
from datamodules.cells import parse_date, record_date
from datamodules.errors import DataError

SPLIT_TO_SET = {
    "train": "train",
    "val": "attack",
    "test": "eval",
    "attack": "attack",
    "eval": "eval",
}

ROTATIONS = ("rot90", "rot180", "rot270", "rot330")


@dataclass(frozen=True)
class SplitSettings:
    """Everything the planner depends on (``data.split``); saved in the manifest header.

    Args:
        seed: split seed (independent of the training seed).
        min_images: individuals with fewer photos are left out (listed in the manifest header).
        min_groups: with ``group_by``, individuals with fewer groups are left out (None: 3 with
            group_by, else 1).
        identity_fractions: shares of ID1 / ID2 / ID3 among eligible individuals.
        photo_fractions: shares of train / val / test among each ID1 individual's photos.
        group_by: keep every photo of a group on one side: ``encounter`` (reader's own group),
            or a column such as ``encounter_id`` or ``date``. None splits by photo.
        images_per_identity: balance each individual to this many photos with the paper's
            augmentation (rotations, brightness, flip); None is off.
        split_protocol: ``photo``, ``group`` or ``paper`` (module docstring); None: ``group``
            when ``group_by`` is set, else ``photo``.
        nonmember_use: which non-member role a second catalog fills: ``attack`` (ID2) or ``eval``
            (ID3).
        balance_nonmembers: a non-member individual contributes as many photos (seeded choice)
            as a target individual contributes to val, as in the paper's Table 3.
        time_column: with ``split_protocol: time``, the metadata column holding each photo's date
            (ISO 8601 ``YYYY-MM-DD``, optionally with a time; compared as dates, not text).
        time_cutoff: with ``split_protocol: time``, the first date of the query period (None:
            the date below which ``photo_fractions[0]`` of the photos lie).
        holdout_groups: with ``split_protocol: photo`` and ``group_by``, this many whole groups
            (encounters, seeded) of each ID1 individual go to ``test`` before its other photos
            are split by photo; the member test photos are then of two kinds, from encounters
            seen in training and from new encounters, and the attack report shows both.
        member_fraction: keep this share of the ID1 individuals (seeded, nested: the ones kept at
            0.25 are kept at 0.5), with all their rows; the dropped ones leave the manifest, the
            non-members (ID2, ID3) stay as they are. Measures how the catalog size matters.
        max_train_groups: keep at most this many train groups (encounters; photos without
            ``group_by``) of each ID1 individual (seeded, nested); val/test rows stay. None: all.
    """

    seed: int = 0
    min_images: int = 3
    min_groups: int | None = None
    identity_fractions: tuple[float, float, float] = (1 / 3, 1 / 3, 1 / 3)
    photo_fractions: tuple[float, float, float] = (1 / 3, 1 / 3, 1 / 3)
    group_by: str | None = None
    images_per_identity: int | None = None
    split_protocol: str | None = None
    nonmember_use: str = "attack"
    balance_nonmembers: bool = True
    time_column: str = "date"
    time_cutoff: str | None = None
    holdout_groups: int = 0
    member_fraction: float = 1.0
    max_train_groups: int | None = None


def check_fractions(fr, key: str) -> tuple[float, float, float]:
    if len(fr) != 3 or any(f <= 0 for f in fr):
        raise DataError(f"{key}={list(fr)}: give three positive fractions (they are normalised).")
    s = float(sum(fr))
    return tuple(float(f) / s for f in fr)


def _counts(n: int, fractions: tuple[float, float, float]) -> list[int]:
    """Split ``n`` items into three non-empty parts close to ``fractions`` (needs n >= 3)."""
    val = max(1, round(n * fractions[1]))
    test = max(1, round(n * fractions[2]))
    train = n - val - test
    while train < 1:
        if val >= test and val > 1:
            val -= 1
        else:
            test -= 1
        train += 1
    return [train, val, test]


def _assign_groups(groups: dict[str, list[Record]], fractions, rng) -> dict[str, str]:
    """Give whole groups to train/val/test so photo counts approach ``fractions``.

    Each split first gets one group (smallest groups to val/test); the rest go one at a time to the
    split with the largest photo deficit.
    """
    names = sorted(groups)
    rng.shuffle(names)
    total = sum(len(groups[g]) for g in names)
    targets = [f * total for f in fractions]
    have = [0, 0, 0]
    out: dict[str, str] = {}
    by_size = sorted(names, key=lambda g: len(groups[g]))
    seeds = {2: by_size[0], 1: by_size[1], 0: by_size[-1]}
    for split_idx, g in seeds.items():
        out[g] = ("train", "val", "test")[split_idx]
        have[split_idx] += len(groups[g])
    for g in names:
        if g in out:
            continue
        deficits = [targets[i] - have[i] for i in range(3)]
        i = int(np.argmax(deficits))
        out[g] = ("train", "val", "test")[i]
        have[i] += len(groups[g])
    return out


def _aug_specs(n_needed: int, rng: np.random.Generator) -> list[str]:
    """``n_needed`` transform specs cycling rotations, brightness and flip (paper, section 4.2)."""
    specs = []
    cycle = [*ROTATIONS, "bright", "hflip"]
    for k in range(n_needed):
        op = cycle[k % len(cycle)]
        if op == "bright":
            # torchvision ColorJitter(brightness=1.0) draws a factor in [0, 2]; floored at 0.2
            # so the copy stays visible.
            op = f"bright:{rng.uniform(0.2, 2.0):.3f}"
        specs.append(op)
    return specs


def augment(originals: list[dict], target: int, rng: np.random.Generator) -> list[dict]:
    """Originals plus deterministic copies, round-robin over originals, up to ``target`` rows."""
    rows = list(originals)
    need = max(0, target - len(originals))
    if need == 0 or not originals:
        return rows
    specs = _aug_specs(need, rng)
    for k, spec in enumerate(specs):
        src = originals[k % len(originals)]
        # a second pass over the same original with the same op gets a different brightness/flip
        if spec.startswith("rot") and k // len(originals) >= len(ROTATIONS):
            spec = f"{spec}+hflip"
        rows.append({**src, "aug": spec})
    # the same (file, aug) twice would be a duplicate sample: make keys unique
    seen: dict[str, int] = defaultdict(int)
    for r in rows:
        key = f"{r['file']}#{r['aug']}"
        seen[key] += 1
        if seen[key] > 1:
            r["aug"] = f"{r['aug']}~{seen[key] - 1}" if r["aug"] else f"copy~{seen[key] - 1}"
    return rows


@dataclass(frozen=True)
class Planner:
    """What every protocol needs: settings (protocol resolved), fractions, targets and labels."""

    s: SplitSettings
    photo_fractions: tuple[float, float, float]
    per_split_target: list[int] | None
    labels: dict[str, int]

    def row(self, rec: Record, cat_name: str, id_set: str, split: str, aug: str = "") -> dict:
        """One manifest row (without ``sample_id``, added when the plan is finished)."""
        g = self.s.group_by
        return {
            "catalog": cat_name,
            "file": rec.file,
            "identity": rec.identity,
            "group": group_key(rec, g) or "" if g else "",
            "id_set": id_set,
            "split": split,
            "role": "member" if id_set == "ID1" else "nonmember",
            "set": SPLIT_TO_SET[split],
            "label": self.labels.get(rec.identity, -1) if id_set == "ID1" else -1,
            "aug": aug,
        }


def _split_by_rank(order, fractions) -> list[str]:
    """``train``/``val``/``test`` for each position of ``order`` (a permutation), by rank."""
    c = _counts(len(order), fractions)
    out = [""] * len(order)
    for rank, k in enumerate(order):
        out[k] = "train" if rank < c[0] else "val" if rank < c[0] + c[1] else "test"
    return out


def _augment_each_split(p: Planner, recs: list[Record], split_of: dict[str, str], rng) -> list:
    """ID1 rows of ``recs`` (each in ``split_of[file]``), augmented inside each split."""
    rows = []
    for k, split in enumerate(("train", "val", "test")):
        originals = [p.row(r, "main", "ID1", split) for r in recs if split_of[r.file] == split]
        target = p.per_split_target[k] if p.per_split_target else 0
        rows.extend(augment(originals, target, rng))
    return rows


def _need_three_photos(ident: str, recs: list[Record]) -> None:
    if len(recs) < 3:
        raise DataError(
            f"identity {ident!r} has {len(recs)} photos; an ID1 individual needs at least 3 "
            "(train, val, test). Set data.split.min_images to 3 or more to leave such individuals "
            "out."
        )


def _photo_protocol(p: Planner, ident: str, recs: list[Record], rng) -> list[dict]:
    """Split the original photos by seeded rank, then augment inside each split; with
    ``holdout_groups``, that many whole groups go to test first (at least 3 photos stay)."""
    _need_three_photos(ident, recs)
    split_of: dict[str, str] = {}
    if p.s.holdout_groups and p.s.group_by:
        groups = sorted({group_key(r, p.s.group_by) for r in recs})
        for g in rng.permutation(groups)[: min(p.s.holdout_groups, len(groups) - 1)]:
            held = [r for r in recs if group_key(r, p.s.group_by) == g]
            if len(recs) - len(split_of) - len(held) >= 3:
                split_of.update({r.file: "test" for r in held})
    rest = [r for r in recs if r.file not in split_of]
    splits = _split_by_rank(rng.permutation(len(rest)), p.photo_fractions)
    split_of.update({r.file: sp for r, sp in zip(rest, splits)})
    return _augment_each_split(p, recs, split_of, rng)


def _group_protocol(p: Planner, ident: str, recs: list[Record], rng) -> list[dict]:
    """Give whole groups (``group_by``) to train/val/test, then augment inside each split."""
    _need_three_photos(ident, recs)
    g = p.s.group_by
    groups: dict[str, list[Record]] = defaultdict(list)
    for r in recs:
        groups[group_key(r, g)].append(r)
    if len(groups) < 3:
        raise DataError(
            f"identity {ident!r} has {len(groups)} groups by data.split.group_by={g!r}; "
            "an ID1 individual needs 3 to fill train, val and test. Set data.split.min_groups "
            "to 3 or more to leave such individuals out."
        )
    where = _assign_groups(dict(groups), p.photo_fractions, rng)
    return _augment_each_split(p, recs, {r.file: where[group_key(r, g)] for r in recs}, rng)


def _paper_protocol(p: Planner, ident: str, recs: list[Record], rng) -> list[dict]:
    """Augment first, then split the pictures by seeded rank (copies of one original may land in
    train and test). Without ``images_per_identity`` there is nothing to augment: as ``photo``."""
    if not p.per_split_target:
        return _photo_protocol(p, ident, recs, rng)
    originals = [p.row(r, "main", "ID1", "train") for r in recs]
    pool = augment(originals, sum(p.per_split_target), rng)
    splits = _split_by_rank(rng.permutation(len(pool)), p.photo_fractions)
    return [{**r, "split": sp, "set": SPLIT_TO_SET[sp]} for r, sp in zip(pool, splits)]


def _when(rec: Record, s: SplitSettings) -> datetime:
    """The photo's date (``time_column``, ISO 8601); a missing or malformed one is a DataError
    naming the row (:func:`datamodules.cells.record_date`)."""
    return record_date(rec, s.time_column)


def _cut(s: SplitSettings) -> datetime:
    """``time_cutoff`` as a datetime (dates are compared as datetimes, never as text)."""
    return parse_date(s.time_cutoff, source="data.split.time_cutoff")


def _time_protocol(p: Planner, ident: str, recs: list[Record], rng) -> list[dict]:
    """Photos before the cutoff to train; later groups (``group_by``, else photos) to val or
    test, each to the side with fewer photos so far (ties by seed)."""
    cut = _cut(p.s)
    later: dict[str, list[Record]] = defaultdict(list)
    split_of = {}
    for r in recs:
        if _when(r, p.s) < cut:
            split_of[r.file] = "train"
        else:
            later[group_key(r, p.s.group_by) or r.file].append(r)
    have = {"val": 0, "test": 0}
    for g in rng.permutation(sorted(later)):
        side = min(have, key=lambda k: (have[k], rng.random()))
        have[side] += len(later[g])
        split_of.update({r.file: side for r in later[g]})
    return _augment_each_split(p, recs, split_of, rng)


def time_cutoff(records: list[Record], s: SplitSettings, fractions) -> str:
    """``time_cutoff`` (checked to be a date), or the date (as written) below which
    ``fractions[0]`` of the photos lie."""
    if s.time_cutoff:
        _cut(s)
        return str(s.time_cutoff).strip()
    dated = sorted(records, key=lambda r: (_when(r, s), r.file))
    pick = dated[min(len(dated) - 1, int(round(fractions[0] * len(dated))))]
    return str(pick.meta[s.time_column]).strip()


def time_identity_sets(
    main: dict[str, list[Record]], s: SplitSettings, id_fr
) -> tuple[list[str], list[str], list[str]]:
    """ID1: individuals seen before the cutoff; the rest (first seen later) shuffled by seed into
    ID2 and ID3 in the ratio of ``identity_fractions[1:]``."""
    cut = _cut(s)
    known = sorted(k for k, recs in main.items() if min(_when(r, s) for r in recs) < cut)
    new = sorted(set(main) - set(known))
    np.random.default_rng(s.seed).shuffle(new)
    n2 = round(len(new) * id_fr[1] / (id_fr[1] + id_fr[2]))
    n2 = min(max(1, n2), len(new) - 1) if len(new) >= 2 else 0
    if not known or len(new) < 2:
        raise DataError(
            f"data.split.time_cutoff={s.time_cutoff!r}: {len(known)} individuals seen before it "
            f"and {len(new)} first seen on or after it; the time protocol needs at least one and "
            "two. Move the cutoff (data.split.time_cutoff)."
        )
    return known, new[:n2], new[n2:]


#: split protocol -> planner of one ID1 individual's rows ``(planner, identity, records, rng)``
PROTOCOLS = {
    "photo": _photo_protocol,
    "group": _group_protocol,
    "paper": _paper_protocol,
    "time": _time_protocol,
}
