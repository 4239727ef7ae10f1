"""``cli.py discriminate --run <embedding run> --catalog <known whales> --images <folder>``: is
each new photo, and each encounter, a whale of the catalog (known), a new one, or can the run not
tell (undecided)? And which catalog whales should a person check first? With a population
embedding, no target classifier.

The embedding run (``cli.py fit --config beluga_reid_cpu.yaml``) learnt from other whales. It
embeds the catalog of known whales (``--catalog``, Where's Whale-do layout, the photos of
``--viewpoint``), the reference whales the run held apart, and every image under ``--images``
(recursively; encounters as for a classifier run: a subfolder, ``--groups``, ``--capture_gap``,
else each loose photo alone). Each photo, and each encounter (the mean of its photos'
embeddings), gets a score: its best catalog-whale cosine calibrated against the reference whales
(``--statistic``, :func:`attacks.reference_calibrated.calibrated_scores`), higher = known, and
``p_known``, that score mapped by Platt scaling fitted on the calibration samples (below).

The operating point is self-calibrated, per level (photo, encounter). New-whale samples: the
reference whales' photos (encounters) scored against the catalog, each whale left out of the
reference set. Known samples: the photos (encounters) of catalog whales with two or more
encounters, each scored against the catalog minus its own encounter. The threshold lets ``--fpr``
of the new samples through (or is ``--threshold``, on the score scale); TPR, FPR and AUROC on
these samples come with 95% bootstrap intervals by individual. When they cannot separate known
from new (AUROC interval reaching 0.5, TPR interval reaching the FPR or the --fpr target, or
TPR 0) the level's decisions are ``undecided`` with a warning (``--force_decisions`` decides
anyway).

A photo is ``undecided`` and flagged ``out_of_distribution`` when its nearest catalog photo is
less similar than for 99% of the reference whales' photos, and flagged ``viewpoint`` when its
viewpoint (the ``viewpoint`` column of ``--groups``) is not among the catalog photos compared.

Writes the folder of :mod:`experiments.commands.discriminate` (``photos.csv``, ``encounters.csv``,
``candidates.csv``, ``operating_point.json``, the contact sheet) into a fresh
``<run>/discriminate/<images folder>[-K]/`` or into ``--output`` (new or empty, else
``--overwrite``).
"""

from __future__ import annotations

import csv
import sys
from pathlib import Path
from typing import Literal

import numpy as np

from attacks import open_set as osm
from attacks.knn import nearest_cosine
from attacks.known_new_levels import decide
from attacks.reference_calibrated import STATISTICS
from datamodules.catalogs import NoaaReader
from datamodules.errors import DataError
from experiments.known_new.decisions import (
    fit_health_warning,
    level_warning,
    ood_floor,
    ood_rule,
)
from experiments.known_new.operating_point import (
    Photos,
    operating_point,
    repeat_whales,
    samples,
    score_queries,
)
from experiments.known_new.output_folder import (
    candidate_rows,
    level_entry,
    one_warning,
    output_folder,
    write_outputs,
)
from experiments.known_new.scan import add_photo_options, encounters_of, scan
from experiments.known_new.tables import counts, encounter_table, photo_table
from experiments.run.config_files import add_flag, command_parser
from experiments.run.embedding_folder import EmbeddingRun, catalog_rows

LEVELS = ("photo", "encounter")


# ---- inputs ------------------------------------------------------------------------------------
def check_options(a) -> None:
    """Every option, before anything is read or embedded (choices are refused by the parser)."""
    if not 0 < a.fpr < 1:
        raise DataError(f"--fpr {a.fpr}: a false-positive rate between 0 and 1, e.g. 0.05")
    if not 10 <= a.n_boot <= 100000:
        raise DataError(f"--n_boot {a.n_boot}: give 10 to 100000 bootstrap replicates")
    if a.capture_gap is not None and not a.capture_gap > 0:
        raise DataError(f"--capture_gap {a.capture_gap}: minutes between encounters, e.g. 30")
    if a.catalog is None:
        raise DataError(
            f"--catalog: --run {a.run} is an embedding run; pass --catalog <the known whales' "
            "catalog folder (metadata.csv + images/)>"
        )
    if not (Path(a.catalog) / "metadata.csv").is_file():
        raise DataError(
            f"--catalog {a.catalog}: no metadata.csv; pass a Where's Whale-do catalog folder "
            "(metadata.csv + images/)"
        )
    if not Path(a.images).is_dir():
        raise DataError(f"--images {a.images}: not a folder; pass the folder of new photos")
    if a.groups is not None and not Path(a.groups).is_file():
        raise DataError(f"--groups {a.groups}: file not found")


