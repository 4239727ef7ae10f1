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
  original can land in train and test (the manifest's ``file`` column names the original).

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

import csv
import hashlib
import io
import json
import math
from collections import defaultdict
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from datamodules.catalogs import Catalog, Record, group_key
from datamodules.errors import DataError, SplitLeakError

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
SPLIT_TO_SET = {
    "train": "train",
    "val": "attack",
    "test": "eval",
    "attack": "attack",
    "eval": "eval",
}
PROTOCOLS = ("photo", "group", "paper")
ROTATIONS = ("rot90", "rot180", "rot270", "rot330")


@dataclass(frozen=True)
class SplitSettings:
    """Everything the planner depends on; saved in the manifest header."""

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


def _check_fractions(fr, key: str) -> tuple[float, float, float]:
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


def _augment(originals: list[dict], target: int, rng: np.random.Generator) -> list[dict]:
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
    s = settings
    if s.split_protocol is None:
        s = replace(s, split_protocol="group" if s.group_by else "photo")
    if s.split_protocol not in PROTOCOLS:
        raise DataError(
            f"data.split_protocol={s.split_protocol!r}: choose one of {list(PROTOCOLS)}."
        )
    if s.split_protocol == "group" and not s.group_by:
        raise DataError("data.split_protocol='group' needs data.group_by (e.g. encounter_id).")
    id_fr = _check_fractions(s.identity_fractions, "data.identity_fractions")
    ph_fr = _check_fractions(s.photo_fractions, "data.photo_fractions")
    use_groups = s.split_protocol == "group"
    # eligibility does not depend on the protocol, so every protocol sees the same individuals
    min_groups = s.min_groups if s.min_groups is not None else (3 if s.group_by else 1)

    def by_identity(cat: Catalog) -> dict[str, list[Record]]:
        d: dict[str, list[Record]] = defaultdict(list)
        for r in cat.records:
            d[r.identity].append(r)
        return {k: sorted(v, key=lambda r: r.file) for k, v in sorted(d.items())}

    def eligible(cat: Catalog) -> tuple[dict[str, list[Record]], dict[str, str]]:
        keep, excluded = {}, {}
        for ident, recs in by_identity(cat).items():
            n_groups = len({group_key(r, s.group_by) for r in recs}) if s.group_by else len(recs)
            if len(recs) < s.min_images:
                excluded[ident] = f"{len(recs)} photos < data.min_images={s.min_images}"
            elif n_groups < min_groups:
                excluded[ident] = f"{n_groups} groups < data.min_groups={min_groups}"
            else:
                keep[ident] = recs
        return keep, excluded

    main, excluded = eligible(catalog)
    rng = np.random.default_rng(s.seed)
    idents = sorted(main)
    rng.shuffle(idents)
    n = len(idents)
    n1 = max(1, round(n * id_fr[0]))
    n2 = max(1, round(n * id_fr[1]))
    n3 = n - n1 - n2
    if external is not None:
        if s.nonmember_use not in ("attack", "eval"):
            raise DataError(f"data.nonmember_use={s.nonmember_use!r}: choose 'attack' or 'eval'.")
        # the external catalog fills one non-member role; the main catalog fills the other two
        n1 = max(
            1, round(n * id_fr[0] / (id_fr[0] + id_fr[2 if s.nonmember_use == "attack" else 1]))
        )
        n2 = n - n1 if s.nonmember_use == "eval" else 0
        n3 = n - n1 if s.nonmember_use == "attack" else 0
    if n1 < 1 or (n2 < 1 and external is None) or (n3 < 1 and external is None):
        raise DataError(
            f"{catalog.root}: only {n} individuals have at least data.min_images={s.min_images} "
            f"photos (and {min_groups} groups); ID1/ID2/ID3 need at least one each. Lower "
            "data.min_images or add individuals."
        )
    id1, id2, id3 = idents[:n1], idents[n1 : n1 + n2], idents[n1 + n2 :]
    labels = {ident: k for k, ident in enumerate(sorted(id1))}

    def row(rec: Record, cat_name: str, id_set: str, split: str, aug: str = "") -> dict:
        return {
            "catalog": cat_name,
            "file": rec.file,
            "identity": rec.identity,
            "group": group_key(rec, s.group_by) or "" if s.group_by else "",
            "id_set": id_set,
            "split": split,
            "role": "member" if id_set == "ID1" else "nonmember",
            "set": SPLIT_TO_SET[split],
            "label": labels.get(rec.identity, -1) if id_set == "ID1" else -1,
            "aug": aug,
        }

    per_split_target = None
    if s.images_per_identity:
        per_split_target = [max(1, math.ceil(s.images_per_identity * f)) for f in ph_fr]

    rows: list[dict] = []
    for ident in sorted(id1):
        recs = main[ident]
        id_rng = np.random.default_rng([s.seed, _stable_int(ident)])
        if s.split_protocol == "paper" and per_split_target:
            pool = _augment(
                [row(r, "main", "ID1", "train") for r in recs], sum(per_split_target), id_rng
            )
            order = id_rng.permutation(len(pool))
            c = _counts(len(pool), ph_fr)
            for rank, k in enumerate(order):
                split = "train" if rank < c[0] else "val" if rank < c[0] + c[1] else "test"
                pool[k] = {**pool[k], "split": split, "set": SPLIT_TO_SET[split]}
            rows.extend(pool)
            continue
        if len(recs) < 3:
            raise DataError(
                f"identity {ident!r} has {len(recs)} photos; an ID1 individual needs at least 3 "
                "(train, val, test). Set data.min_images to 3 or more to leave such individuals out."
            )
        if use_groups:
            groups: dict[str, list[Record]] = defaultdict(list)
            for r in recs:
                groups[group_key(r, s.group_by)].append(r)
            if len(groups) < 3:
                raise DataError(
                    f"identity {ident!r} has {len(groups)} groups by data.group_by={s.group_by!r}; "
                    "an ID1 individual needs 3 to fill train, val and test. Set data.min_groups "
                    "to 3 or more to leave such individuals out."
                )
            where = _assign_groups(dict(groups), ph_fr, id_rng)
            split_of = {r.file: where[group_key(r, s.group_by)] for r in recs}
        else:
            order = id_rng.permutation(len(recs))
            c = _counts(len(recs), ph_fr)
            split_of = {}
            for rank, k in enumerate(order):
                split_of[recs[k].file] = (
                    "train" if rank < c[0] else "val" if rank < c[0] + c[1] else "test"
                )
        for k, split in enumerate(("train", "val", "test")):
            originals = [row(r, "main", "ID1", split) for r in recs if split_of[r.file] == split]
            target = per_split_target[k] if per_split_target else 0
            rows.extend(_augment(originals, target, id_rng))

    def nonmembers(source: dict[str, list[Record]], names, cat_name: str, id_set: str, split: str):
        # Balance with the members (paper, Table 3): a non-member individual contributes as many
        # photos as a target individual contributes to val (or test).
        for ident in sorted(names):
            id_rng = np.random.default_rng([s.seed, _stable_int(ident), 3])
            recs = source[ident]
            if per_split_target:
                target = per_split_target[1]
            else:
                target = max(1, round(len(recs) * ph_fr[1])) if s.balance_nonmembers else len(recs)
            keep = sorted(id_rng.permutation(len(recs))[:target]) if target < len(recs) else None
            originals = [
                row(recs[k], cat_name, id_set, split)
                for k in (keep if keep is not None else range(len(recs)))
            ]
            rows.extend(_augment(originals, target, id_rng))

    ext_excluded: dict[str, str] = {}
    if external is not None:
        ext, ext_excluded = eligible(external)
        ext_names = sorted(ext)
        np.random.default_rng(s.seed + 1).shuffle(ext_names)
        want = n1  # as many external non-member individuals as target individuals
        ext_names = ext_names[:want]
        if not ext_names:
            raise DataError(f"{external.root}: no eligible individuals for external non-members.")
        if s.nonmember_use == "attack":
            nonmembers(ext, ext_names, "external", "ID2", "attack")
            nonmembers(main, id3, "main", "ID3", "eval")
        else:
            nonmembers(main, id2, "main", "ID2", "attack")
            nonmembers(ext, ext_names, "external", "ID3", "eval")
    else:
        nonmembers(main, id2, "main", "ID2", "attack")
        nonmembers(main, id3, "main", "ID3", "eval")

    for r in rows:
        r["sample_id"] = f"{r['catalog']}:{r['file']}#{r['aug']}"
    order_key = {"train": 0, "val": 1, "test": 2, "attack": 3, "eval": 4}
    rows.sort(key=lambda r: (order_key[r["split"]], r["identity"], r["file"], r["aug"]))
    rows = [{c: r[c] for c in COLUMNS} for r in rows]
    info = {
        "n_individuals": {
            "ID1": len(id1),
            "ID2": len({r["identity"] for r in rows if r["id_set"] == "ID2"}),
            "ID3": len({r["identity"] for r in rows if r["id_set"] == "ID3"}),
        },
        "n_rows": {sp: sum(r["split"] == sp for r in rows) for sp in order_key},
        "excluded_individuals": excluded,
        "excluded_external_individuals": ext_excluded,
        "class_names": sorted(id1),
    }
    return rows, info


def _stable_int(text: str) -> int:
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:4], "little")


