"""Open-set terms ecologists use for re-identification, in plain numpy (no torch import).

* known/new at a threshold: :func:`open_set_metrics` (BAKS, BAUS, AUROC-new from scores),
  :func:`baks`, :func:`baus`, :func:`auroc_new` (the same from labels, as wildlife-datasets
  defines them), :func:`threshold_at_fpr` and :func:`rates` (an operating point);
* readable scores: :func:`fit_platt` (a probability of "known" from any attack score);
* encounters: :func:`aggregate` (photos of one encounter -> one row), :func:`group_labels`;
* re-identification: :func:`topk`, :func:`reid_topk`, :func:`class_similarity`,
  :func:`whaledo_map` (the Where's Whale-do challenge's mAP@20).

Conventions as in :mod:`attacks.metrics`: ``scores`` (N,), higher = member (= known individual);
``is_member`` (N,) in {0, 1}. Class scores ``(N, C)`` are over the target's label space.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

#: encounter aggregation rules of :func:`aggregate`
AGGREGATES = ("mean", "max", "mean_embedding")


def auroc(scores: np.ndarray, positive: np.ndarray) -> float:
    """Area under the ROC curve of ``scores`` for the ``positive`` class (Mann-Whitney U, ties
    count one half); 0.5 when one class is absent.

    Equal to ``sklearn.metrics.roc_auc_score`` (tests/test_open_set.py checks it) but kept: it is
    called once per bootstrap replicate (``cli.py discriminate``: 1000 per level), where sklearn's
    input validation makes each call about 60 times slower, and importing sklearn.metrics adds
    0.6-0.9 s to a command meant to start in under 4 s without it (tests/test_discriminate.py)."""
    s = np.asarray(scores, dtype=np.float64)
    y = np.asarray(positive).astype(bool)
    n_pos, n_neg = int(y.sum()), int((~y).sum())
    if n_pos == 0 or n_neg == 0:
        return 0.5
    order = np.argsort(s, kind="stable")
    ranks = np.empty(len(s))
    ranks[order] = np.arange(1, len(s) + 1)
    uniq, inv = np.unique(s, return_inverse=True)  # average the ranks of tied scores
    ranks = (np.bincount(inv, ranks) / np.bincount(inv))[inv]
    return float((ranks[y].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def open_set_metrics(
    scores: np.ndarray,
    is_member: np.ndarray,
    tau: float,
    *,
    identity: np.ndarray | None = None,
    label: np.ndarray | None = None,
    pred: np.ndarray | None = None,
) -> dict:
    """Open-set terms at the frozen threshold ``tau``.

    * ``baks``: balanced accuracy on known samples: per known individual, the share of its photos
      accepted as known (``score >= tau``) *and* given the right top-1 identity, averaged over
      individuals. Without ``pred``/``label`` only acceptance counts (= ``baks_detect``).
    * ``baks_detect``: same, acceptance only (no identity check).
    * ``baus``: balanced accuracy on unknown samples: per new individual, the share of its photos
      rejected (``score < tau``), averaged over individuals.
    * ``gmean``: ``sqrt(baks * baus)``.
    * ``auroc_new``: AUROC with "new individual" as the positive class and ``-score``; it equals
      the membership AUC (same ranking, complementary labels) and is reported under its own name.

    ``identity`` (N,) groups photos per individual; without it every photo is its own group.
    """
    s = np.asarray(scores, dtype=np.float64)
    y = np.asarray(is_member).astype(bool)
    ident = np.arange(len(s)).astype(str) if identity is None else np.asarray(identity).astype(str)
    accept = s >= tau
    correct = accept.copy()
    if pred is not None and label is not None:
        correct &= np.asarray(pred) == np.asarray(label)

    def per_id_mean(mask: np.ndarray, ok: np.ndarray) -> float:
        ids = np.unique(ident[mask])
        if len(ids) == 0:
            return float("nan")
        return float(np.mean([ok[mask & (ident == i)].mean() for i in ids]))

    baks_ = per_id_mean(y, correct)
    baus_ = per_id_mean(~y, ~accept)
    return {
        "baks": baks_,
        "baks_detect": per_id_mean(y, accept),
        "baus": baus_,
        "gmean": float(np.sqrt(baks_ * baus_)) if np.isfinite(baks_ * baus_) else float("nan"),
        "auroc_new": auroc(-s, ~y),
    }


# ---- the same terms from labels, as wildlife-datasets defines them ---------------------------
def _per_identity_mean(truth: np.ndarray, ok: np.ndarray) -> float:
    ids = np.unique(truth)
    return float(np.mean([ok[truth == i].mean() for i in ids])) if len(ids) else float("nan")


def baks(y_true, y_pred, new_ids) -> float:
    """Balanced accuracy on known samples: rows whose true identity is not in ``new_ids``; per
    true identity the share with ``y_pred == y_true``; the mean over identities (NaN if none).
    ``y_pred`` holds an identity or the new-individual label."""
    t, p = np.asarray(y_true, dtype=object), np.asarray(y_pred, dtype=object)
    keep = ~np.isin(t, np.asarray(list(new_ids), dtype=object))
    return _per_identity_mean(t[keep].astype(str), (p[keep] == t[keep]).astype(bool))


def baus(y_true, y_pred, new_ids, new_class) -> float:
    """Balanced accuracy on unknown samples: rows whose true identity is in ``new_ids``; per
    true identity the share predicted ``new_class``; the mean over identities (NaN if none)."""
    t, p = np.asarray(y_true, dtype=object), np.asarray(y_pred, dtype=object)
    keep = np.isin(t, np.asarray(list(new_ids), dtype=object))
    return _per_identity_mean(t[keep].astype(str), (p[keep] == new_class).astype(bool))


def auroc_new(y_true, score, new_class) -> float:
    """AUROC of detecting new individuals (``y_true == new_class``) with ``-score``; a high
    ``score`` means known."""
    t = np.asarray(y_true, dtype=object)
    return auroc(-np.asarray(score, dtype=np.float64), t == new_class)


# ---- the operating point and a readable probability -----------------------------------------
def threshold_at_fpr(scores: np.ndarray, is_member: np.ndarray, fpr: float) -> float:
    """The lowest threshold ``tau`` with at most ``fpr`` of the non-members at ``score >= tau``
    (so the highest TPR at that false-positive rate); raises ValueError without non-members."""
    s = np.asarray(scores, dtype=np.float64)
    neg = np.sort(s[~np.asarray(is_member).astype(bool)])[::-1]
    if len(neg) == 0:
        raise ValueError("threshold_at_fpr needs non-members (new individuals)")
    k = int(np.floor(fpr * len(neg) + 1e-9))  # false positives allowed
    if k >= len(neg):
        return float(s.min())
    return float(np.nextafter(neg[k], np.inf))  # neg[k] itself is rejected


def rates(scores: np.ndarray, is_member: np.ndarray, tau: float) -> tuple[float, float]:
    """``(tpr, fpr)`` of ``score >= tau``; NaN for a class that is absent."""
    s = np.asarray(scores, dtype=np.float64)
    y = np.asarray(is_member).astype(bool)
    acc = s >= tau
    tpr = float(acc[y].mean()) if y.any() else float("nan")
    fpr = float(acc[~y].mean()) if (~y).any() else float("nan")
    return tpr, fpr


@dataclass(frozen=True)
class Platt:
    """``p(known | score) = 1 / (1 + exp(-(a * score + b)))``; ``a > 0`` keeps the ranking."""

    a: float
    b: float

    def __call__(self, scores: np.ndarray) -> np.ndarray:
        z = self.a * np.asarray(scores, dtype=np.float64) + self.b
        return 1.0 / (1.0 + np.exp(-np.clip(z, -500, 500)))


def fit_platt(
    scores: np.ndarray, is_member: np.ndarray, *, balanced: bool = True, iters: int = 100
) -> Platt:
    """Platt scaling: a logistic fit of membership on one score by Newton's method, with Platt's
    smoothed targets ``(n+ + 1) / (n+ + 2)`` and ``1 / (n- + 2)`` so separable scores still give
    finite weights. ``balanced`` weights each class by ``N / (2 n_class)``: the probability then
    assumes known and new individuals equally likely a priori, whatever the set's class ratio.
    The scores are standardised internally; returns the map on raw scores.

    Not ``sklearn.linear_model.LogisticRegression``: it takes hard labels only, so Platt's
    smoothed targets need each row twice with weights ``w t`` and ``w (1 - t)``; so written it
    gives the same map (tests/test_open_set.py), but importing sklearn costs ``cli.py
    discriminate`` 0.6-0.9 s of start-up for a 2-parameter Newton fit."""
    s = np.asarray(scores, dtype=np.float64)
    y = np.asarray(is_member).astype(bool)
    n_pos, n_neg = int(y.sum()), int((~y).sum())
    if n_pos == 0 or n_neg == 0:
        raise ValueError("fit_platt needs members and non-members")
    t = np.where(y, (n_pos + 1) / (n_pos + 2), 1 / (n_neg + 2))
    w = np.where(y, len(s) / (2 * n_pos), len(s) / (2 * n_neg)) if balanced else np.ones(len(s))
    mu, sd = float(s.mean()), float(s.std()) or 1.0
    x = np.stack([(s - mu) / sd, np.ones_like(s)], 1)
    coef = np.zeros(2)
    for _ in range(iters):
        p = 1.0 / (1.0 + np.exp(-np.clip(x @ coef, -500, 500)))
        grad = x.T @ (w * (p - t))
        hess = (x * (w * p * (1 - p))[:, None]).T @ x + 1e-9 * np.eye(2)
        step = np.linalg.solve(hess, grad)
        coef -= step
        if np.abs(step).max() < 1e-10:
            break
    return Platt(a=float(coef[0] / sd), b=float(coef[1] - coef[0] * mu / sd))


# ---- encounters -----------------------------------------------------------------------------
def group_rows(groups: np.ndarray) -> tuple[np.ndarray, list[np.ndarray]]:
    """Sorted distinct ``groups`` and the row indices (in row order) of each."""
    g = np.asarray(groups).astype(str)
    names, inv = np.unique(g, return_inverse=True)
    return names, [np.flatnonzero(inv == k) for k in range(len(names))]


def aggregate(
    values: np.ndarray, groups: np.ndarray, rule: str = "mean"
) -> tuple[np.ndarray, np.ndarray]:
    """One row per group: ``(names (G,), aggregated (G,) or (G, K))`` from ``values`` (N,) or
    (N, K) and ``groups`` (N,).

    ``mean``: the column mean (scores, class probabilities); ``max``: the column maximum;
    ``mean_embedding``: rows L2-normalised, averaged and normalised again (embeddings (N, D),
    compared by cosine afterwards).
    """
    if rule not in AGGREGATES:
        raise ValueError(f"aggregate rule {rule!r}: choose one of {', '.join(AGGREGATES)}")
    v = np.asarray(values, dtype=np.float64)
    if rule == "mean_embedding":
        v = v / (np.linalg.norm(v, axis=1, keepdims=True) + 1e-12)
    names, rows = group_rows(groups)
    fn = np.max if rule == "max" else np.mean
    out = np.stack([fn(v[r], axis=0) for r in rows]) if rows else v[:0]
    if rule == "mean_embedding" and len(out):
        out = out / (np.linalg.norm(out, axis=1, keepdims=True) + 1e-12)
    return names, out


def group_labels(labels: np.ndarray, groups: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(names (G,), label (G,))``: the one label each group's rows share (e.g. its
    individual); a group whose rows disagree raises ValueError."""
    lab = np.asarray(labels)
    names, rows = group_rows(groups)
    out = []
    for n, r in zip(names, rows):
        vals = np.unique(lab[r])
        if len(vals) != 1:
            raise ValueError(f"group {n!r} mixes labels {list(vals)[:3]}")
        out.append(vals[0])
    return names, np.asarray(out)


