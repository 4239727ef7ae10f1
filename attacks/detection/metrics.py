"""Attack metrics for the detector audit: accuracy and average recall (paper, Tables 1-2), plus
AUC and TPR at 1% FPR from :mod:`attacks.metrics`."""

from __future__ import annotations

import warnings

import numpy as np

from attacks.metrics import auc, tpr_at_fpr


def average_recall(pred_member: np.ndarray, is_member: np.ndarray) -> float:
    """Mean of the recall on members ("in") and on non-members ("out"), in [0, 1]."""
    p = np.asarray(pred_member).astype(bool)
    y = np.asarray(is_member).astype(bool)
    recalls = [float((p[y == c] == c).mean()) for c in (True, False) if (y == c).any()]
    return float(np.mean(recalls)) if recalls else float("nan")


def attack_metrics(prob_member: np.ndarray, is_member: np.ndarray, threshold: float = 0.5) -> dict:
    """``acc`` and ``average_recall`` at ``prob >= threshold``; threshold-free ``auc`` and
    ``tpr@1%fpr`` (with ``n_nonmembers``: below 100 non-members that figure is coarse)."""
    p = np.asarray(prob_member, dtype=np.float64)
    y = np.asarray(is_member).astype(int)
    pred = p >= threshold
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        tpr1 = tpr_at_fpr(p, y, 0.01) if 0 < y.sum() < len(y) else 0.0
    return {
        "acc": float((pred == y.astype(bool)).mean()) if len(y) else float("nan"),
        "average_recall": average_recall(pred, y),
        "auc": auc(p, y),
        "tpr@1%fpr": float(tpr1),
        "n_members": int(y.sum()),
        "n_nonmembers": int(len(y) - y.sum()),
    }
