"""``cli.py discriminate --run <embedding run> --catalog <known whales> --images <folder>``: is
each new photo, and each encounter, a whale of the catalog (known) or a new one, and which
catalog whales should a person check first? With a population embedding, no target classifier.

The embedding run (``cli.py fit --config beluga_reid_cpu.yaml``) learnt from other whales. It
embeds the catalog of known whales (``--catalog``, Where's Whale-do layout, ``--viewpoint``), the
reference whales the run held apart, and every image under ``--images`` (recursively; an
encounter is an immediate subfolder, a loose file is its own encounter). Each photo, and each
encounter (the mean of its photos' embeddings), gets:

* ``score``: its best catalog-whale cosine calibrated against the reference whales
  (``--statistic``, :func:`attacks.reference_calibrated.calibrated_scores`), higher = known;
* ``decision``: ``known`` iff ``score >= threshold``, else ``new``; ``undecided`` for every row of
  a level whose operating point cannot separate (below);
* ``cand1..cand5``: the five most similar catalog whales, their cosine and their best-matching
  catalog photo.

The operating point is self-calibrated, per level (photo, encounter). New-whale samples: the
reference whales' photos (encounters) scored against the catalog, each whale left out of the
reference set. Known samples: the photos (encounters) of catalog whales with two or more
encounters, each scored against the catalog minus its own encounter. The threshold lets ``--fpr``
of the new samples through (or is ``--threshold``, on the score scale); TPR, FPR and AUROC on
these samples come with 95% bootstrap intervals by individual. Unless the TPR interval lies above
the FPR, the level cannot separate known from new: its decisions are ``undecided`` and a warning
says so (``--force_decisions true`` decides anyway).

Writes ``photos.csv``, ``encounters.csv`` and ``operating_point.json`` into a fresh
``<run>/discriminate/<images folder>/`` or into ``--output`` (new or empty, else ``--overwrite``).
Files that are not images and unreadable images are listed (``--unreadable skip``) or stop the
command (``--unreadable error``).
"""

from __future__ import annotations

import csv
import sys
from pathlib import Path

import numpy as np

from attacks import open_set as osm
from attacks.reference_calibrated import STATISTICS
from datamodules.catalogs import NoaaReader
from datamodules.errors import DataError
from experiments.config_files import command_parser
from experiments.discriminate import scan
from experiments.embedding_run import EmbeddingRun, catalog_rows
from experiments.outputs import atomic_path, claim_folder, fresh_name, write_json
from experiments.reid_operating_point import (
    TOPK,
    Photos,
    candidates,
    decisions,
    operating_point,
    repeat_whales,
    samples,
    score_queries,
    warning,
)

LEVELS = ("photo", "encounter")
CANDIDATES = [f"cand{k}{s}" for k in range(1, TOPK + 1) for s in ("", "_cosine", "_photo")]
COLUMNS = {
    "photo": ["file", "encounter", "status", "score", "decision", *CANDIDATES],
    "encounter": ["encounter", "n_photos", "score", "decision", *CANDIDATES],
}


# ---- inputs ------------------------------------------------------------------------------------
def check_options(a) -> None:
    if not 0 < a.fpr < 1:
        raise DataError(f"--fpr {a.fpr}: a false-positive rate between 0 and 1, e.g. 0.05")
    if a.statistic not in STATISTICS:
        raise DataError(f"--statistic {a.statistic}: choose one of {', '.join(STATISTICS)}")
    if a.unreadable not in ("skip", "error"):
        raise DataError(f"--unreadable {a.unreadable}: choose skip or error")
    if not 10 <= a.n_boot <= 100000:
        raise DataError(f"--n_boot {a.n_boot}: give 10 to 100000 bootstrap replicates")
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
    paths = np.asarray([str(Path(a.catalog) / r["file"]) for r in rows])
    return Photos(emb, ident, enc, paths)


def embed_reference(er: EmbeddingRun, a) -> Photos:
    """The run's reference whales (population manifest order, as :meth:`EmbeddingRun.reference`),
    embedded."""
    rows = [r for r in er.population if r["role"] == "reference"]
    emb, ident = er.reference(tta=a.tta)
    return Photos(emb, ident, np.asarray([r["encounter"] for r in rows]))


