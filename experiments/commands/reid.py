"""Known or new, and who it is, with a population-trained embedding: the re-identification benchmark.

    python cli.py reid --run lightning_logs/beluga_reid_cpu/version_0 \\
        --catalog /path/to/beluga_whaledo_dev --output reid_dev

The embedding run (``cli.py fit --config beluga_reid_cpu.yaml``) learnt from a population of other
whales. This command embeds the photos of ``--catalog`` (whales the embedding never saw) and:

1. **The field's benchmark** (Where's Whale-do): every photo is a query against the rest of the
   catalog, under four scenarios (``photo``: every other photo, the photo-split figure;
   ``encounter``: other encounters only; ``same_year``; ``across_years``); mAP@20 as the challenge
   scores it, top-1 and top-5 identity.
2. **Known or new, over ``--draws`` seeded draws**: ``--known_fraction`` of the whales form the
   catalog of known individuals. Under ``--protocol encounter`` one whole encounter of each known
   whale with two or more is held out as its query (the next survey); under ``photo`` a third of
   its photos. Every photo of the other whales is a query of a new whale. Each query photo and
   each query encounter (mean embedding) gets the top-5 candidate whales (nearest catalog photo of
   each) and a known/new score per statistic of :mod:`attacks.reference_calibrated`: the raw
   nearest-catalog cosine, or that cosine calibrated against the reference whales the embedding
   run held apart. AUROC per encounter with 95 % intervals by individual, top-1/top-5 and mAP@20
   of the known queries.

3. With ``--target``, membership inference against a target classifier next to the open-set score
   on the same encounters (:mod:`experiments.known_new.reid_target`).

4. With ``--discriminate_check``, ``cli.py discriminate`` run on the first encounter draw laid
   out as folders, its candidates and decisions scored against the truth
   (:mod:`experiments.known_new.reid_check`).

It writes ``report.md``, ``results.json`` and ``embeddings.npz`` (the catalog's and the reference
whales' embeddings) into ``--output`` (a new or empty folder).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Literal

import numpy as np

from attacks.group_bootstrap import bootstrap_cis
from attacks.metrics import auc
from attacks.open_set import group_labels
from attacks.reference_calibrated import (
    STATISTICS,
    calibrated_scores,
    encounter_embeddings,
    identity_similarity,
)
from attacks.reid_benchmark import benchmark, gallery_map20
from datamodules.catalogs import NoaaReader
from datamodules.errors import DataError
from datamodules.hashing import sha256_file
from datamodules.machine import environment_versions
from experiments.known_new.reid_check import discriminate_check
from experiments.known_new.reid_report import markdown, summarize
from experiments.known_new.reid_target import compare
from experiments.run.config_files import add_flag, command_parser, parse_options
from experiments.run.embedding_folder import EmbeddingRun, catalog_rows
from experiments.run.outputs import claim_folder, write_json, write_text

PROTOCOLS = ("encounter", "photo")


def draw_roles(ident, encounter, seed: int, known_fraction: float, protocol: str) -> np.ndarray:
    """Per photo: ``catalog`` | ``known_query`` | ``new_query`` | ``unused`` for one draw."""
    rng = np.random.default_rng(seed)
    names = np.unique(ident)
    n_known = int(round(known_fraction * len(names)))
    known = set(rng.choice(names, size=n_known, replace=False).tolist())
    roles = np.where(np.isin(ident, list(known)), "catalog", "new_query").astype(object)
    for name in sorted(known):
        rows = np.flatnonzero(ident == name)
        if protocol == "photo":
            n_q = len(rows) // 3
            roles[rng.choice(rows, size=n_q, replace=False)] = "known_query"
            continue
        encs = np.unique(encounter[rows])
        if len(encs) >= 2:
            held = rng.choice(encs)
            roles[rows[encounter[rows] == held]] = "known_query"
    return roles.astype(str)


def _topk_hits(sims: np.ndarray, names: np.ndarray, truth: np.ndarray) -> dict:
    order = np.argsort(-sims, axis=1, kind="stable")[:, :5]
    hit = names[order] == truth[:, None]
    return {"top1": float(hit[:, 0].mean()), "top5": float(hit.any(1).mean())}


def score_level(emb, ident, known, catalog, reference, n_boot: int, seed: int) -> dict:
    """Known/new and re-identification of query rows ``emb`` (N, D) against the catalog."""
    cat_emb, cat_id = catalog
    names, cat_sims = identity_similarity(emb, cat_emb, cat_id)
    _, ref_sims = identity_similarity(emb, *reference)
    out = {"n_known": int(known.sum()), "n_new": int((~known).sum())}
    for stat in STATISTICS:
        s = calibrated_scores(cat_sims, ref_sims, stat)
        ci = bootstrap_cis({"auroc": auc}, s, known.astype(int), ident, n_boot=n_boot, seed=seed)
        out[f"auroc_{stat}"] = list(ci["auroc"])
    if known.any():
        out.update(_topk_hits(cat_sims[known], np.asarray(names), ident[known]))
    return out


def score_draw(emb, rows, roles, reference, n_boot: int, seed: int) -> dict:
    """Photo and encounter figures of one draw."""
    ident = np.asarray([r["identity"] for r in rows])
    enc = np.asarray([r["encounter"] for r in rows])
    cat = roles == "catalog"
    query = np.isin(roles, ["known_query", "new_query"])
    known = roles[query] == "known_query"
    catalog = (emb[cat], ident[cat])
    photo = score_level(emb[query], ident[query], known, catalog, reference, n_boot, seed)
    kq = query.copy()
    kq[query] = known
    photo["map20"] = gallery_map20(emb[kq], emb[cat], ident[kq], ident[cat])
    enc_names, enc_emb = encounter_embeddings(emb[query], enc[query])
    _, enc_ident = group_labels(ident[query], enc[query])
    _, enc_role = group_labels(roles[query], enc[query])
    enc_known = enc_role == "known_query"
    encounter = score_level(enc_emb, enc_ident, enc_known, catalog, reference, n_boot, seed)
    n_cat = len(np.unique(ident[cat]))
    return {
        "photo": photo,
        "encounter": encounter,
        "n_catalog_whales": n_cat,
        "n_query_encounters": len(enc_names),
    }


def run(a) -> dict:
    """Embed, benchmark and score every draw; returns the results dict."""
    t0 = time.perf_counter()
    er = EmbeddingRun.open(a.run)
    rows = catalog_rows(a.catalog, a.viewpoint)
    if len({r["identity"] for r in rows}) < 4:
        raise DataError(f"--catalog {a.catalog}: fewer than 4 whales; known/new needs more.")
    emb = er.embed(NoaaReader(viewpoint=a.viewpoint), a.catalog, rows, tta=a.tta)
    reference = er.reference(tta=a.tta)
    if len(reference[1]) == 0:
        raise DataError(
            f"--run {a.run}: the embedding run held no reference whales apart "
            "(data.holdout_individuals: 0); calibrated scores need them."
        )
    t_embed = time.perf_counter() - t0
    if a.save_embeddings:
        ident_, enc_ = ([r[k] for r in rows] for k in ("identity", "encounter"))
        out = Path(a.output)
        out.mkdir(parents=True, exist_ok=True)
        np.savez(out / "embeddings.npz", embedding=emb, identity=ident_, encounter=enc_,
                 photo=[r["file"] for r in rows], reference=reference[0],
                 reference_identity=reference[1])  # fmt: skip
    ident = np.asarray([r["identity"] for r in rows])
    enc = np.asarray([r["encounter"] for r in rows])
    year = np.asarray([r["year"] for r in rows])
    bench = benchmark(emb, ident, enc, year)
    draws = {}
    for protocol in a.protocols:
        draws[protocol] = [
            score_draw(
                emb,
                rows,
                draw_roles(ident, enc, a.seed + d, a.known_fraction, protocol),
                reference,
                a.n_boot,
                a.seed + d,
            )
            for d in range(a.draws)
        ]
    check = None
    if a.discriminate_check:
        roles = draw_roles(ident, enc, a.seed, a.known_fraction, "encounter")
        check = discriminate_check(a.run, rows, roles, Path(a.catalog), Path(a.output) / "draw",
                                   a.fpr)  # fmt: skip
    target = None
    if a.target:
        target = compare(er, a.target, statistic=a.statistic, tta=a.tta, n_boot=a.n_boot,
                         seed=a.seed)  # fmt: skip
    return {
        "run": str(er.folder),
        "catalog": str(a.catalog),
        "n_photos": len(rows),
        "n_whales": int(len(np.unique(ident))),
        "n_reference_whales": int(len(np.unique(reference[1]))),
        "tta": a.tta,
        "known_fraction": a.known_fraction,
        "draws": a.draws,
        "seed": a.seed,
        "benchmark": bench,
        "per_draw": draws,
        "summary": {p: summarize(d) for p, d in draws.items()},
        "target": target,
        "discriminate_check": check,
        "seconds": {"embed": t_embed, "total": time.perf_counter() - t0},
        # what the figures depend on, checked against the run folder before trusting them
        "checkpoint_sha256": sha256_file(er.folder / "checkpoints" / "last.ckpt"),
        "versions": environment_versions(),
    }


def parser():
    """The ``cli.py reid`` argument parser."""
    p = command_parser("reid", __doc__)
    p.add_argument("--run", type=str, required=True, help="embedding run folder (ReIDEmbedding)")
    p.add_argument("--catalog", type=str, required=True, help="Where's Whale-do catalog folder")
    p.add_argument("--output", type=str, required=True, help="new or empty results folder")
    p.add_argument("--viewpoint", type=str | None, default="top", help="keep only this viewpoint")
    p.add_argument("--draws", type=int, default=10, help="seeded known/new draws")
    p.add_argument("--known_fraction", type=float, default=0.5, help="share of known whales")
    p.add_argument(
        "--protocols",
        type=list[Literal[PROTOCOLS]],
        default=list(PROTOCOLS),
        help="known/new protocols to draw",
    )
    add_flag(p, "tta", "average photo and mirror embeddings", default=True)
    p.add_argument("--n_boot", type=int, default=1000, help="bootstrap replicates")
    p.add_argument("--seed", type=int, default=0, help="seed of the first draw")
    p.add_argument(
        "--target",
        type=str | None,
        default=None,
        help="a target run attacked by `cli.py attack`: its attacks against the open-set score",
    )
    p.add_argument(
        "--statistic",
        type=Literal[tuple(STATISTICS)],
        default="zscore",
        help="open-set score vs --target",
    )
    add_flag(
        p,
        "discriminate_check",
        "lay out the first encounter draw as folders and run discriminate on it",
    )
    p.add_argument("--fpr", type=float, default=0.05, help="discriminate's FPR (with the check)")
    add_flag(p, "save_embeddings", "write embeddings.npz", default=True)
    add_flag(p, "overwrite", "write into a non-empty folder")
    return p


def check_args(a) -> None:
    if not 1 <= a.draws <= 1000 or not 10 <= a.n_boot <= 100000:
        raise DataError("--draws must be 1-1000 and --n_boot 10-100000.")
    if not 0 < a.known_fraction < 1:
        raise DataError(f"--known_fraction {a.known_fraction}: give a share between 0 and 1.")
    if a.statistic not in STATISTICS:
        raise DataError(f"--statistic {a.statistic!r}: choose one of {list(STATISTICS)}.")
    bad = [p for p in a.protocols if p not in PROTOCOLS]
    if bad or not a.protocols:
        raise DataError(f"--protocols {bad or a.protocols}: choose from {list(PROTOCOLS)}.")


def main(argv: list[str]) -> dict:
    """Entry point of ``python cli.py reid``."""
    a = parse_options(parser(), argv)
    check_args(a)
    out = claim_folder(a.output, overwrite=a.overwrite)
    results = run(a)
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / "results.json", results)
    write_text(out / "report.md", markdown(results))
    print(markdown(results))
    print(f"\nResults: {out / 'report.md'}")
    return results
