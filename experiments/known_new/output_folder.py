"""The output folder of ``cli.py discriminate`` (both engines), read by
:mod:`experiments.known_new.contact_sheet`: ``photos.csv``, ``encounters.csv``, ``candidates.csv`` and
``operating_point.json``. Rows come in as dicts of raw values (floats, None for no score);
this module formats scores to 3 decimals, ranks rows by ``p_known`` and writes atomically."""

from __future__ import annotations

import csv
import sys
from pathlib import Path

import numpy as np

from attacks import open_set as osm
from experiments.run.outputs import atomic_path, claim_folder, fresh_name, write_json

#: the files' columns (the contact sheet reads these names)
COLUMNS = {
    "photos": ["photo", "encounter", "p_known", "rank", "decision", "flag", "note"],
    "encounters": [
        "encounter",
        "n_photos",
        "n_known_photos",
        "p_known",
        "rank",
        "decision",
        "rule",
        "margin",
        "flag",
        "note",
    ],
    "candidates": [
        "encounter",
        "rank",
        "individual",
        "score",
        "score_kind",
        "catalog_photo",
        "query_photo",
    ],
}
SCORED = ("p_known", "margin", "score")
TOPK = 5


def output_folder(run_folder: Path, images: Path, output, overwrite: bool) -> Path:
    """``--output`` (new or empty, else ``--overwrite``), or a fresh
    ``<run>/discriminate/<images folder name>[-K]``; nothing is created yet."""
    if output:
        return claim_folder(output, overwrite=overwrite)
    return fresh_name(Path(run_folder) / "discriminate", Path(images).resolve().name, "")


def ranks(p_known: list) -> list:
    """Rank of each value (1 = highest) among the finite ones; ``""`` for the rest."""
    p = np.array([np.nan if v is None else float(v) for v in p_known], dtype=np.float64)
    ok = np.flatnonzero(np.isfinite(p))
    out: list = [""] * len(p)
    for r, i in enumerate(ok[np.argsort(-p[ok], kind="stable")], 1):
        out[i] = r
    return out


def cell(key: str, value):
    """A CSV cell: scores with 3 decimals, None and NaN empty."""
    if value is None or (isinstance(value, float) and not np.isfinite(value)):
        return ""
    if key in SCORED:
        return f"{float(value):.3f}"
    return value


