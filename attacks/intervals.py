"""The headline's 95% intervals: :func:`attacks.confidence.ci_summary` (AUC, TPR at low FPR,
balanced accuracy, resampled by individual) plus accuracy and FPR at the frozen threshold over
the same bootstrap groups, so every number of the report's headline table has an interval.

The bootstrap by individual stays hand-written (:mod:`attacks.uncertainty`): scikit-learn and
scipy resample rows (``scipy.stats.bootstrap``), not groups of rows within each class.
"""

from __future__ import annotations

import numpy as np

from attacks.confidence import bootstrap_groups, ci_summary
from attacks.open_set import rates
from attacks.uncertainty import bootstrap_cis


def headline_intervals(
    scores,
    is_member,
    tau: float,
    identity,
    *,
    n_boot: int = 1000,
    seed: int = 0,
    known: dict | None = None,
) -> dict:
    """``{metric: (point, lo, hi)}`` for ``acc``, ``fpr`` (at ``tau``) and every metric of
    :func:`ci_summary` (taken from ``known`` when given, e.g. an ensemble's ``info["ci"]``),
    plus its counts. ``scores``, ``is_member``, ``identity``: (N,) evaluated rows."""
    s = np.asarray(scores, dtype=np.float64)
    y = np.asarray(is_member).astype(int)
    out = dict(known) if known else ci_summary(s, y, tau, identity, n_boot=n_boot, seed=seed)
    metrics = {
        "acc": lambda a, b: float(np.mean((a >= tau) == (b == 1))),
        "fpr": lambda a, b: rates(a, b, tau)[1],
    }
    g = bootstrap_groups(identity, y)
    out.update(bootstrap_cis(metrics, s, y, g, n_boot=n_boot, seed=seed))
    return out
