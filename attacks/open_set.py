"""Open-set terms ecologists use for re-identification (BAKS, BAUS, AUROC-new).

Conventions as in :mod:`attacks.metrics`: ``scores`` (N,), higher = member (= known individual);
``is_member`` (N,) in {0, 1}.
"""

from __future__ import annotations

import numpy as np

from attacks.metrics import auc


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

    baks = per_id_mean(y, correct)
    baus = per_id_mean(~y, ~accept)
    return {
        "baks": baks,
        "baks_detect": per_id_mean(y, accept),
        "baus": baus,
        "gmean": float(np.sqrt(baks * baus)) if np.isfinite(baks * baus) else float("nan"),
        "auroc_new": auc(-s, (~y).astype(np.int64)),
    }
