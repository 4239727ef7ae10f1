"""Identity-disjoint split planner (whale paper, Table 3 and Figure 5) and the split manifest.

Eligible individuals (at least ``min_images`` photos, and ``min_groups`` groups when ``group_by``
is set) are shuffled by seed into ID1 (target), ID2 (attack-set non-members) and ID3
(evaluation-set non-members). Each ID1 individual's photos are split into train/val/test; with
``group_by`` whole groups (encounters) go to one side. Then:

* attack set     = ID1-val (members)  + ID2 (non-members)
* evaluation set = ID1-test (members) + ID3 (non-members)

Optional balancing augmentation adds deterministic copies (the paper's rotations of 90/180/270/330
degrees, brightness and horizontal flip) up to ``images_per_identity``. ``split_protocol`` decides
the unit and the order:

* ``photo``: split the original photos, then augment inside each split (default without group_by);
* ``group``: split whole groups (``group_by``), then augment inside each split (default with
  group_by);
* ``paper``: augment first, then split by picture, as the paper describes, so copies of one
  original can land in train and test (the manifest's ``file`` column names the original);
* ``time``: the season-by-season scenario (after wildlife-datasets' time-cutoff splits). Photos
  dated before ``time_cutoff`` build the catalog, later ones are the queries. Individuals seen
  before the cutoff are ID1: their earlier photos are ``train``, their later encounters (whole
  groups) go to ``val`` or ``test``; an ID1 individual never seen again has train photos only.
  Individuals first seen on or after the cutoff are the new ones, shuffled by seed into ID2 and
  ID3. Eligibility needs ``min_images`` photos and (unless set) one group.

With ``group_by`` set, the group column is recorded and used for eligibility under every protocol,
so all three protocols see the same individuals and the same ID1/ID2/ID3 for one seed.

Every manifest row::

    sample_id  unique key, "<catalog>:<file>#<aug>"
    catalog    "main", or "external" for non-members from another catalog
    file       path relative to that catalog's root (the original photo of a copy)
    identity   individual id in the catalog
    group      value of group_by ("" when off)
    id_set     ID1 | ID2 | ID3
    split      train | val | test (ID1), attack (ID2), eval (ID3)
    role       member (ID1) | nonmember (ID2, ID3)
    set        train | attack | eval
    label      class index of an ID1 identity, -1 otherwise
    aug        "" for the original, else the copy's transform (rot90, bright:0.731, hflip, ...)
"""

from __future__ import annotations

import hashlib
import math
from collections import defaultdict
from dataclasses import replace

import numpy as np

from datamodules.catalogs import Catalog, Record, group_key
from datamodules.errors import DataError
from datamodules.split_protocols import (
    PROTOCOLS,
    Planner,
    SplitSettings,
    augment,
    check_fractions,
    time_cutoff,
    time_identity_sets,
)

COLUMNS = [
    "sample_id",
    "catalog",
    "file",
    "identity",
    "group",
    "id_set",
    "split",
    "role",
    "set",
    "label",
    "aug",
]


def _resolve(settings: SplitSettings) -> SplitSettings:
    """Default the protocol (``group`` with group_by, else ``photo``) and check it."""
    s = settings
    if s.split_protocol is None:
        s = replace(s, split_protocol="group" if s.group_by else "photo")
    if s.split_protocol not in PROTOCOLS:
        raise DataError(
            f"data.split.split_protocol={s.split_protocol!r}: choose one of {list(PROTOCOLS)}."
        )
    if s.split_protocol == "group" and not s.group_by:
        raise DataError(
            "data.split.split_protocol='group' needs data.split.group_by (e.g. encounter_id)."
        )
    return s


def _min_groups(s: SplitSettings) -> int:
    if s.min_groups is not None:
        return s.min_groups
    return 3 if s.group_by and s.split_protocol != "time" else 1


def _eligible(cat: Catalog, s: SplitSettings) -> tuple[dict[str, list[Record]], dict[str, str]]:
    """Individuals (photos sorted by file) with enough photos and groups, and the excluded ones
    with the reason. Eligibility does not depend on the protocol."""
    by_identity: dict[str, list[Record]] = defaultdict(list)
    for r in cat.records:
        by_identity[r.identity].append(r)
    keep, excluded = {}, {}
    min_groups = _min_groups(s)
    for ident in sorted(by_identity):
        recs = sorted(by_identity[ident], key=lambda r: r.file)
        n_groups = len({group_key(r, s.group_by) for r in recs}) if s.group_by else len(recs)
        if len(recs) < s.min_images:
            excluded[ident] = f"{len(recs)} photos < data.split.min_images={s.min_images}"
        elif n_groups < min_groups:
            excluded[ident] = f"{n_groups} groups < data.split.min_groups={min_groups}"
        else:
            keep[ident] = recs
    return keep, excluded


