"""The Where's Whale-do (NOAA / DrivenData 2022) style re-identification benchmark, pure numpy.

Every photo is a query in turn; a scenario (:data:`SCENARIOS`, :func:`scenario_mask`) says which
other photos its database holds. Retrieval by cosine similarity is scored with the challenge's
mAP@20 (:func:`attacks.open_set.whaledo_map`) and identity top-1/top-5
(:func:`retrieval_metrics`); :func:`benchmark` runs every scenario on one set of embeddings.

An encounter is one whale's sighting: ``(identity, encounter)`` pairs, as
``datamodules.manifest.encounter_key`` keys them (catalogs reuse encounter names across whales).
"""

from __future__ import annotations

import numpy as np

from attacks.open_set import cosine, whaledo_map

#: query/database scenarios of :func:`scenario_mask`
SCENARIOS = ("photo", "encounter", "same_year", "across_years")


def scenario_mask(
    identity: np.ndarray,
    encounter: np.ndarray,
    year: np.ndarray,
    scenario: str,
    rows: np.ndarray | None = None,
) -> np.ndarray:
    """``allowed (Q, N) bool``: ``allowed[q, g]`` iff photo ``g`` is in the database of query
    ``rows[q]`` (``rows`` None: every photo is a query, Q = N).

    * ``photo``: every other photo (the photo-split figure);
    * ``encounter``: photos outside the query's encounter (same identity and encounter name);
    * ``same_year``: outside its encounter and of the same ``year``;
    * ``across_years``: of another ``year``.

    ``identity``, ``encounter`` (N,) labels; ``year`` (N,) int.
    """
    if scenario not in SCENARIOS:
        raise ValueError(f"scenario {scenario!r}: choose one of {', '.join(SCENARIOS)}")
    ident = np.asarray(identity).astype(str, copy=False)
    enc = np.asarray(encounter).astype(str, copy=False)
    yr = np.asarray(year).astype(np.int64, copy=False)
    if not len(ident) == len(enc) == len(yr):
        raise ValueError(f"identity, encounter, year: lengths {len(ident)}, {len(enc)}, {len(yr)}")
    q = np.arange(len(ident)) if rows is None else np.asarray(rows, dtype=np.int64)
    same_year = yr[q, None] == yr[None, :]
    if scenario == "across_years":
        return ~same_year
    if scenario == "photo":
        allowed = np.ones((len(q), len(ident)), dtype=bool)
        allowed[np.arange(len(q)), q] = False
        return allowed
    same_enc = (ident[q, None] == ident[None, :]) & (enc[q, None] == enc[None, :])
    return ~same_enc & same_year if scenario == "same_year" else ~same_enc


def _identity_rank(sim_row: np.ndarray, cand: np.ndarray, gid: np.ndarray, query: str) -> int:
    """1-based rank of ``query`` among the identities of the photos ``cand``, each identity
    ranked by its best photo (ties by gallery order); ``cand`` must hold a photo of ``query``."""
    ranked = gid[cand[np.argsort(-sim_row[cand], kind="stable")]]
    _, first = np.unique(ranked, return_index=True)
    return int((first < np.flatnonzero(ranked == query)[0]).sum()) + 1


