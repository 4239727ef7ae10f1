"""Attack math over score arrays: threshold sweep, balancing, AUC/ROC, TPR at low FPR, KL.

Library calls where a library gives the same numbers (tests/test_metrics_library.py checks each
against a hand-written version on tied data): AUC ``sklearn.metrics.roc_auc_score``, the ROC
``sklearn.metrics.roc_curve``, KL terms ``scipy.special.rel_entr``. Kept by hand: the seeded
balancing, the accuracy-maximising threshold sweep (scikit-learn has no such search), the
largest TPR at FPR <= f read off the ROC (one masked max), and the permutation null's batched
bincount (scipy has no permutation test of a binned KL), and ranks in place of non-finite scores
(scikit-learn refuses inf and NaN).

Conventions: ``scores`` (N,) float, higher means "member"; ``is_member`` (N,) in {0, 1}.
"""

from __future__ import annotations

import math
import warnings

import numpy as np


def balance(is_member: np.ndarray, seed: int = 0) -> np.ndarray:
    """Indices of a class-balanced subset: the larger class is subsampled, seeded, order kept.

    Returns an int64 index array into ``is_member``.
    """
    is_member = np.asarray(is_member).astype(bool)
    pos, neg = np.flatnonzero(is_member), np.flatnonzero(~is_member)
    n = min(len(pos), len(neg))
    rng = np.random.default_rng(seed)
    if len(pos) > n:
        pos = np.sort(rng.choice(pos, n, replace=False))
    if len(neg) > n:
        neg = np.sort(rng.choice(neg, n, replace=False))
    return np.sort(np.concatenate([pos, neg]))


def best_threshold(scores: np.ndarray, is_member: np.ndarray) -> tuple[float, float]:
    """Threshold ``tau`` maximising accuracy of ``score >= tau -> member``.

    Candidates are midpoints between consecutive distinct scores plus both ends; ties go to the
    lowest candidate. Returns ``(tau, accuracy)``. O(N log N).
    """
    s = np.asarray(scores, dtype=np.float64)
    y = np.asarray(is_member).astype(bool)
    if s.size == 0:
        raise ValueError("best_threshold needs at least one score")
    uniq = np.unique(s)
    cands = np.concatenate([[uniq[0] - 1.0], (uniq[:-1] + uniq[1:]) / 2, [uniq[-1] + 1.0]])
    order = np.sort(s)
    ys = y[np.argsort(s, kind="stable")]
    # number of samples with score < cand: predicted non-member
    below = np.searchsorted(order, cands, side="left")
    neg_below = np.concatenate([[0], np.cumsum(~ys)])[below]
    pos_below = np.concatenate([[0], np.cumsum(ys)])[below]
    n_pos = int(y.sum())
    correct = neg_below + (n_pos - pos_below)
    k = int(np.argmax(correct))
    return float(cands[k]), float(correct[k] / len(s))


def tpr_at_fpr(scores: np.ndarray, is_member: np.ndarray, fpr: float) -> float:
    """Largest TPR over ROC points with FPR <= ``fpr`` (0 if none)."""
    return _tpr_at(*roc(scores, is_member), fpr)


def _tpr_at(f: np.ndarray, t: np.ndarray, fpr: float) -> float:
    ok = f <= fpr + 1e-12
    return float(t[ok].max()) if ok.any() else 0.0


def _finite(scores: np.ndarray) -> np.ndarray:
    """``scores`` as float64; with any non-finite value (which scikit-learn refuses), their dense
    ranks instead: the same ROC and AUC, +-inf kept in order and NaN ranked highest, as before
    (hand-written: scikit-learn has no option for non-finite scores)."""
    s = np.asarray(scores, dtype=np.float64)
    if np.isfinite(s).all():
        return s
    return np.unique(s, return_inverse=True)[1].astype(np.float64)