def _identity_sets(
    catalog: Catalog, idents: list[str], s: SplitSettings, id_fr, external: bool
) -> tuple[list[str], list[str], list[str]]:
    """Shuffle ``idents`` by seed into ID1/ID2/ID3. With an external catalog, it fills ID2
    (``nonmember_use=attack``) or ID3 (``eval``) and the main catalog the other two."""
    rng = np.random.default_rng(s.seed)
    idents = list(idents)
    rng.shuffle(idents)
    n = len(idents)
    n1 = max(1, round(n * id_fr[0]))
    n2 = max(1, round(n * id_fr[1]))
    n3 = n - n1 - n2
    if external:
        if s.nonmember_use not in ("attack", "eval"):
            raise DataError(
                f"data.split.nonmember_use={s.nonmember_use!r}: choose 'attack' or 'eval'."
            )
        other = id_fr[2 if s.nonmember_use == "attack" else 1]
        n1 = max(1, round(n * id_fr[0] / (id_fr[0] + other)))
        n2 = n - n1 if s.nonmember_use == "eval" else 0
        n3 = n - n1 if s.nonmember_use == "attack" else 0
    if n1 < 1 or (n2 < 1 and not external) or (n3 < 1 and not external):
        raise DataError(
            f"{catalog.root}: only {n} individuals have at least "
            f"data.split.min_images={s.min_images} photos (and {_min_groups(s)} groups); "
            "ID1/ID2/ID3 need at least one each. Lower "
            "data.split.min_images or add individuals."
        )
    return idents[:n1], idents[n1 : n1 + n2], idents[n1 + n2 :]


def _seeded_subset(n: int, k: int, rng: np.random.Generator) -> list[int]:
    """``k`` of ``range(n)`` drawn by ``rng``, in ascending order (all of them when k >= n)."""
    return sorted(rng.permutation(n)[:k]) if k < n else list(range(n))


def _nonmember_rows(
    p: Planner, source: dict[str, list[Record]], names, cat_name: str, id_set: str, split: str
) -> list[dict]:
    """Rows of non-member individuals, balanced with the members (paper, Table 3): each
    contributes as many photos (a seeded choice) as a target individual contributes to val."""
    s, rows = p.s, []
    for ident in sorted(names):
        rng = np.random.default_rng([s.seed, _stable_int(ident), 3])
        recs = source[ident]
        if p.per_split_target:
            target = p.per_split_target[1]
        else:
            fr = p.photo_fractions[1]
            target = max(1, round(len(recs) * fr)) if s.balance_nonmembers else len(recs)
        keep = _seeded_subset(len(recs), target, rng)
        originals = [p.row(recs[k], cat_name, id_set, split) for k in keep]
        rows.extend(augment(originals, target, rng))
    return rows


def _external_rows(
    p: Planner, external: Catalog, main: dict, id2: list[str], id3: list[str], n1: int
) -> tuple[list[dict], dict[str, str]]:
    """Non-member rows when an external catalog fills one non-member role (Figure 7)."""
    ext, ext_excluded = _eligible(external, p.s)
    ext_names = sorted(ext)
    np.random.default_rng(p.s.seed + 1).shuffle(ext_names)
    ext_names = ext_names[:n1]  # as many external non-member individuals as target individuals
    if not ext_names:
        raise DataError(f"{external.root}: no eligible individuals for external non-members.")
    if p.s.nonmember_use == "attack":
        rows = _nonmember_rows(p, ext, ext_names, "external", "ID2", "attack")
        rows += _nonmember_rows(p, main, id3, "main", "ID3", "eval")
    else:
        rows = _nonmember_rows(p, main, id2, "main", "ID2", "attack")
        rows += _nonmember_rows(p, ext, ext_names, "external", "ID3", "eval")
    return rows, ext_excluded