# ---- re-identification ----------------------------------------------------------------------
def topk(class_scores: np.ndarray, k: int = 5) -> tuple[np.ndarray, np.ndarray]:
    """``(classes (N, k'), scores (N, k'))`` of the ``k' = min(k, C)`` best classes per row,
    best first; ties go to the lower class index."""
    cs = np.asarray(class_scores, dtype=np.float64)
    k = min(k, cs.shape[1])
    idx = np.argsort(-cs, axis=1, kind="stable")[:, :k]
    return idx, np.take_along_axis(cs, idx, 1)


def reid_topk(class_scores: np.ndarray, label: np.ndarray, ks=(1, 5)) -> dict:
    """Re-identification accuracy of known rows (``label >= 0``): ``reid_top{k}`` is the share
    whose true class is among the ``k`` best (NaN without known rows)."""
    lab = np.asarray(label)
    known = lab >= 0
    out = {}
    for k in ks:
        if not known.any():
            out[f"reid_top{k}"] = float("nan")
            continue
        idx, _ = topk(np.asarray(class_scores)[known], k)
        out[f"reid_top{k}"] = float((idx == lab[known][:, None]).any(1).mean())
    return out


def cosine(queries: np.ndarray, gallery: np.ndarray) -> np.ndarray:
    """Cosine similarity (N, M) of query rows (N, D) to gallery rows (M, D)."""
    q = np.asarray(queries, dtype=np.float64)
    g = np.asarray(gallery, dtype=np.float64)
    q = q / (np.linalg.norm(q, axis=1, keepdims=True) + 1e-12)
    g = g / (np.linalg.norm(g, axis=1, keepdims=True) + 1e-12)
    return q @ g.T