def catalog_viewpoints(catalog: str | Path, viewpoint: str | None) -> set[str]:
    """The viewpoints of the catalog photos compared: ``{viewpoint}``, or every value of
    ``metadata.csv``'s ``viewpoint`` column; empty when it has none (nothing to check)."""
    with (Path(catalog) / "metadata.csv").open(newline="") as fh:
        rows = list(csv.DictReader(fh))
    if not rows or "viewpoint" not in rows[0]:
        return set()
    return {viewpoint} if viewpoint else {r["viewpoint"] for r in rows if r["viewpoint"]}


def embed_catalog(er: EmbeddingRun, a) -> Photos:
    """The catalog's photos (``--viewpoint``), embedded; refuses one without a known sample."""
    rows = catalog_rows(a.catalog, a.viewpoint)
    if not rows:
        raise DataError(f"--catalog {a.catalog}: no photos of viewpoint {a.viewpoint}; try another")
    ident = np.asarray([r["identity"] for r in rows])
    enc = np.asarray([r["encounter"] for r in rows])
    if not len(repeat_whales(ident, enc)):
        raise DataError(
            f"--catalog {a.catalog}: no whale with two or more encounters; the known-whale rate "
            "needs at least one"
        )
    emb = er.embed(NoaaReader(viewpoint=a.viewpoint), a.catalog, rows, tta=a.tta)
    paths = np.asarray([str((Path(a.catalog) / r["file"]).resolve()) for r in rows])
    return Photos(emb, ident, enc, paths)


def embed_reference(er: EmbeddingRun, a) -> Photos:
    """The run's reference whales (population manifest order, as :meth:`EmbeddingRun.reference`),
    embedded."""
    rows = [r for r in er.population if r["role"] == "reference"]
    emb, ident = er.reference(tta=a.tta)
    return Photos(emb, ident, np.asarray([r["encounter"] for r in rows]))


def embed_images(er: EmbeddingRun, a, good: list[Path], enc_of: dict) -> Photos:
    """The new photos, embedded, with their encounters ``enc_of``."""
    folder = Path(a.images)
    rel = [p.relative_to(folder) for p in good]
    emb = er.embed(NoaaReader(), folder, [{"file": str(r)} for r in rel], tta=a.tta)
    enc = np.asarray([enc_of[p] for p in good])
    return Photos(emb, np.full(len(rel), ""), enc, np.asarray([str(r) for r in rel]))


# ---- scores, flags and decisions ---------------------------------------------------------------
def photo_flags(a, photos: Photos, catalog: Photos, ref: Photos, views: list) -> tuple:
    """``(flag (N,), note (N,), floor)``: ``out_of_distribution`` below the floor of
    :func:`~experiments.known_new.decisions.ood_floor` on the reference whales' photos,
    ``viewpoint`` for a viewpoint the compared catalog lacks."""
    floor = ood_floor(nearest_cosine(ref.emb, catalog.emb))
    nearest = nearest_cosine(photos.emb, catalog.emb)
    compared = catalog_viewpoints(a.catalog, a.viewpoint)
    flag, note = [], []
    for c, v in zip(nearest, views):
        if compared and v and v not in compared:
            flag.append("viewpoint")
            note.append(f"viewpoint {v}; the catalog compared has {', '.join(sorted(compared))}")
        elif c < floor:
            flag.append("out_of_distribution")
            note.append(f"nearest catalog photo cosine {c:.3f} < {floor:.3f}")
        else:
            flag.append("")
            note.append("")
    return np.asarray(flag, dtype=object), np.asarray(note, dtype=object), floor