def plan_splits(
    catalog: Catalog,
    settings: SplitSettings,
    external: Catalog | None = None,
) -> tuple[list[dict], dict]:
    """Plan the identity-disjoint split.

    Args:
        catalog: the main catalog.
        settings: seed, thresholds, fractions, grouping, augmentation and protocol.
        external: optional second catalog whose individuals replace ID2 (``nonmember_use=attack``)
            or ID3 (``nonmember_use=eval``), as in the paper's Figure 7.

    Returns:
        (rows, info): manifest rows (see module docstring) in a deterministic order, and a dict
        with counts and the excluded individuals.
    """
    s = _resolve(settings)
    id_fr = check_fractions(s.identity_fractions, "data.split.identity_fractions")
    ph_fr = check_fractions(s.photo_fractions, "data.split.photo_fractions")
    main, excluded = _eligible(catalog, s)
    if s.split_protocol == "time":
        if external is not None:
            raise DataError("data.split.split_protocol='time' does not take a nonmember catalog.")
        s = replace(s, time_cutoff=time_cutoff([r for v in main.values() for r in v], s, ph_fr))
        id1, id2, id3 = time_identity_sets(main, s, id_fr)
    else:
        id1, id2, id3 = _identity_sets(catalog, sorted(main), s, id_fr, external is not None)
    targets = None
    if s.images_per_identity:
        targets = [max(1, math.ceil(s.images_per_identity * f)) for f in ph_fr]
    p = Planner(s, ph_fr, targets, {ident: k for k, ident in enumerate(sorted(id1))})
    protocol = PROTOCOLS[s.split_protocol]
    rows: list[dict] = []
    for ident in sorted(id1):
        rng = np.random.default_rng([s.seed, _stable_int(ident)])
        rows.extend(protocol(p, ident, main[ident], rng))
    ext_excluded: dict[str, str] = {}
    if external is not None:
        more, ext_excluded = _external_rows(p, external, main, id2, id3, len(id1))
        rows.extend(more)
    else:
        rows.extend(_nonmember_rows(p, main, id2, "main", "ID2", "attack"))
        rows.extend(_nonmember_rows(p, main, id3, "main", "ID3", "eval"))
    rows, subsample = _subsample_members(_finish(rows), s)
    info = {
        "n_individuals": {
            "ID1": len(id1),
            "ID2": len({r["identity"] for r in rows if r["id_set"] == "ID2"}),
            "ID3": len({r["identity"] for r in rows if r["id_set"] == "ID3"}),
        },
        "n_rows": {sp: sum(r["split"] == sp for r in rows) for sp in ORDER},
        "excluded_individuals": excluded,
        "excluded_external_individuals": ext_excluded,
        "class_names": sorted(id1),
    }
    if s.split_protocol == "time":
        info["time_cutoff"] = s.time_cutoff
    if subsample:
        info["subsample"] = subsample
        info["class_names"] = subsample["kept_individuals"]
        info["n_individuals"]["ID1"] = len(subsample["kept_individuals"])
    return rows, info


def _subsample_members(rows: list[dict], s: SplitSettings) -> tuple[list[dict], dict]:
    """Apply ``member_fraction`` and ``max_train_groups`` to finished rows (labels renumbered
    0..C-1 over the kept individuals); returns (rows, {} when both are off, else what was kept)."""
    if not 0 < s.member_fraction <= 1 or (
        s.max_train_groups is not None and s.max_train_groups < 1
    ):
        raise DataError(
            f"data.split.member_fraction={s.member_fraction}, max_train_groups="
            f"{s.max_train_groups}: give a fraction in (0, 1] and a group count >= 1 (or null)."
        )
    if s.member_fraction == 1 and s.max_train_groups is None:
        return rows, {}
    id1 = sorted({r["identity"] for r in rows if r["id_set"] == "ID1"})
    order = [id1[k] for k in np.random.default_rng([s.seed, 15]).permutation(len(id1))]
    kept = sorted(order[: max(1, round(len(id1) * s.member_fraction))])
    train_groups: dict[str, list[str]] = {}
    for ident in kept:
        groups = sorted(
            {
                r["group"] or r["file"]
                for r in rows
                if r["identity"] == ident and r["split"] == "train"
            }
        )
        rng = np.random.default_rng([s.seed, _stable_int(ident), 15])
        groups = [groups[k] for k in rng.permutation(len(groups))]
        train_groups[ident] = sorted(groups[: s.max_train_groups or len(groups)])
    label = {ident: k for k, ident in enumerate(kept)}
    out = []
    for r in rows:
        if r["id_set"] == "ID1":
            if r["identity"] not in label:
                continue
            if (
                r["split"] == "train"
                and (r["group"] or r["file"]) not in train_groups[r["identity"]]
            ):
                continue
            r = {**r, "label": label[r["identity"]]}
        out.append(r)
    dropped = sorted(set(id1) - set(kept))
    return out, {
        "kept_individuals": kept,
        "dropped_individuals": dropped,
        "train_groups": train_groups,
    }


#: manifest order of the splits
ORDER = {"train": 0, "val": 1, "test": 2, "attack": 3, "eval": 4}


def _finish(rows: list[dict]) -> list[dict]:
    """Add ``sample_id``, sort (split, identity, file, aug) and keep :data:`COLUMNS`."""
    for r in rows:
        r["sample_id"] = f"{r['catalog']}:{r['file']}#{r['aug']}"
    rows.sort(key=lambda r: (ORDER[r["split"]], r["identity"], r["file"], r["aug"]))
    return [{c: r[c] for c in COLUMNS} for r in rows]


def _stable_int(text: str) -> int:
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:4], "little")