def embed_images(er: EmbeddingRun, a, good: list[Path]) -> Photos:
    """The new photos, embedded; encounter = first path part under ``--images``."""
    folder = Path(a.images)
    rel = [p.relative_to(folder) for p in good]
    emb = er.embed(NoaaReader(), folder, [{"file": str(r)} for r in rel], tta=a.tta)
    enc = np.asarray([r.parts[0] for r in rel])
    return Photos(emb, np.full(len(rel), ""), enc, np.asarray([str(r) for r in rel]))


# ---- outputs -----------------------------------------------------------------------------------
def write_csv(path: Path, rows: list[dict], level: str) -> Path:
    with atomic_path(path) as tmp, tmp.open("w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=COLUMNS[level])
        w.writeheader()
        w.writerows(rows)
    return path


def level_rows(q: Photos, res: dict, dec: np.ndarray, cands: list[dict], level: str) -> list:
    """CSV rows of one level (scores with 3 decimals)."""
    rows = []
    for i, key in enumerate(q.paths if level == "photo" else q.enc):
        row = {"score": f"{res['score'][i]:.3f}", "decision": dec[i], **cands[i]}
        if level == "photo":
            row.update(file=key, encounter=q.enc[i], status="ok")
        else:
            row.update(encounter=key, n_photos=int(res["n_photos"][i]))
        rows.append(row)
    return rows


def summary_lines(s: dict) -> list[str]:
    """The printed summary (the figures of ``operating_point.json``)."""
    c = s["counts"]
    split = {k: ", ".join(f"{n} {d}" for d, n in c[k].items() if n) for k in LEVELS}
    lines = [
        f"discriminate (embedding, {s['statistic']}): {c['photos']} photos ({split['photo']}); "
        f"{c['encounters']} encounters ({split['encounter']}); {c['skipped']} skipped"
    ]
    for lvl, r in s["levels"].items():
        n = r["counts"]
        lines.append(
            f"{lvl}s: known iff score >= {r['threshold']:.3f} ({r['chosen_by']}); on "
            f"{n['known_samples']} known / {n['new_samples']} new samples ({n['known_individuals']}"
            f" / {n['new_individuals']} whales): "
            + ", ".join(
                f"{m.upper()} {r[m][0]:.3f} [{r[m][1]:.3f}, {r[m][2]:.3f}]"
                for m in ("tpr", "fpr", "auroc")
            )
        )
    return lines + [f"-> {s['output']}"]


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
    folder = Path(a.images)
    good, bad = scan(folder, None, a.unreadable)
    if not good:
        raise DataError(f"--images {folder}: no readable photos; pass a folder of whale photos")
    if a.output:
        out = claim_folder(a.output, overwrite=a.overwrite)
    else:
        out = fresh_name(er.folder / "discriminate", folder.resolve().name, "")
    return er, out, good, bad


def run_level(a, lvl: str, photos: Photos, catalog: Photos, ref: Photos, bad: dict) -> tuple:
    """``(operating point, decisions (N,), CSV rows)`` of one level of the new photos."""
    point = operating_point(samples(catalog, ref, a.statistic, lvl), a.fpr, a.threshold, a.n_boot)
    q = photos.level(lvl)
    res = score_queries(q, catalog, ref, a.statistic)
    res["n_photos"] = [int((photos.enc == e).sum()) for e in q.enc]
    dec = decisions(res["score"], point, a.force_decisions)
    rows = level_rows(q, res, dec, candidates(q, catalog, res), lvl)
    if lvl == "photo":
        rel = {p: p.relative_to(a.images) for p in bad}
        rows += [
            {"file": str(r), "encounter": r.parts[0], "status": bad[p]} for p, r in rel.items()
        ]
    return point, dec, rows


def overlap(catalog: Photos, ref: Photos, cos: float = 0.999) -> list[str]:
    """A warning when reference photos are near-duplicates of catalog photos (``cos``)."""
    n = int((osm.cosine(ref.emb, catalog.emb).max(1) > cos).sum())
    if not n:
        return []
    return [
        f"warning: {n} of the {len(ref.emb)} reference-whale photos are near-duplicates (cosine > "
        f"{cos}) of catalog photos; the catalog overlaps the run's reference whales, so the "
        "new-whale samples are not new and the operating point is biased"
    ]


def discriminate(a, log=print) -> dict:
    """Score, decide and write the outputs of parsed options ``a``; returns the JSON summary."""
    er, out, good, bad = prepare(a)
    for p, status in bad.items():
        log(f"skipped {p.relative_to(a.images)}: {status.replace('_', ' ')}", file=sys.stderr)
    catalog, ref = embed_catalog(er, a), embed_reference(er, a)
    photos = embed_images(er, a, good)
    summary = {"levels": {}, "warnings": overlap(catalog, ref), "counts": {"skipped": len(bad)}}
    for msg in summary["warnings"]:
        log(msg, file=sys.stderr)
    out.mkdir(parents=True, exist_ok=True)
    for lvl in LEVELS:
        point, dec, rows = run_level(a, lvl, photos, catalog, ref, bad)
        if not point["separable"]:
            summary["warnings"].append(warning(lvl, point, a.force_decisions))
            log(summary["warnings"][-1], file=sys.stderr)
        write_csv(out / f"{lvl}s.csv", rows, lvl)
        summary["levels"][lvl] = point
        summary["counts"][f"{lvl}s"] = len(dec)
        summary["counts"][lvl] = {d: int((dec == d).sum()) for d in ("known", "new", "undecided")}
    return finish(a, er, catalog, ref, out, bad, summary, log)


def finish(a, er, catalog, ref, out: Path, bad: dict, summary: dict, log) -> dict:
    """Complete, write and print the summary (``operating_point.json``)."""
    summary.update(
        statistic=a.statistic,
        fpr_target=a.fpr,
        run=str(er.folder),
        catalog=str(a.catalog),
        images=str(a.images),
        output=str(out),
        viewpoint=a.viewpoint,
        tta=a.tta,
        force_decisions=a.force_decisions,
        catalog_whales=len(np.unique(catalog.ident)),
        reference_whales=len(np.unique(ref.ident)),
        skipped={str(p.relative_to(a.images)): s for p, s in bad.items()},
        samples={
            "known": "photos (encounters) of catalog whales with 2+ encounters, each against the "
            "catalog minus its own encounter",
            "new": "the reference whales' photos (encounters) against the catalog, each whale "
            "left out of the reference set",
        },
    )
    write_json(out / "operating_point.json", summary)
    for line in summary_lines(summary):
        log(line)
    return summary


def parser():
    """The ``cli.py discriminate`` parser for embedding runs."""
    p = command_parser("discriminate", __doc__)
    p.add_argument("--run", type=str, required=True, help="embedding run folder (ReIDEmbedding)")
    p.add_argument("--catalog", type=str | None, default=None, help="known whales' catalog folder")
    p.add_argument("--images", type=str, required=True, help="folder of new photos")
    p.add_argument("--viewpoint", type=str | None, default="top", help="catalog viewpoint kept")
    p.add_argument(
        "--statistic", type=str, default="zscore", help=f"score: {' | '.join(STATISTICS)}"
    )
    p.add_argument("--fpr", type=float, default=0.05, help="target FPR on new-whale samples")
    p.add_argument(
        "--threshold", type=float | None, default=None, help="score threshold (overrides --fpr)"
    )
    p.add_argument(
        "--force_decisions", type=bool, default=False, help="decide even if it cannot separate"
    )
    p.add_argument("--output", "--out", type=str | None, default=None, help="new or empty folder")
    p.add_argument("--overwrite", type=bool, default=False, help="write into a non-empty folder")
    p.add_argument(
        "--unreadable", type=str, default="skip", help="unreadable image: skip (listed) | error"
    )
    p.add_argument("--n_boot", type=int, default=1000, help="bootstrap replicates for the CIs")
    p.add_argument("--tta", type=bool, default=True, help="average photo and mirror embeddings")
    return p


def main(argv: list[str]) -> dict:
    """Entry point of ``cli.py discriminate`` for an embedding ``--run``."""
    a = parser().parse_args(argv)

    def log(msg, file=None):
        print(msg, file=file or sys.stdout)

    return discriminate(a, log)
