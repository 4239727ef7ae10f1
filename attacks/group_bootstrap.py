"""Bootstrap confidence intervals resampled by group (individual), not by photo.

Photos of one whale are not independent, so a photo-level bootstrap understates the spread.
:func:`bootstrap_ci` draws whole groups with replacement, separately among member and
non-member groups so every replicate keeps both classes, and recomputes the metric.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np


def _group_index(groups: np.ndarray) -> list[np.ndarray]:
    """Row indices of each distinct group, in sorted group order."""
    _, inv = np.unique(np.asarray(groups).astype(str), return_inverse=True)
    order = np.argsort(inv, kind="stable")
    bounds = np.flatnonzero(np.diff(inv[order])) + 1
    return np.split(order, bounds)


def bootstrap_ci(
    metric: Callable[[np.ndarray, np.ndarray], float],
    scores: np.ndarray,
    is_member: np.ndarray,
    groups: np.ndarray | None = None,
    *,
    n_boot: int = 1000,
    level: float = 0.95,
    seed: int = 0,
) -> tuple[float, float, float]:
    """``(point, lo, hi)``: ``metric(scores, is_member)`` and its percentile interval.

    Args:
        metric: function of ``(scores (N,), is_member (N,))`` returning a float.
        scores: (N,) attack scores, higher = member.
        is_member: (N,) in {0, 1}.
        groups: (N,) group label per row (the individual); None resamples rows.
        n_boot: replicates. level: two-sided coverage, e.g. 0.95.
        seed: RNG seed; the same inputs and seed give the same interval.

    Groups are resampled within each class (a group holding both classes is resampled with the
    member groups), so each replicate has members and non-members.
    """
    cis = bootstrap_cis(
        {"m": metric}, scores, is_member, groups, n_boot=n_boot, level=level, seed=seed
    )
    return cis["m"]


def bootstrap_cis(
    metrics: dict[str, Callable[[np.ndarray, np.ndarray], float]],
    scores: np.ndarray,
    is_member: np.ndarray,
    groups: np.ndarray | None = None,
    *,
    n_boot: int = 1000,
    level: float = 0.95,
    seed: int = 0,
) -> dict[str, tuple[float, float, float]]:
    """:func:`bootstrap_ci` of several metrics over the same replicates: ``{name: (point, lo,
    hi)}``, each equal to what :func:`bootstrap_ci` gives for that metric alone, for the cost
    of one resampling."""
    s = np.asarray(scores, dtype=np.float64)
    y = np.asarray(is_member).astype(int)
    g = np.arange(len(s)) if groups is None else np.asarray(groups)
    names = list(metrics)
    point = {k: float(metrics[k](s, y)) for k in names}
    blocks = _group_index(g)
    has_member = np.array([y[b].any() for b in blocks])
    pools = [[b for b, m in zip(blocks, has_member) if m == flag] for flag in (True, False)]
    if not pools[0] or not pools[1]:
        return {k: (point[k], float("nan"), float("nan")) for k in names}
    rng = np.random.default_rng(seed)
    stats = np.empty((n_boot, len(names)))
    for r in range(n_boot):
        idx = np.concatenate(
            [
                np.concatenate([pool[i] for i in rng.integers(0, len(pool), len(pool))])
                for pool in pools
            ]
        )
        stats[r] = [metrics[k](s[idx], y[idx]) for k in names]
    alpha = (1.0 - level) / 2
    lo, hi = np.nanquantile(stats, [alpha, 1 - alpha], axis=0)
    return {k: (point[k], float(lo[j]), float(hi[j])) for j, k in enumerate(names)}
