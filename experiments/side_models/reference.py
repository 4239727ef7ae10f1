"""Reference models of the calibrated attacks (LiRA, RMIA), trained by the run's recipe
(:func:`experiments.side_models.training.train_classifier`) and cached in ``<run>/references/<key>/``.

Two levels (``docs/calibrated_attacks.md``):

* ``sample``: the target's label space; reference ``k`` trains on a random half of the photos of
  the target's known individuals (ID1: train, val and test photos); every photo is IN for half
  of the references (balanced halves; with one reference, IN with probability 1/2).
* ``identity``: attack-side individuals only (ID2). Reference ``k`` knows a random half of them
  (at least two; drawn independently per reference) and trains on half of each known
  individual's photos; a row is IN when its individual is
  known. ID1 and ID3 individuals (the evaluation) are never in any reference's training rows.

Each reference is one job (``index``), so a SLURM array can train them in parallel; the attack
re-uses the cached files. The key hashes the settings, the manifest and the target checkpoint.
"""

from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path

import numpy as np

from attacks.signals import load_signals, save_signals
from datamodules.errors import DataError
from experiments.run.folder import RunContext
from experiments.run.outputs import write_json
from experiments.side_models.training import relabel, train_classifier
from lightning_modules.augmented import augmented_logits, view_names

LEVELS = ("sample", "identity")
#: settings fields that decide the reference models (the rest only changes the attacks)
KEY_FIELDS = ("n_models", "arch", "epochs", "batch_size", "seed", "flip", "shift")


def file_sha(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def cache_key(ctx: RunContext, s) -> str:
    """Hash of the reference settings, the manifest hash and the target checkpoint's sha256."""
    spec = {k: getattr(s, k) for k in KEY_FIELDS}
    spec["manifest"] = ctx.header.get("hash")
    spec["checkpoint"] = file_sha(ctx.checkpoint) if ctx.checkpoint.is_file() else None
    return hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:16]


