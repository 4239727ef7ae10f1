"""The self-calibrated operating point of ``cli.py discriminate`` on an embedding run, and the
scores and candidates of new photos (pure numpy; :mod:`experiments.known_new.embedding_engine` does I/O).

Per level (``photo`` or ``encounter``: the mean embedding of an encounter's photos), new-whale
samples are the reference whales' queries against the catalog, each whale left out of the
reference set; known samples are the queries of catalog whales with two or more encounters, each
against the catalog minus its own encounter. Scores are
:func:`attacks.reference_calibrated.calibrated_scores` (higher = known); cosines in [-1, 1].
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from attacks import open_set as osm
from attacks.group_bootstrap import bootstrap_cis
from attacks.knn import nearest_cosine
from attacks.known_new_levels import increasing, separable
from attacks.reference_calibrated import (
    calibrated_scores,
    encounter_embeddings,
    identity_similarity,
)

TOPK = 5


@dataclass
class Photos:
    """Embedded photos: ``emb`` (N, D) unit rows, ``ident`` (N,), ``enc`` (N,) encounter keys,
    ``paths`` (N,) file paths (catalog photos only)."""

    emb: np.ndarray
    ident: np.ndarray
    enc: np.ndarray
    paths: np.ndarray | None = None

    def level(self, level: str) -> Photos:
        """These photos (``photo``) or one mean embedding per encounter (``encounter``)."""
        if level == "photo":
            return self
        names, emb = encounter_embeddings(self.emb, self.enc)
        return Photos(emb, osm.group_labels(self.ident, self.enc)[1], names)


# ---- scores ------------------------------------------------------------------------------------
def leave_encounter_out(queries: Photos, gallery: Photos) -> tuple[np.ndarray, np.ndarray]:
    """:func:`identity_similarity` ``(names (K,), sims (N, K))`` of ``queries`` to ``gallery``,
    each query's own encounter left out (its whale's column uses its other encounters only,
    ``-inf`` when it has none)."""
    names, sims = identity_similarity(queries.emb, gallery.emb, gallery.ident)
    col = {n: k for k, n in enumerate(names)}
    for e in np.unique(queries.enc):
        same = gallery.enc == e
        if not same.any():
            continue
        rows = queries.enc == e
        for w in np.unique(gallery.ident[same]):
            keep = (gallery.ident == w) & ~same
            best = nearest_cosine(queries.emb[rows], gallery.emb[keep]) if keep.any() else -np.inf
            sims[rows, col[w]] = best
    return names, sims


def new_sample_scores(q: Photos, catalog: Photos, ref: Photos, statistic: str) -> np.ndarray:
    """Scores (N,) of reference-whale queries ``q``: each whale left out of the reference set."""
    _, cat = identity_similarity(q.emb, catalog.emb, catalog.ident)
    names, rs = identity_similarity(q.emb, ref.emb, ref.ident)
    out = np.empty(len(q.emb))
    for k, w in enumerate(names):
        rows = q.ident == w
        out[rows] = calibrated_scores(cat[rows], np.delete(rs[rows], k, axis=1), statistic)
    return out


def repeat_whales(ident: np.ndarray, enc: np.ndarray) -> np.ndarray:
    """The whales (sorted) among ``ident`` (N,) with two or more encounters ``enc`` (N,)."""
    names, n_enc = np.unique(osm.group_labels(ident, enc)[1], return_counts=True)
    return names[n_enc >= 2]


def samples(catalog: Photos, ref: Photos, statistic: str, level: str) -> dict:
    """Calibration samples of one level: ``score`` (S,), ``known`` (S,) 0/1, ``individual`` (S,)."""
    keep = np.isin(catalog.ident, repeat_whales(catalog.ident, catalog.enc))
    known_q = Photos(catalog.emb[keep], catalog.ident[keep], catalog.enc[keep]).level(level)
    new_q = ref.level(level)
    _, cat = leave_encounter_out(known_q, catalog)
    _, rs = identity_similarity(known_q.emb, ref.emb, ref.ident)
    known = calibrated_scores(cat, rs, statistic)
    new = new_sample_scores(new_q, catalog, ref, statistic)
    ident = [f"catalog:{i}" for i in known_q.ident] + [f"reference:{i}" for i in new_q.ident]
    return {
        "score": np.r_[known, new],
        "known": np.r_[np.ones(len(known), int), np.zeros(len(new), int)],
        "individual": np.asarray(ident),
    }


def operating_point(s: dict, fpr: float, threshold: float | None, n_boot: int) -> dict:
    """Threshold (``fpr`` on the new samples, or ``threshold``) and its TPR, FPR and AUROC
    ``[point, lo, hi]`` on the samples ``s`` (:func:`samples`), intervals by individual;
    ``separable`` (:func:`attacks.known_new_levels.separable`); the Platt map of the
    score to ``p_known`` fitted on the samples (classes weighted equally) and the threshold on
    that scale, ``threshold_p``."""
    score, known, ident = s["score"], s["known"], s["individual"]
    tau = float(threshold) if threshold is not None else osm.threshold_at_fpr(score, known, fpr)
    metrics = {
        "tpr": lambda x, y: osm.rates(x, y, tau)[0],
        "fpr": lambda x, y: osm.rates(x, y, tau)[1],
        "auroc": osm.auroc,
    }
    ci = bootstrap_cis(metrics, score, known, ident, n_boot=n_boot, level=0.95, seed=0)
    target = fpr if threshold is None else None
    ok, why = separable(list(ci["tpr"]), list(ci["fpr"]), list(ci["auroc"]), target)
    platt = increasing(osm.fit_platt(score, known), score)
    return {
        "threshold": tau,
        "threshold_p": float(platt(np.array([tau]))[0]),
        "platt": {"a": platt.a, "b": platt.b},
        "chosen_by": f"FPR {fpr} on the new-whale samples" if threshold is None else "--threshold",
        **{k: list(v) for k, v in ci.items()},
        "ci": "95% bootstrap, resampled by individual",
        "separable": ok,
        "why_not": why,
        "counts": {
            "known_samples": int(known.sum()),
            "new_samples": int((1 - known).sum()),
            "known_individuals": len(set(ident[known == 1])),
            "new_individuals": len(set(ident[known == 0])),
        },
    }


def score_queries(q: Photos, catalog: Photos, ref: Photos, statistic: str) -> dict:
    """``score`` (N,), catalog ``names`` (K,) and ``sims`` (N, K) of the new photos ``q``."""
    names, cat = identity_similarity(q.emb, catalog.emb, catalog.ident)
    _, rs = identity_similarity(q.emb, ref.emb, ref.ident)
    return {"score": calibrated_scores(cat, rs, statistic), "names": names, "sims": cat}