def class_similarity(
    queries: np.ndarray, gallery: np.ndarray, gallery_label: np.ndarray, num_classes: int
) -> np.ndarray:
    """(N, C): per class, the cosine of each query to that class's nearest gallery photo;
    ``-inf`` for a class without gallery photos."""
    sim = cosine(queries, gallery)
    lab = np.asarray(gallery_label)
    out = np.full((sim.shape[0], num_classes), -np.inf)
    for c in np.unique(lab):
        out[:, int(c)] = sim[:, lab == c].max(1)
    return out


def whaledo_map(
    similarity: np.ndarray,
    query_identity: np.ndarray,
    gallery_identity: np.ndarray,
    limit=20,
    allowed: np.ndarray | None = None,
) -> float:
    """Mean average precision of ranked gallery retrieval, as the Where's Whale-do challenge
    scores it: per query the ``limit`` most similar gallery photos (ties by gallery order),
    ``AP = sum_k P(k) rel(k) / min(R, limit)`` with ``R`` the query's matches in the gallery;
    queries without a match are left out; NaN if none has one. ``similarity`` (Q, G).

    ``allowed`` (Q, G) bool, optional: the photos each query's database holds; the others are
    never retrieved and not counted in ``R`` (None: every photo)."""
    sim = np.asarray(similarity, dtype=np.float64)
    qid = np.asarray(query_identity).astype(str)
    gid = np.asarray(gallery_identity).astype(str)
    ok = None if allowed is None else np.asarray(allowed, dtype=bool)
    if ok is not None and ok.shape != sim.shape:
        raise ValueError(f"allowed {ok.shape} must have the shape of similarity {sim.shape}")
    aps = []
    for i in range(len(qid)):
        cand = np.arange(len(gid)) if ok is None else np.flatnonzero(ok[i])
        n_rel = int((gid[cand] == qid[i]).sum())
        if n_rel == 0:
            continue
        order = cand[np.argsort(-sim[i, cand], kind="stable")[:limit]]
        rel = gid[order] == qid[i]
        prec = np.cumsum(rel) / np.arange(1, len(rel) + 1)
        aps.append(float((prec * rel).sum() / min(n_rel, limit)))
    return float(np.mean(aps)) if aps else float("nan")