def retrieval_metrics(
    similarity: np.ndarray,
    query_identity: np.ndarray,
    gallery_identity: np.ndarray,
    allowed: np.ndarray | None = None,
    limit: int = 20,
) -> dict:
    """Retrieval quality over the queries with at least one allowed true match.

    Args:
        similarity: (Q, G) query-to-gallery similarity (higher = more alike).
        query_identity: (Q,); gallery_identity: (G,).
        allowed: (Q, G) bool, the photos each query's database holds (None: all).
        limit: ranked list length of the mAP (the challenge's 20).

    Returns ``map20`` (:func:`attacks.open_set.whaledo_map` on ``allowed``), ``top1``/``top5``
    (share of queries whose identity is among the 1/5 best identities, each ranked by its best
    allowed photo) and ``n_queries``; rates are NaN when ``n_queries`` is 0.
    """
    sim = np.asarray(similarity, dtype=np.float64)
    qid = np.asarray(query_identity).astype(str)
    gid = np.asarray(gallery_identity).astype(str)
    ok = np.ones(sim.shape, dtype=bool) if allowed is None else np.asarray(allowed, dtype=bool)
    if ok.shape != sim.shape or sim.shape != (len(qid), len(gid)):
        raise ValueError(
            f"similarity {sim.shape}, allowed {ok.shape}: need ({len(qid)}, {len(gid)})"
        )
    ranks = []
    for i in range(len(qid)):
        cand = np.flatnonzero(ok[i])
        if (gid[cand] == qid[i]).any():
            ranks.append(_identity_rank(sim[i], cand, gid, qid[i]))
    r = np.asarray(ranks)
    nan = float("nan")
    return {
        "map20": whaledo_map(sim, qid, gid, limit=limit, allowed=ok),
        "top1": float((r <= 1).mean()) if len(r) else nan,
        "top5": float((r <= 5).mean()) if len(r) else nan,
        "n_queries": len(r),
    }


def benchmark(
    embeddings: np.ndarray,
    identity: np.ndarray,
    encounter: np.ndarray,
    year: np.ndarray,
    scenarios=SCENARIOS,
    block: int = 1024,
) -> dict:
    """``{scenario: retrieval_metrics}`` with every photo (N, D) a query against the photos its
    scenario allows, by cosine similarity.

    Queries go ``block`` at a time (memory about ``block x N`` float64 and one mask per
    scenario, never N x N); each block's rates are weighted by its counted queries, so the
    result is the one of the whole (N, N) matrix."""
    emb = np.asarray(embeddings, dtype=np.float64)
    # converted once: every block's masks read the same label arrays
    ident = np.asarray(identity).astype(str)
    encounter = np.asarray(encounter).astype(str)
    year = np.asarray(year).astype(np.int64)
    sums = {s: {"map20": 0.0, "top1": 0.0, "top5": 0.0, "n_queries": 0} for s in scenarios}
    for start in range(0, len(emb), max(int(block), 1)):
        rows = np.arange(start, min(start + max(int(block), 1), len(emb)))
        sim = cosine(emb[rows], emb)
        for s in scenarios:
            allowed = scenario_mask(ident, encounter, year, s, rows)
            m = retrieval_metrics(sim, ident[rows], ident, allowed)
            if m["n_queries"]:
                acc = sums[s]
                for key in ("map20", "top1", "top5"):
                    acc[key] += m[key] * m["n_queries"]
                acc["n_queries"] += m["n_queries"]
    nan = float("nan")
    return {
        s: {
            **{
                k: acc[k] / acc["n_queries"] if acc["n_queries"] else nan
                for k in ("map20", "top1", "top5")
            },
            "n_queries": acc["n_queries"],
        }
        for s, acc in sums.items()
    }


def gallery_map20(
    queries: np.ndarray,
    gallery: np.ndarray,
    query_identity: np.ndarray,
    gallery_identity: np.ndarray,
    block: int = 1024,
) -> float:
    """:func:`attacks.open_set.whaledo_map` of queries (Q, D) against a gallery (G, D) by cosine,
    ``block`` queries at a time (memory about ``block x G`` float64, never Q x G); each block
    weighted by its queries with a match, so the figure is the whole matrix's."""
    qid = np.asarray(query_identity).astype(str)
    gid = np.asarray(gallery_identity).astype(str)
    total, counted = 0.0, 0
    step = max(int(block), 1)
    for start in range(0, len(qid), step):
        sl = slice(start, start + step)
        n = int(np.isin(qid[sl], gid).sum())
        if n:
            total += n * whaledo_map(cosine(queries[sl], gallery), qid[sl], gid)
            counted += n
    return total / counted if counted else float("nan")