def run_level(a, lvl: str, photos: Photos, catalog: Photos, ref: Photos) -> tuple:
    """``(operating point, query rows, scores)`` of one level: ``score``, ``p`` (p_known),
    ``dec``, catalog ``names`` and ``sims`` (rows, K)."""
    point = operating_point(samples(catalog, ref, a.statistic, lvl), a.fpr, a.threshold, a.n_boot)
    q = photos.level(lvl)
    res = score_queries(q, catalog, ref, a.statistic)
    platt = osm.Platt(**point["platt"])
    res["p"] = platt(res["score"])
    can = point["separable"] or a.force_decisions
    res["dec"] = decide(res["score"], point["threshold"], can)
    return point, q, res


def candidates(photos: Photos, catalog: Photos, q: Photos, res: dict) -> list[dict]:
    """``candidates.csv`` rows of the encounters ``q`` (level ``encounter``)."""
    col = {n: k for k, n in enumerate(res["names"])}
    gallery = {
        "emb": catalog.emb,
        "label": np.asarray([col[i] for i in catalog.ident]),
        "paths": catalog.paths,
        "names": res["names"],
    }
    rows = []
    for j, name in enumerate(q.enc):
        mine = photos.enc == name
        query = {"emb": photos.emb[mine], "paths": photos.paths[mine]}
        rows += candidate_rows(str(name), res["sims"][j], "cosine", query, gallery)
    return rows


# ---- the command -------------------------------------------------------------------------------
def prepare(a) -> tuple:
    """Checked inputs: ``(run, output folder, readable photos, {path: status} of the rest)``."""
    check_options(a)
    er = EmbeddingRun.open(a.run)
    if len({r["identity"] for r in er.population if r["role"] == "reference"}) < 2:
        raise DataError(
            f"--run {a.run}: fewer than 2 reference whales held apart; the new-whale rate leaves "
            "one out at a time. Refit with data.holdout_individuals >= 2"
        )
    out = output_folder(er.folder, Path(a.images), a.output, a.overwrite)
    folder = Path(a.images)
    good, bad = scan(folder, {Path(a.groups)} if a.groups else None, a.unreadable)
    if not good:
        raise DataError(f"--images {folder}: no readable photos; pass a folder of whale photos")
    return er, out, good, bad


def overlap(catalog: Photos, ref: Photos, cos: float = 0.999) -> list[str]:
    """A warning when reference photos are near-duplicates of catalog photos (``cos``)."""
    n = int((nearest_cosine(ref.emb, catalog.emb) > cos).sum())
    if not n:
        return []
    return [
        f"warning: {n} of the {len(ref.emb)} reference-whale photos are near-duplicates (cosine > "
        f"{cos}) of catalog photos; the catalog overlaps the run's reference whales, so the "
        "new-whale samples are not new and the operating point is biased"
    ]


