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

:func:`audit_attacks` audits several attacks at once: each threshold chosen on an attack split
(:func:`audit_threshold`, the largest bound there), the errors counted on a separate evaluation
split, every bound at level ``alpha / k`` so that the best of the ``k`` is a valid
``1 - alpha`` bound (see ``docs/defenses.md``).
"""

from __future__ import annotations

import math

import numpy as np
from scipy.stats import beta

from attacks.metrics import best_threshold


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
    return float(_bounds(np.asarray(fpr), np.asarray(fnr), delta))


def _bounds(fpr: np.ndarray, fnr: np.ndarray, delta: float) -> np.ndarray:
    """:func:`_bound` elementwise over arrays of rates."""
    out = np.zeros(np.broadcast(fpr, fnr).shape)
    with np.errstate(divide="ignore", invalid="ignore"):
        for num, den in ((1.0 - delta - fpr, fnr), (1.0 - delta - fnr, fpr)):
            b = np.where(den <= 0, math.inf, np.log(num / np.where(den <= 0, 1.0, den)))
            out = np.maximum(out, np.where(num > 0, b, 0.0))
    return out


def _cp_uppers(k: np.ndarray, n: int, alpha: float) -> np.ndarray:
    """:func:`clopper_pearson_upper` elementwise over event counts ``k`` (same ``n``)."""
    k = np.asarray(k)
    if n <= 0:
        return np.ones(k.shape)
    return np.where(k >= n, 1.0, beta.ppf(1.0 - alpha, k + 1, np.maximum(n - k, 1)))


def audit_threshold(
    scores: np.ndarray,
    is_member: np.ndarray,
    *,
    delta: float,
    alpha: float = 0.05,
    n_tests: int = 1,
) -> float:
    """The threshold (member iff ``score >= tau``) whose counts on these rows give the largest
    :func:`epsilon_lower_bound` (same ``alpha`` and ``n_tests``). Chosen on the attack split
    only; counted on the evaluation split, the bound stays an honest test. Candidates are the
    midpoints between distinct scores plus both ends; ties go to the lowest. When no candidate
    proves anything the accuracy-best threshold (:func:`attacks.metrics.best_threshold`)."""
    s = np.asarray(scores, dtype=np.float64)
    y = np.asarray(is_member).astype(bool)
    u = np.unique(s)
    cand = np.concatenate([[u[0] - 1.0], (u[:-1] + u[1:]) / 2, [u[-1] + 1.0]])
    mem, non = np.sort(s[y]), np.sort(s[~y])
    fn = np.searchsorted(mem, cand, side="left")  # members below tau
    fp = len(non) - np.searchsorted(non, cand, side="left")  # non-members at or above tau
    a = alpha / (2 * max(1, n_tests))
    eps = _bounds(_cp_uppers(fp, len(non), a), _cp_uppers(fn, len(mem), a), delta)
    if not (eps > 0).any():
        return best_threshold(s, y)[0]
    return float(cand[int(np.argmax(eps))])


def audit_attacks(
    scored: dict[str, tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]],
    *,
    delta: float,
    alpha: float = 0.05,
) -> dict:
    """The bound of every attack and the best one, valid at ``1 - alpha`` together.

    ``scored[name] = (fit scores, fit is_member, eval scores, eval is_member)``, all (N,) of
    one audit level whose members are training examples. Each attack's threshold is chosen on
    its fit rows (:func:`audit_threshold`) and its confusion counted on the eval rows. With
    ``k = len(scored)`` attacks each bound is taken at level ``alpha / k`` (Bonferroni), so
    every per-attack bound, and their maximum, holds with probability ``1 - alpha``.

    Returns ``{"best": best_epsilon_lower_bound(...) (with "attack", "threshold"),
    "per_attack": {name: epsilon_lower_bound(...) + "threshold"}}``.
    """
    k = len(scored)
    per, counts = {}, {}
    for name, (fs, fy, es, ey) in scored.items():
        tau = audit_threshold(fs, fy, delta=delta, alpha=alpha, n_tests=k)
        counts[name] = confusion(es, ey, tau)
        b = epsilon_lower_bound(*counts[name], delta=delta, alpha=alpha, n_tests=k)
        per[name] = {**b, "threshold": tau}
    best = best_epsilon_lower_bound(counts, delta=delta, alpha=alpha)
    if best["attack"] is not None:
        best["threshold"] = per[best["attack"]]["threshold"]
    return {"best": best, "per_attack": per}


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