def write_table(path: Path, rows: list[dict], kind: str) -> Path:
    """Write ``rows`` (missing keys empty) with the columns of ``kind``; ``photos`` and
    ``encounters`` get their ``rank`` here."""
    if kind in ("photos", "encounters"):
        rows = [{**r, "rank": k} for r, k in zip(rows, ranks([r.get("p_known") for r in rows]))]
    with atomic_path(path) as tmp, tmp.open("w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=COLUMNS[kind])
        w.writeheader()
        for r in rows:
            w.writerow({c: cell(c, r.get(c)) for c in COLUMNS[kind]})
    return path


def best_pair(query: np.ndarray, gallery: np.ndarray) -> tuple[int, int]:
    """``(query row, gallery row)`` of the most similar pair (cosine) of query (n, D) and
    gallery (m, D) embeddings."""
    sim = osm.cosine(query, gallery)
    q, g = np.unravel_index(int(np.argmax(sim)), sim.shape)
    return int(q), int(g)


def candidate_rows(enc: str, scores: np.ndarray, kind: str, query: dict, gallery: dict) -> list:
    """The ``TOPK`` candidates of one encounter from its class scores (C,).

    ``query``: ``emb`` (n, D) and ``paths`` (n,) of the encounter's photos (relative to
    --images); ``gallery``: ``emb`` (M, D), ``label`` (M,) class index, ``paths`` (M,) absolute
    catalog photos, ``names`` (C,) individuals. The catalog photo is the candidate's photo most
    similar to any of the encounter's photos; ``query_photo`` is that photo."""
    idx, val = osm.topk(np.asarray(scores, dtype=np.float64)[None], TOPK)
    rows = []
    for k, (c, v) in enumerate(zip(idx[0], val[0]), 1):
        mine = np.flatnonzero(np.asarray(gallery["label"]) == c)
        row = {"encounter": enc, "rank": k, "individual": str(gallery["names"][int(c)])}
        row.update(score=float(v), score_kind=kind, query_photo=str(query["paths"][0]))
        if len(mine):
            q, g = best_pair(query["emb"], gallery["emb"][mine])
            row.update(catalog_photo=str(gallery["paths"][mine[g]]), query_photo=query["paths"][q])
        rows.append(row)
    return rows


def level_entry(report: dict, fpr: float) -> dict:
    """One level of ``operating_point.json`` from ``threshold_p``, ``separable`` and ``[point,
    lo, hi]`` lists ``tpr``, ``fpr``, ``auroc`` (plus any other keys of ``report``)."""
    out = {"threshold_p": report["threshold_p"], "fpr_target": fpr}
    for m in ("tpr", "fpr", "auroc"):
        point, lo, hi = report[m]
        out[f"eval_{m}"], out[f"eval_{m}_ci95"] = point, [lo, hi]
    out["separable"] = bool(report["separable"])
    return out | {k: v for k, v in report.items() if k not in (*out, "tpr", "fpr", "auroc")}


def one_warning(warnings: list[str]) -> str | None:
    """The warnings as one line (None without any)."""
    if not warnings:
        return None
    return "WARNING: " + "; ".join(w.removeprefix("warning: ") for w in warnings)


def summary_lines(op: dict, folder: Path) -> list[str]:
    """The printed summary: the warning first, then the counts, the operating points and the
    rule (the figures of ``operating_point.json``)."""
    c = op["counts"]
    lines = [op["warning"]] if op["warning"] else []
    lines.append(
        f"discriminate ({op['engine']}, {op['attack']}): {c['photos_scored']} photos scored, "
        f"{c['skipped']} unreadable, {c['not_images']} not images; "
        + "; ".join(
            f"{lvl}s: " + ", ".join(f"{n} {d}" for d, n in c[lvl].items())
            for lvl in ("photo", "encounter")
        )
    )
    for lvl in ("photo", "encounter"):
        r = op[lvl]
        lines.append(
            f"{lvl}s: known iff p_known >= {r['threshold_p']:.3f}; on the run's held-out "
            f"whales TPR {r['eval_tpr']:.2f} [{r['eval_tpr_ci95'][0]:.2f}, "
            f"{r['eval_tpr_ci95'][1]:.2f}], FPR {r['eval_fpr']:.2f} [{r['eval_fpr_ci95'][0]:.2f}"
            f", {r['eval_fpr_ci95'][1]:.2f}], AUROC {r['eval_auroc']:.2f} "
            f"[{r['eval_auroc_ci95'][0]:.2f}, {r['eval_auroc_ci95'][1]:.2f}]"
            + ("" if r["separable"] else " (cannot separate)")
        )
    lines.append(f"rule: {op['rule']}")
    return lines + [f"-> {folder}"]


def write_outputs(folder: Path, tables: dict[str, list[dict]], op: dict, log=print) -> Path:
    """Write the three tables and ``operating_point.json`` into ``folder`` (made with
    :func:`experiments.run.outputs.make_output_dir`), then the contact sheet, then print the
    summary (its warning also on stderr)."""
    from experiments.run.outputs import make_output_dir

    make_output_dir(folder)
    for kind in ("photos", "encounters", "candidates"):
        write_table(folder / f"{kind}.csv", tables[kind], kind)
    write_json(folder / "operating_point.json", op)
    sheet = contact_sheet(folder)
    if op["warning"]:
        log(op["warning"], file=sys.stderr)
    for line in summary_lines(op, folder):
        log(line)
    if sheet is not None:
        log(f"contact sheet: {sheet}")
    return folder


def contact_sheet(folder: Path):
    """``contact_sheet.html`` by :mod:`experiments.known_new.contact_sheet` (None while it is absent)."""
    try:
        from experiments.known_new.contact_sheet import write_contact_sheet
    except ImportError:
        return None
    return write_contact_sheet(folder)