def discriminate(a, log=print) -> dict:
    """Score, decide and write the outputs of parsed options ``a``; returns
    ``operating_point.json``."""
    er, out, good, bad = prepare(a)
    folder = Path(a.images)
    enc_of, views, notes = encounters_of([*good, *bad], folder, a.groups, a.capture_gap)
    catalog, ref = embed_catalog(er, a), embed_reference(er, a)
    photos = embed_images(er, a, good, enc_of)
    points, lv = {}, {}
    for lvl in LEVELS:
        points[lvl], q, lv[lvl] = run_level(a, lvl, photos, catalog, ref)
    flag, note, floor = photo_flags(a, photos, catalog, ref, [views[p] for p in good])
    lv["photo"]["dec"][flag != ""] = "undecided"
    note = np.asarray([n or notes[p] for n, p in zip(note, good)], dtype=object)
    res = {"good": good, "enc": photos.enc, "flag": flag, "note": note}
    res.update(p=lv["photo"]["p"], dec=lv["photo"]["dec"], enc_names=[str(e) for e in q.enc])
    res.update(enc_p=lv["encounter"]["p"], enc_dec=lv["encounter"]["dec"])
    tau = {lvl: points[lvl]["threshold_p"] for lvl in LEVELS}
    tables = {
        "photos": photo_table(res, bad, folder, enc_of),
        "encounters": encounter_table(res, bad, enc_of, tau["encounter"], "mean_embedding"),
        "candidates": candidates(photos, catalog, q, lv["encounter"]),
    }
    warnings = overlap(catalog, ref) + [w for w in [fit_health_warning(er.folder)] if w]
    warnings += [
        level_warning(lvl, p["why_not"], a.force_decisions)
        for lvl, p in points.items()
        if not p["separable"]
    ]
    op = summary(a, er, catalog, ref, out, bad, points, tau) | {
        "warning": one_warning(warnings),
        "warnings": warnings,
        "counts": counts(tables, bad),
        "out_of_distribution_rule": ood_rule("catalog photo", floor).replace(
            "the run's own held-out photos", "the run's reference whales' photos"
        ),
    }
    write_outputs(out, tables, op, log)
    return op


def summary(a, er, catalog, ref, out: Path, bad: dict, points: dict, tau: dict) -> dict:
    """``operating_point.json`` but its warnings and counts."""
    op = {
        "run": str(er.folder),
        "engine": "embedding",
        "attack": a.statistic,
        "aggregate": "mean_embedding",
        "rule": (
            f"a photo is known iff its score >= {points['photo']['threshold']:.3f} (p_known >= "
            f"{tau['photo']:.3f}); an encounter (the mean of its photos' normalised embeddings) "
            f"is known iff its score >= {points['encounter']['threshold']:.3f} (p_known >= "
            f"{tau['encounter']:.3f}); margin = p_known minus that threshold"
        ),
        "forced": bool(a.force_decisions),
        "capture_gap_minutes": a.capture_gap,
        "levels": points,
        "statistic": a.statistic,
        "catalog": str(a.catalog),
        "images": str(Path(a.images).resolve()),
        "output": str(out),
        "viewpoint": a.viewpoint,
        "tta": a.tta,
        "catalog_whales": len(np.unique(catalog.ident)),
        "reference_whales": len(np.unique(ref.ident)),
        "skipped": {str(p.relative_to(a.images)): s for p, s in bad.items()},
        "samples": {
            "known": "photos (encounters) of catalog whales with 2+ encounters, each against the "
            "catalog minus its own encounter",
            "new": "the reference whales' photos (encounters) against the catalog, each whale "
            "left out of the reference set",
        },
    }
    for lvl, p in points.items():
        keep = {k: v for k, v in p.items() if k not in ("platt",)}
        op[lvl] = level_entry(keep, a.fpr)
    return op


def parser():
    """The ``cli.py discriminate`` parser for embedding runs."""
    p = command_parser("discriminate", __doc__)
    p.add_argument("--run", type=str, required=True, help="embedding run folder (ReIDEmbedding)")
    p.add_argument("--catalog", type=str | None, default=None, help="known whales' catalog folder")
    add_photo_options(p)
    p.add_argument("--viewpoint", type=str | None, default="top", help="catalog viewpoint kept")
    p.add_argument("--statistic", type=Literal[STATISTICS], default="zscore", help="score")
    p.add_argument("--fpr", type=float, default=0.05, help="target FPR on new-whale samples")
    p.add_argument(
        "--threshold", type=float | None, default=None, help="score threshold (overrides --fpr)"
    )
    add_flag(p, "tta", "average photo and mirror embeddings", default=True)
    return p


def main(argv: list[str]) -> dict:
    """Entry point of ``cli.py discriminate`` for an embedding ``--run``."""
    from experiments.run.config_files import parse_options

    a = parse_options(parser(), argv)

    def log(msg, file=None):
        print(msg, file=file or sys.stdout)

    return discriminate(a, log)