def manifest_csv(rows: list[dict], columns: list[str] = COLUMNS) -> str:
    """Canonical CSV text of the rows' ``columns`` (the hash is taken over this)."""
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    for r in rows:
        writer.writerow({c: r[c] for c in columns})
    return buf.getvalue()


def manifest_hash(rows: list[dict]) -> str:
    return hashlib.sha256(manifest_csv(rows).encode()).hexdigest()


def write_manifest(
    folder: Path, rows: list[dict], header: dict, columns: list[str] = COLUMNS
) -> Path:
    """Write ``split_manifest.csv`` and ``split_manifest.json`` (seed, hash, settings, counts).

    Shared by the whale and the detection pipelines (each passes its own ``columns``). If a
    manifest is already there (a resumed run), it must be identical: a changed config or seed
    fails instead of silently training on a different split.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    csv_path, json_path = folder / "split_manifest.csv", folder / "split_manifest.json"
    text = manifest_csv(rows, columns)
    digest = hashlib.sha256(text.encode()).hexdigest()
    if csv_path.exists():
        old = json.loads(json_path.read_text()) if json_path.exists() else {}
        if old.get("hash") != digest:
            raise SplitLeakError(
                f"{csv_path}: this run folder already holds a different split (hash "
                f"{str(old.get('hash', '?'))[:12]} vs {digest[:12]}). Resume with the same data config "
                "and seed, or start a new run."
            )
        return csv_path
    _atomic_write(csv_path, text)
    _atomic_write(json_path, json.dumps({**header, "hash": digest}, indent=2, default=str))
    return csv_path


def read_manifest(folder: Path) -> tuple[list[dict], dict]:
    """Rows (label as int) and header of a saved manifest."""
    folder = Path(folder)
    with (folder / "split_manifest.csv").open(newline="") as fh:
        rows = list(csv.DictReader(fh))
    for r in rows:
        r["label"] = int(r["label"])
    header = json.loads((folder / "split_manifest.json").read_text())
    return rows, header


def _atomic_write(path: Path, text: str) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(text)
    tmp.replace(path)


def verify_manifest(
    rows: list[dict],
    content_hash: dict[tuple[str, str], str] | None = None,
    *,
    protocol: str = "photo",
) -> dict:
    """Fail loudly on any leak between splits.

    Checks that ID1/ID2/ID3 identities are disjoint, that no photo (catalog, file) sits in two
    splits, and that no byte-identical image (same content hash) sits in two splits. Under the
    ``paper`` protocol copies of one original may sit in several ID1 splits on purpose; that
    overlap is counted and returned instead.

    Args:
        rows: manifest rows.
        content_hash: ``(catalog, file) -> sha256`` of the image bytes; skip the byte check if None.
        protocol: the split protocol the rows were planned with.

    Returns:
        ``{"paper_overlap_test_in_train": int, ...}`` counts for the report.
    """
    ident_sets: dict[tuple[str, str], set[str]] = defaultdict(set)
    file_splits: dict[tuple[str, str], set[str]] = defaultdict(set)
    for r in rows:
        ident_sets[(r["catalog"], r["identity"])].add(r["id_set"])
        file_splits[(r["catalog"], r["file"])].add(r["split"])
    for (cat, ident), sets in ident_sets.items():
        if len(sets) > 1:
            raise SplitLeakError(
                f"identity {ident!r} ({cat} catalog) is in {sorted(sets)}; ID1, ID2 and ID3 must "
                "be disjoint. Re-plan the split (data.seed) or fix duplicated identity names."
            )
    overlap = {}
    for key, splits in file_splits.items():
        if len(splits) > 1:
            if protocol == "paper" and splits <= {"train", "val", "test"}:
                continue
            raise SplitLeakError(
                f"photo {key[1]!r} ({key[0]} catalog) is in splits {sorted(splits)}; a photo "
                "must sit in one split. Re-plan the split or remove the duplicate row."
            )
    if protocol == "paper":
        train_files = {r["file"] for r in rows if r["split"] == "train"}
        test_rows = [r for r in rows if r["split"] == "test"]
        overlap["paper_overlap_test_in_train"] = sum(r["file"] in train_files for r in test_rows)
        overlap["paper_test_rows"] = len(test_rows)
    if content_hash is not None:
        hash_splits: dict[str, dict[str, tuple[str, str]]] = defaultdict(dict)
        for r in rows:
            key = (r["catalog"], r["file"])
            h = content_hash[key]
            hash_splits[h].setdefault(r["split"], key)
        for where in hash_splits.values():
            files = {v for v in where.values()}
            if len(where) > 1 and len(files) > 1:
                names = ", ".join(f"{sp}: {k[1]}" for sp, k in sorted(where.items()))
                raise SplitLeakError(
                    f"byte-identical images sit in different splits ({names}). Remove the "
                    "duplicate file from the catalog, or give both copies one identity and group."
                )
    return overlap


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            h.update(block)
    return h.hexdigest()
