"""The rows of ``cli.py discriminate``'s tables on a classifier run (``photos.csv``,
``encounters.csv``, ``candidates.csv``; :mod:`experiments.known_new.output_folder` writes them)
from the scored photos of :func:`experiments.commands.discriminate.score_photos`. Torch-free."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from experiments.known_new.decisions import encounter_decisions, vote_note
from experiments.known_new.output_folder import candidate_rows
from experiments.known_new.scan import SKIP_FLAGS
from experiments.run.folder import RunContext


def rule_text(attack: str, rule: str, tau: dict) -> str:
    """The decision rule in words."""
    photo = f"a photo is known iff its p_known >= {tau['photo']:.3f}"
    if rule == "vote":
        return (
            f"{photo}; an encounter is known iff more than half of its photos are (its p_known "
            "column is the share of its photos at or above the photo threshold; margin = that "
            "share minus 0.5)"
        )
    source = (
        "the cosine of the mean of its photos' normalised embeddings to the nearest training photo"
        if rule == "mean_embedding"
        else f"the {rule} of its photos' {attack} scores"
    )
    return (
        f"{photo}; an encounter is known iff its p_known >= {tau['encounter']:.3f}, p_known "
        f"calibrated from {source} (margin = p_known minus that threshold)"
    )


def photo_table(res: dict, bad: dict, folder: Path, enc_of: dict) -> list[dict]:
    """Rows of ``photos.csv``: the scored photos (``res``: ``good`` paths, ``p`` (N,),
    ``dec`` (N,), ``flag`` (N,) and ``note`` (N,) strings), then the skipped files ``bad``."""
    rows = []
    for i, p in enumerate(res["good"]):
        row = {"photo": str(p.relative_to(folder)), "encounter": enc_of[p]}
        row.update(p_known=float(res["p"][i]), decision=res["dec"][i])
        rows.append(row | {"flag": res["flag"][i], "note": res["note"][i]})
    for p, status in bad.items():
        rows.append(
            {"photo": str(p.relative_to(folder)), "encounter": enc_of[p], "decision": "skipped"}
            | {"flag": SKIP_FLAGS[status], "note": status.replace("_", " ")}
        )
    return rows


def encounter_table(res: dict, bad: dict, enc_of: dict, tau: float, rule: str) -> list[dict]:
    """Rows of ``encounters.csv``: the scored encounters (``res``: ``enc`` (N,) of the photos,
    ``enc_names`` (G,), ``enc_p`` (G,), ``enc_dec`` (G,)), then those with only unreadable
    files. An encounter with a flagged photo is ``undecided`` with that flag."""
    enc, flag = np.asarray(res["enc"]), np.asarray(res["flag"], dtype=object)
    n_known, n_new = encounter_decisions(enc, res["dec"], res["enc_names"])
    rows = []
    for j, name in enumerate(res["enc_names"]):
        mine = enc == name
        margin = float(res["enc_p"][j] - tau)
        row = {"encounter": name, "n_photos": int(mine.sum()), "n_known_photos": int(n_known[j])}
        row.update(p_known=float(res["enc_p"][j]), rule=rule, margin=margin)
        flagged = [f for f in flag[mine] if f]
        if flagged:
            row.update(decision="undecided", flag=flagged[0])
            row["note"] = f"{len(flagged)} of {int(mine.sum())} photos flagged {flagged[0]}"
        else:
            row["decision"] = res["enc_dec"][j]
            row["note"] = vote_note(int(n_known[j]), int(n_new[j]), row["decision"], margin, rule)
        rows.append(row)
    lost = {enc_of[p] for p, s in bad.items() if s == "corrupt"} - set(res["enc_names"])
    for name in sorted(lost):
        row = {"encounter": name, "n_photos": 0, "n_known_photos": 0, "decision": "skipped"}
        rows.append(row | {"rule": rule, "flag": "unreadable", "note": "no readable photo"})
    return rows


def candidate_table(ctx: RunContext, scorer, res: dict, folder: Path) -> list[dict]:
    """Rows of ``candidates.csv``: the 5 best catalog whales of every scored encounter."""
    roots = ctx.roots
    gallery = {
        "emb": scorer.gallery,
        "label": scorer.gallery_label,
        "paths": [
            str((roots[ctx.rows[int(i)]["catalog"]] / ctx.rows[int(i)]["file"]).resolve())
            for i in scorer.gallery_index
        ],
        "names": ctx.class_names,
    }
    enc = np.asarray(res["enc"])
    rel = np.asarray([str(p.relative_to(folder)) for p in res["good"]])
    kind = "cosine" if scorer.by_cosine else "prob"
    rows = []
    for j, name in enumerate(res["enc_names"]):
        mine = enc == name
        query = {"emb": np.asarray(res["emb"])[mine], "paths": rel[mine]}
        rows += candidate_rows(name, res["enc_cs"][j], kind, query, gallery)
    return rows


def counts(tables: dict, bad: dict) -> dict:
    """The counts of ``operating_point.json``."""

    def tally(rows: list[dict]) -> dict:
        return {d: sum(r.get("decision") == d for r in rows) for d in ("known", "new", "undecided")}

    return {
        "photos_scored": sum(r.get("decision") != "skipped" for r in tables["photos"]),
        "skipped": sum(s == "corrupt" for s in bad.values()),
        "not_images": sum(s == "not_an_image" for s in bad.values()),
        "photo": tally(tables["photos"]),
        "encounter": tally(tables["encounters"]),
    }
