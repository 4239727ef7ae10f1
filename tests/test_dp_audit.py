"""The empirical epsilon lower bound on planted mechanisms of known epsilon: randomized response
(the tightest pure-DP test) and the Laplace mechanism."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.stats import beta

from attacks.dp_audit import (
    audit_attacks,
    audit_threshold,
    best_epsilon_lower_bound,
    clopper_pearson_upper,
    confusion,
    epsilon_lower_bound,
)


def rr_counts(eps: float, n: int, rng) -> tuple[int, int, int, int]:
    """Randomized response on the membership bit: reports the truth with prob e^eps/(1+e^eps),
    an exactly eps-DP mechanism; n members and n non-members, the attack believes the report."""
    lie = 1.0 / (1.0 + math.exp(eps))
    fn, fp = rng.binomial(n, lie), rng.binomial(n, lie)
    return n - fn, fn, fp, n - fp


def test_clopper_pearson_upper_by_hand():
    assert clopper_pearson_upper(0, 10, 0.05) == pytest.approx(1 - 0.05 ** (1 / 10))
    assert clopper_pearson_upper(3, 20, 0.05) == pytest.approx(beta.ppf(0.95, 4, 17))
    assert clopper_pearson_upper(5, 5, 0.05) == 1.0 and clopper_pearson_upper(0, 0, 0.05) == 1.0


def test_formula_by_hand():
    # FPR 0.1, FNR 0.3, delta 0: max(log(0.9/0.3), log(0.7/0.1)) = log 7
    b = epsilon_lower_bound(70, 30, 10, 90)
    assert b["eps_point"] == pytest.approx(math.log(7))
    assert b["fpr_hi"] > 0.1 and b["fnr_hi"] > 0.3 and 0 < b["eps_lb"] < math.log(7)
    # delta lowers the bound; a blind attack (FPR = TPR) shows nothing
    assert epsilon_lower_bound(70, 30, 10, 90, delta=0.05)["eps_point"] == pytest.approx(
        math.log(0.65 / 0.1)
    )
    assert epsilon_lower_bound(50, 50, 50, 50)["eps_lb"] == 0.0
    tp, fn, fp, tn = confusion(np.array([3.0, 2.0, 1.0, 0.0]), np.array([1, 0, 1, 0]), 1.5)
    assert (tp, fn, fp, tn) == (1, 1, 1, 1)


@pytest.mark.parametrize("eps", [0.5, 1.0, 2.0, 4.0])
def test_bound_never_exceeds_the_true_epsilon_and_approaches_it(eps):
    rng = np.random.default_rng(int(eps * 10))
    # 400 audits of 2,000 + 2,000 examples: the bound may exceed eps with probability <= alpha
    over = [epsilon_lower_bound(*rr_counts(eps, 2000, rng))["eps_lb"] > eps for _ in range(400)]
    assert np.mean(over) <= 0.05
    # at a strict level the bound holds in every one of them
    strict = [
        epsilon_lower_bound(*rr_counts(eps, 2000, rng), alpha=1e-4)["eps_lb"] for _ in range(200)
    ]
    assert max(strict) <= eps
    # many samples: the bound closes in on eps from below
    big = epsilon_lower_bound(*rr_counts(eps, 10**8, rng), alpha=1e-4)["eps_lb"]
    assert eps - 0.05 < big <= eps


def test_laplace_mechanism_threshold_attack():
    """Member bit b released as b + Laplace(1/eps) (sensitivity 1, eps-DP); the attack thresholds
    at 0.5, where FPR = FNR = exp(-eps/2)/2, so its bound tends to log(2 e^(eps/2) - 1) < eps."""
    eps, n = 1.5, 200_000
    rng = np.random.default_rng(7)
    b = np.repeat([1, 0], n)
    out = b + rng.laplace(0, 1 / eps, 2 * n)
    bound = epsilon_lower_bound(*confusion(out, b, 0.5), alpha=1e-4)
    limit = math.log(2 * math.exp(eps / 2) - 1)
    assert bound["eps_lb"] <= limit < eps
    assert bound["eps_point"] == pytest.approx(limit, abs=0.03)
    assert limit - bound["eps_lb"] < 0.06


def test_best_of_several_attacks_pays_for_the_choice():
    counts = {"weak": (55, 45, 45, 55), "strong": (90, 10, 10, 90)}
    best = best_epsilon_lower_bound(counts, delta=1e-5)
    alone = epsilon_lower_bound(*counts["strong"], delta=1e-5)
    assert best["attack"] == "strong" and best["n_tests"] == 2
    assert 0 < best["eps_lb"] < alone["eps_lb"]  # Bonferroni over two attacks
    assert best_epsilon_lower_bound({}, delta=1e-5)["eps_lb"] == 0.0


def planted_attacks(eps: float, n: int, rng) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """n members and n non-members; three attacks read planted mechanisms of the membership bit:
    ``laplace`` b + Laplace(1/eps) (eps-DP), ``weak`` b + Laplace(3/eps) (eps/3-DP) and
    ``blind`` pure noise (0-DP)."""
    b = np.repeat([1, 0], n)
    return b, {
        "laplace": b + rng.laplace(0, 1 / eps, 2 * n),
        "weak": b + rng.laplace(0, 3 / eps, 2 * n),
        "blind": rng.normal(size=2 * n),
    }


def audit_once(eps: float, n: int, rng, alpha: float) -> dict:
    """Thresholds chosen on one draw (the attack split), counted on a fresh one (evaluation)."""
    fb, fit = planted_attacks(eps, n, rng)
    eb, ev = planted_attacks(eps, n, rng)
    return audit_attacks({k: (fit[k], fb, ev[k], eb) for k in fit}, delta=0.0, alpha=alpha)


def test_best_of_several_attacks_names_it_and_stays_below_the_true_epsilon():
    eps = 2.0
    rng = np.random.default_rng(3)
    runs = [audit_once(eps, 1000, rng, 0.05) for _ in range(60)]
    assert {r["best"]["attack"] for r in runs} == {"laplace"}
    assert np.mean([r["best"]["eps_lb"] > eps for r in runs]) <= 0.05
    for r in runs:  # Bonferroni over the three: every bound at alpha / 3
        assert {v["n_tests"] for v in r["per_attack"].values()} == {3}
        assert r["best"]["eps_lb"] == max(v["eps_lb"] for v in r["per_attack"].values())
        assert r["per_attack"]["blind"]["eps_lb"] < 0.5
    strict = [audit_once(eps, 1000, rng, 1e-4) for _ in range(60)]
    assert max(r["best"]["eps_lb"] for r in strict) <= eps
    assert max(r["per_attack"]["weak"]["eps_lb"] for r in strict) <= eps / 3


def test_audit_threshold_maximises_the_bound_on_the_fit_rows():
    # members 0.9-0.99 and one at 0.1; non-members 0.0-0.5: the accuracy cut is near 0.7, the
    # bound's cut too; with every score tied nothing is proved and the accuracy cut is used
    s = np.concatenate([np.linspace(0.9, 0.99, 50), [0.1], np.linspace(0.0, 0.5, 51)])
    y = np.repeat([1, 0], 51)
    tau = audit_threshold(s, y, delta=0.0)
    assert 0.5 < tau < 0.9
    b = epsilon_lower_bound(*confusion(s, y, tau), delta=0.0)["eps_lb"]
    for t in np.linspace(-0.1, 1.1, 121):
        assert epsilon_lower_bound(*confusion(s, y, t), delta=0.0)["eps_lb"] <= b + 1e-12
    flat = audit_threshold(np.zeros(10), np.repeat([1, 0], 5), delta=0.0)
    assert flat == -1.0  # the accuracy-best cut (every candidate ties; the lowest)
