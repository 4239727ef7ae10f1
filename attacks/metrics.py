"""Attack math over score arrays: threshold sweep, balancing, AUC/ROC, TPR at low FPR, KL.

Conventions: ``scores`` (N,) float, higher means "member"; ``is_member`` (N,) in {0, 1}.
"""

from __future__ import annotations

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
    f, t = roc(scores, is_member)
    ok = f <= fpr + 1e-12
    return float(t[ok].max()) if ok.any() else 0.0


def _ranks(scores: np.ndarray) -> np.ndarray:
    """Dense ranks scaled into [0, 1] (float64): same ROC, and torchmetrics neither applies a
    sigmoid to scores outside [0, 1] nor merges close scores in float32."""
    s = np.asarray(scores, dtype=np.float64)
    _, inv = np.unique(s, return_inverse=True)
    return inv.astype(np.float64) / max(1, inv.max(initial=0))


def roc(scores: np.ndarray, is_member: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """ROC curve ``(fpr, tpr)`` from torchmetrics, as float64 arrays starting at (0, 0)."""
    import torch  # torch and torchmetrics on first use: signal files load without them
    from torchmetrics.functional.classification import binary_roc

    fpr, tpr, _ = binary_roc(
        torch.as_tensor(_ranks(scores)),
        torch.as_tensor(np.asarray(is_member, dtype=np.int64)),
    )
    return fpr.double().numpy(), tpr.double().numpy()


def auc(scores: np.ndarray, is_member: np.ndarray) -> float:
    """Area under the ROC curve (torchmetrics); 0.5 when one class is absent."""
    import torch
    from torchmetrics.functional.classification import binary_auroc

    y = np.asarray(is_member, dtype=np.int64)
    if y.min() == y.max():
        return 0.5
    return float(binary_auroc(torch.as_tensor(_ranks(scores)), torch.as_tensor(y)))


def threshold_metrics(
    scores: np.ndarray, is_member: np.ndarray, tau: float, *, min_negatives: int = 100
) -> dict:
    """Decision metrics at a frozen threshold plus threshold-free AUC and TPR at low FPR.

    ``tpr@1%fpr`` and ``tpr@0.1%fpr`` come with the number of non-members behind them; when fewer
    than ``min_negatives / fpr`` non-members exist, ``*_reliable`` is False and a warning is issued
    (with N non-members the smallest measurable non-zero FPR is 1/N).
    """
    s = np.asarray(scores, dtype=np.float64)
    y = np.asarray(is_member).astype(bool)
    pred = s >= tau
    tp, fp = int((pred & y).sum()), int((pred & ~y).sum())
    tn, fn = int((~pred & ~y).sum()), int((~pred & y).sum())
    n_pos, n_neg = tp + fn, tn + fp
    tpr = tp / n_pos if n_pos else 0.0
    tnr = tn / n_neg if n_neg else 0.0
    out = {
        "threshold": float(tau),
        "acc": (tp + tn) / max(1, len(s)),
        "balanced_acc": (tpr + tnr) / 2,
        "precision": tp / (tp + fp) if tp + fp else 0.0,
        "recall": tpr,
        "tpr": tpr,
        "fpr": fp / n_neg if n_neg else 0.0,
        "auc": auc(s, y),
        "n_members": n_pos,
        "n_nonmembers": n_neg,
    }
    for label, rate in (("1%", 0.01), ("0.1%", 0.001)):
        out[f"tpr@{label}fpr"] = tpr_at_fpr(s, y, rate) if n_pos and n_neg else 0.0
        reliable = n_neg * rate >= 1.0
        out[f"tpr@{label}fpr_reliable"] = reliable
        if not reliable:
            warnings.warn(
                f"TPR at {label} FPR rests on {n_neg} non-members: the smallest non-zero FPR "
                f"measurable is {1 / max(1, n_neg):.3g}, so this figure is not meaningful.",
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
    return float(np.sum(p * np.log(p / q)))
