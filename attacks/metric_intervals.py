"""Confidence intervals of the headline attack metrics, resampled by individual
(:func:`attacks.group_bootstrap.bootstrap_ci`): AUC, TPR at 1% and 0.1% FPR, balanced accuracy at
the attack's frozen threshold, with the counts of members, non-members and individuals behind
them; :func:`headline_intervals` adds accuracy and FPR at the frozen threshold over the same
groups, so every number of the report's headline table has an interval.

Bootstrap groups are individuals. When an individual holds both members and non-members (the
sample level: its training photos and its held-out photos), its two parts are resampled as
separate groups (``identity|role``) so each replicate keeps both classes.
"""

from __future__ import annotations

import numpy as np

from attacks.group_bootstrap import bootstrap_ci, bootstrap_cis
from attacks.metrics import auc, tpr_at_fpr
from attacks.open_set import rates

LOW_FPRS = (0.01, 0.001)


def bootstrap_groups(identity: np.ndarray, is_member: np.ndarray) -> np.ndarray:
    """Groups (N,) for :func:`bootstrap_ci`: the identity, or ``identity|role`` when some
    identity has rows of both classes."""
    ident = np.asarray(identity).astype(str)
    y = np.asarray(is_member).astype(int)
    mixed = set(ident[y == 1]) & set(ident[y == 0])
    if not mixed:
        return ident
    return np.char.add(np.char.add(ident, "|"), np.where(y == 1, "member", "nonmember"))


def balanced_accuracy(scores, is_member, tau: float) -> float:
    """(TPR + TNR) / 2 of ``score >= tau -> member`` (rates from :func:`attacks.open_set.rates`;
    NaN when a class is absent)."""
    tpr, fpr = rates(scores, is_member, tau)
    return 0.5 * (tpr + 1.0 - fpr)


def ci_summary(
    scores,
    is_member,
    tau: float,
    identity,
    *,
    n_boot: int = 1000,
    seed: int = 0,
    level: float = 0.95,
) -> dict:
    """``{metric: (point, lo, hi)}`` for ``auc``, ``tpr@1%fpr``, ``tpr@0.1%fpr``,
    ``balanced_acc``, plus ``n_members``, ``n_nonmembers``, ``n_individuals`` and
    ``min_fpr`` (= 1 / n_nonmembers, the smallest FPR the data can measure)."""
    s = np.asarray(scores, dtype=np.float64)
    y = np.asarray(is_member).astype(int)
    g = bootstrap_groups(identity, y)
    metrics = {"auc": auc, "balanced_acc": lambda a, b: balanced_accuracy(a, b, tau)}
    for f in LOW_FPRS:
        metrics[f"tpr@{f * 100:g}%fpr"] = lambda a, b, f=f: tpr_at_fpr(a, b, f)
    out = {
        k: bootstrap_ci(m, s, y, g, n_boot=n_boot, level=level, seed=seed)
        for k, m in metrics.items()
    }
    n_neg = int((y == 0).sum())
    out.update(
        n_members=int(y.sum()),
        n_nonmembers=n_neg,
        n_individuals=len(set(np.asarray(identity).astype(str))),
        min_fpr=1.0 / max(1, n_neg),
    )
    return out


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