def roc(scores: np.ndarray, is_member: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """ROC curve ``(fpr, tpr)`` from ``sklearn.metrics.roc_curve`` (every distinct score a
    point, none dropped), as float64 arrays starting at (0, 0)."""
    from sklearn.metrics import roc_curve  # on first use: signal files load without it

    y = np.asarray(is_member, dtype=np.int64)
    fpr, tpr, _ = roc_curve(y, _finite(scores), drop_intermediate=False)
    return fpr.astype(np.float64), tpr.astype(np.float64)


def auc(scores: np.ndarray, is_member: np.ndarray) -> float:
    """Area under the ROC curve (``sklearn.metrics.roc_auc_score``, ties count one half);
    0.5 when one class is absent."""
    from sklearn.metrics import roc_auc_score

    y = np.asarray(is_member, dtype=np.int64)
    if y.size == 0 or y.min() == y.max():
        return 0.5
    return float(roc_auc_score(y, _finite(scores)))


def advantage(scores: np.ndarray, is_member: np.ndarray) -> float:
    """Attacker advantage: ``max(TPR - FPR)`` over the ROC curve (Yeom et al.), in [0, 1]."""
    y = np.asarray(is_member).astype(bool)
    if y.all() or not y.any():
        return 0.0
    return _advantage(*roc(scores, y))


def _advantage(f: np.ndarray, t: np.ndarray) -> float:
    return float(max(0.0, (t - f).max()))


#: the low-FPR operating points reported by :func:`threshold_metrics`
LOW_FPR = (("1%", 0.01), ("0.1%", 0.001))


def threshold_metrics(
    scores: np.ndarray,
    is_member: np.ndarray,
    tau: float,
    *,
    min_negatives: int = 10,
    name: str = "",
) -> dict:
    """Decision metrics at a frozen threshold plus threshold-free AUC, advantage and TPR at low
    FPR.

    ``tpr@1%fpr`` and ``tpr@0.1%fpr`` come with ``*_n_fp``, the number of false positives the FPR
    budget allows (``floor(n_nonmembers * fpr)``). The figure is ``*_reliable`` only when that
    budget is at least ``min_negatives`` non-members, i.e. when ``n_nonmembers >= min_negatives /
    fpr``: a TPR at 1% FPR measured on 100 non-members rests on one false positive and is not
    reliable. One warning (naming ``name``) lists the unreliable operating points.
    ``advantage`` is ``max(TPR - FPR)`` over the ROC; ``tpr`` (= recall) and ``fpr`` are at ``tau``.
    """
    s = np.asarray(scores, dtype=np.float64)
    y = np.asarray(is_member).astype(bool)
    pred = s >= tau
    tp, fp = int((pred & y).sum()), int((pred & ~y).sum())
    tn, fn = int((~pred & ~y).sum()), int((~pred & y).sum())
    n_pos, n_neg = tp + fn, tn + fp
    tpr = tp / n_pos if n_pos else 0.0
    tnr = tn / n_neg if n_neg else 0.0
    both = bool(n_pos and n_neg)
    f, t = roc(s, y) if both else (np.zeros(1), np.zeros(1))
    out = {
        "threshold": float(tau),
        "acc": (tp + tn) / max(1, len(s)),
        "balanced_acc": (tpr + tnr) / 2,
        "precision": tp / (tp + fp) if tp + fp else 0.0,
        "tpr": tpr,
        "fpr": fp / n_neg if n_neg else 0.0,
        "auc": auc(s, y),
        "advantage": _advantage(f, t),
        "n_members": n_pos,
        "n_nonmembers": n_neg,
    }
    weak = []
    for label, rate in LOW_FPR:
        out[f"tpr@{label}fpr"] = _tpr_at(f, t, rate)
        n_fp = int(math.floor(n_neg * rate + 1e-9))
        out[f"tpr@{label}fpr_n_fp"] = n_fp
        out[f"tpr@{label}fpr_reliable"] = n_fp >= max(1, min_negatives)
        if not out[f"tpr@{label}fpr_reliable"]:
            weak.append(f"{label} FPR ({n_fp} false positives allowed)")
    if weak:
        who = f"attack {name}: " if name else ""
        warnings.warn(
            f"{who}TPR at {' and '.join(weak)}: only {n_neg} non-members; a reliable figure "
            f"needs at least {max(1, min_negatives)} false positives within the FPR budget.",
            stacklevel=2,
        )
    return out


def histogram_kl(
    p_samples: np.ndarray, q_samples: np.ndarray, bins: int = 20, pseudo_count: float = 0.5
) -> float:
    """KL(P || Q) in nats between two samples' histograms (whale paper, eqs. 4-5).

    Binning: ``bins`` equal-width bins over [0, max] of both samples pooled (cross-entropies are
    non-negative; anchoring at 0 keeps near-identical early-epoch losses in one bin instead of
    stretching their noise over all bins). Non-finite values are dropped.
    Normalisation: ``pseudo_count`` (Jeffreys' 0.5) is added to every bin's count before dividing
    by the total, ``p_i = (c_i + a) / (n + a * bins)``, so an empty bin of Q stays finite and a
    few stray samples cannot dominate. Identical samples give 0.
    """
    p_samples = np.asarray(p_samples, dtype=np.float64)
    q_samples = np.asarray(q_samples, dtype=np.float64)
    p_samples, q_samples = p_samples[np.isfinite(p_samples)], q_samples[np.isfinite(q_samples)]
    if p_samples.size == 0 or q_samples.size == 0:
        return float("nan")
    lo = min(0.0, p_samples.min(), q_samples.min())
    hi = max(p_samples.max(), q_samples.max())
    if hi <= lo:
        return 0.0
    edges = np.linspace(lo, hi, bins + 1)
    p = np.histogram(p_samples, edges)[0].astype(np.float64) + pseudo_count
    q = np.histogram(q_samples, edges)[0].astype(np.float64) + pseudo_count
    p, q = p / p.sum(), q / q.sum()
    from scipy.special import rel_entr  # on first use: signal files load without scipy

    return float(rel_entr(p, q).sum())


def _kl_bins(p_samples, q_samples, bins: int):
    """Finite samples and the edges :func:`histogram_kl` bins them with (None: degenerate)."""
    p = np.asarray(p_samples, dtype=np.float64)
    q = np.asarray(q_samples, dtype=np.float64)
    p, q = p[np.isfinite(p)], q[np.isfinite(q)]
    if p.size == 0 or q.size == 0:
        return p, q, None
    lo, hi = min(0.0, p.min(), q.min()), max(p.max(), q.max())
    return p, q, (np.linspace(lo, hi, bins + 1) if hi > lo else None)


def kl_permutation_null(
    p_samples: np.ndarray,
    q_samples: np.ndarray,
    bins: int = 20,
    pseudo_count: float = 0.5,
    n_perm: int = 50,
    seed: int = 0,
) -> float:
    """Mean :func:`histogram_kl` of ``n_perm`` random relabellings of the pooled samples, keeping
    both sample sizes (nats): the value the histogram KL takes when P and Q are the same
    distribution, at these sizes and bins. Its small-sample floor (about 0.09 nats for two
    samples of 100 over 20 bins) is what a measured KL must be read against; the excess over it
    (``kl - null``) is the evidence of a difference. NaN when a sample is empty; seeded."""
    p, q, edges = _kl_bins(p_samples, q_samples, bins)
    if p.size == 0 or q.size == 0:
        return float("nan")
    if edges is None:
        return 0.0
    pooled = np.concatenate([p, q])
    # bin every pooled value once; a permutation only reassigns bin indices to P or Q
    idx = np.clip(np.searchsorted(edges, pooled, side="right") - 1, 0, bins - 1)
    rng = np.random.default_rng(seed)
    perm = rng.permuted(np.tile(idx, (n_perm, 1)), axis=1)
    offs = np.arange(n_perm)[:, None] * bins
    cp = np.bincount((perm[:, : p.size] + offs).ravel(), minlength=n_perm * bins)
    cq = np.bincount((perm[:, p.size :] + offs).ravel(), minlength=n_perm * bins)
    cp = cp.reshape(n_perm, bins) + pseudo_count
    cq = cq.reshape(n_perm, bins) + pseudo_count
    pp, qq = cp / cp.sum(1, keepdims=True), cq / cq.sum(1, keepdims=True)
    from scipy.special import rel_entr

    return float(np.mean(rel_entr(pp, qq).sum(axis=1)))
