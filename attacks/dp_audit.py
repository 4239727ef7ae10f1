"""Empirical lower bound on epsilon from a membership attack's errors (DP auditing).

An (epsilon, delta)-DP training algorithm bounds every membership test: with FPR and FNR the
test's false positive and false negative rates on training examples (members) against examples
left out (non-members),

    FPR + e^eps * FNR >= 1 - delta   and   FNR + e^eps * FPR >= 1 - delta.

So any measured test gives

    eps >= max( log((1 - delta - FPR) / FNR), log((1 - delta - FNR) / FPR) ).

The rates are estimates; to keep the bound valid with probability at least ``1 - alpha`` they are
replaced by one-sided Clopper-Pearson upper bounds ``FPR_hi``, ``FNR_hi`` (each at level
``1 - alpha / 2``, Bonferroni over the two, and over ``n_tests`` attacks when the best of
several is reported), as in Jagielski, Ullman and Oprea (2020) and Nasr et al. (2021). Larger
rates only lower the bound, so it is conservative. Only sample-level tests count: the members
must be the training examples the guarantee protects.
"""

from __future__ import annotations

import math

import numpy as np
from scipy.stats import beta


def clopper_pearson_upper(k: int, n: int, alpha: float) -> float:
    """One-sided ``1 - alpha`` Clopper-Pearson upper bound on a rate with ``k`` events in ``n``
    trials (1.0 when ``k == n`` or ``n == 0``)."""
    if n <= 0 or k >= n:
        return 1.0
    return float(beta.ppf(1.0 - alpha, k + 1, n - k))


def epsilon_lower_bound(
    tp: int, fn: int, fp: int, tn: int, *, delta: float = 0.0, alpha: float = 0.05, n_tests: int = 1
) -> dict:
    """Lower bound on epsilon from one attack's confusion counts at its frozen threshold.

    Args:
        tp, fn: members (training examples) called member / non-member.
        fp, tn: non-members (held-out examples) called member / non-member.
        delta: the delta of the guarantee audited.
        alpha: the bound holds with probability at least ``1 - alpha``.
        n_tests: attacks whose best bound is reported (Bonferroni over them).

    Returns ``eps_lb`` (>= 0; 0 when the attack shows nothing), the point rates ``fpr``/``fnr``,
    their upper bounds ``fpr_hi``/``fnr_hi``, the point estimate ``eps_point`` (no interval), and
    the settings.
    """
    a = alpha / (2 * max(1, n_tests))
    n_mem, n_non = tp + fn, fp + tn
    fpr_hi = clopper_pearson_upper(fp, n_non, a)
    fnr_hi = clopper_pearson_upper(fn, n_mem, a)
    fpr = fp / n_non if n_non else float("nan")
    fnr = fn / n_mem if n_mem else float("nan")
    return {
        "eps_lb": _bound(fpr_hi, fnr_hi, delta),
        "eps_point": _bound(fpr, fnr, delta) if n_mem and n_non else 0.0,
        "fpr": fpr,
        "fnr": fnr,
        "fpr_hi": fpr_hi,
        "fnr_hi": fnr_hi,
        "n_members": n_mem,
        "n_nonmembers": n_non,
        "delta": delta,
        "alpha": alpha,
        "n_tests": n_tests,
    }


def _bound(fpr: float, fnr: float, delta: float) -> float:
    """``max(0, log((1-delta-FPR)/FNR), log((1-delta-FNR)/FPR))``; inf when a rate is 0."""
    out = 0.0
    for num, den in ((1.0 - delta - fpr, fnr), (1.0 - delta - fnr, fpr)):
        if num <= 0:
            continue
        out = max(out, math.inf if den <= 0 else math.log(num / den))
    return out


def confusion(scores: np.ndarray, is_member: np.ndarray, tau: float) -> tuple[int, int, int, int]:
    """``(tp, fn, fp, tn)`` of ``score >= tau -> member``."""
    s = np.asarray(scores, dtype=np.float64)
    y = np.asarray(is_member).astype(bool)
    pred = s >= tau
    return (
        int((pred & y).sum()),
        int((~pred & y).sum()),
        int((pred & ~y).sum()),
        int((~pred & ~y).sum()),
    )


def best_epsilon_lower_bound(
    counts: dict[str, tuple[int, int, int, int]], *, delta: float, alpha: float = 0.05
) -> dict:
    """The largest bound over several attacks' ``(tp, fn, fp, tn)`` (Bonferroni over them), with
    ``attack`` naming the one it came from; ``eps_lb`` 0 and ``attack`` None when none is given."""
    best = {"eps_lb": 0.0, "attack": None, "delta": delta, "alpha": alpha, "n_tests": len(counts)}
    for name, c in counts.items():
        b = epsilon_lower_bound(*c, delta=delta, alpha=alpha, n_tests=len(counts))
        if best["attack"] is None or b["eps_lb"] > best["eps_lb"]:
            best = {**b, "attack": name}
    return best