def keep_matrix(n: int, k: int, seed: int) -> np.ndarray:
    """(n, k) bool: each unit IN for exactly ``k // 2`` random references (``k == 1``: IN with
    probability 1/2). Deterministic in ``seed``."""
    rng = np.random.default_rng(seed)
    if k == 1:
        return rng.random((n, 1)) < 0.5
    keep = np.zeros((n, k), bool)
    for i in range(n):
        keep[i, rng.permutation(k)[: k // 2]] = True
    return keep


def plan(rows: list[dict], class_names: list[str], level: str, k: int, n_models: int, seed: int):
    """``(train_rows, identities, in_mask (len(rows),) bool)`` of reference ``k`` of ``level``.

    Pure: no training. ``rows`` are the run's manifest rows (with ``split`` and ``identity``).
    """
    if level == "sample":
        known = set(class_names)
        pool = [i for i, r in enumerate(rows) if r["identity"] in known and r["split"] != "attack"]
        keep = keep_matrix(len(pool), n_models, seed)[:, k]
        in_mask = np.zeros(len(rows), bool)
        in_mask[np.asarray(pool, dtype=int)[keep]] = True
        return [rows[i] for i in np.flatnonzero(in_mask)], list(class_names), in_mask
    if level != "identity":
        raise ValueError(f"reference level {level!r}: use one of {LEVELS}")
    id2 = sorted({r["identity"] for r in rows if r["split"] == "attack"})
    rng = np.random.default_rng(seed * 1000 + k)
    known = set(rng.permutation(id2)[: max(min(2, len(id2)), len(id2) // 2)].tolist())
    train = []
    for name in sorted(known):  # half of each known individual's photos (at least one)
        photos = [r for r in rows if r["split"] == "attack" and r["identity"] == name]
        order = rng.permutation(len(photos))[: max(1, len(photos) // 2)]
        train += [photos[i] for i in sorted(order)]
    in_mask = np.array([r["split"] == "attack" and r["identity"] in known for r in rows])
    return train, sorted(known), in_mask


def train_reference(ctx: RunContext, s, level: str, k: int, folder: Path, log=print) -> dict:
    """Train reference ``k`` of ``level`` and save ``<level>/ref_<k>.npz`` (``aug_logits``
    (N, A, C) over every manifest row, ``in_mask`` (N,)) and ``ref_<k>.json``; cached."""
    path = folder / level / f"ref_{k:03d}.npz"
    meta = path.with_suffix(".json")
    if path.is_file() and meta.is_file():
        return json.loads(meta.read_text())
    train_rows, idents, in_mask = plan(ctx.rows, ctx.class_names, level, k, s.n_models, s.seed)
    margs = ctx.model_args
    if s.arch:
        margs["arch"] = s.arch
    epochs = s.epochs or int(ctx.config.get("trainer", {}).get("max_epochs") or 10)
    log(f"reference {level} {k}: {len(train_rows)} photos of {len(idents)} individuals")
    model, secs = train_classifier(
        train_rows,
        ctx.roots,
        idents,
        margs,
        image_size=ctx.image_size,
        epochs=epochs,
        batch_size=s.batch_size,
        seed=s.seed * 1000 + k,
        device=ctx.device,
    )
    t0 = time.perf_counter()
    loader = ctx.loader(relabel(ctx.rows, idents))
    _, logits = augmented_logits(model, loader, ctx.device, flip=s.flip, shift=s.shift)
    save_signals(path, {"aug_logits": logits, "in_mask": in_mask})
    info = {
        "level": level,
        "index": k,
        "arch": margs.get("arch"),
        "epochs": epochs,
        "train_seconds": secs,
        "query_seconds": time.perf_counter() - t0,
        "n_train": len(train_rows),
        "identities": idents,
        "train_identities": sorted({r["identity"] for r in train_rows}),
    }
    write_json(meta, info)
    return info


def describe(ctx: RunContext, s, folder: Path) -> None:
    """``references.json``: what a folder's references are for (checked by ``reference_runs``)."""
    spec = {k: getattr(s, k) for k in KEY_FIELDS}
    info = {
        "manifest_hash": ctx.header.get("hash"),
        "class_names": ctx.class_names,
        **spec,
        "views": view_names(s.flip, s.shift),
    }
    write_json(folder / "references.json", info)


def validate(folder: Path, ctx: RunContext, s) -> None:
    """One-line DataError unless ``folder`` holds references for this run's manifest, label
    space and query views."""
    meta = folder / "references.json"
    if not meta.is_file():
        raise DataError(
            f"--reference_runs {folder}: no references.json; pass a folder "
            "<run>/references/<key> written by `cli.py attack`."
        )
    info = json.loads(meta.read_text())
    if info.get("manifest_hash") != ctx.header.get("hash"):
        raise DataError(
            f"--reference_runs {folder}: made for another split manifest "
            f"({str(info.get('manifest_hash'))[:12]}); train references on this run."
        )
    if list(info.get("class_names", [])) != ctx.class_names:
        raise DataError(f"--reference_runs {folder}: another label space than the target's.")
    if info.get("views") != view_names(s.flip, s.shift):
        raise DataError(
            f"--reference_runs {folder}: query views {info.get('views')} differ from "
            "calibrated.flip/shift; set them alike."
        )


def load_references(folders: list[Path], level: str, n_models: int) -> tuple[list, list]:
    """``(aug_logits list, info list)`` of the first ``n_models`` references of ``level`` over
    ``folders`` (in order); DataError if fewer exist."""
    found = [p for f in folders for p in sorted((f / level).glob("ref_*.npz"))][:n_models]
    if len(found) < n_models:
        raise DataError(
            f"references of level {level}: found {len(found)} of {n_models} in "
            f"{[str(f) for f in folders]}; train the missing ones (calibrated.index)."
        )
    sigs = [load_signals(p) for p in found]
    infos = [json.loads(p.with_suffix(".json").read_text()) for p in found]
    return sigs, infos
