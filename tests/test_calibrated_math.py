"""LiRA and RMIA against hand-computed values on tiny arrays (one worked example per formula)."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.special import logit

from attacks.lira import gaussian_fits, lira_offline, lira_online, logit_confidence
from attacks.rmia import RMIA, offline_pr_x, pr_x, rmia_scores

IN = np.array([[True, True, False, False]])
PHI = np.array([[[1.0], [3.0], [0.0], [2.0]]])  # (N=1, K=4, A=1): IN {1, 3}, OUT {0, 2}


def test_logit_confidence_is_log_odds_of_the_class():
    z = np.array([[2.0, 0.0, 0.0], [0.0, 1.0, 3.0]])
    p = np.exp(z) / np.exp(z).sum(1, keepdims=True)
    np.testing.assert_allclose(logit_confidence(z, np.array([0, 1])), logit(p[[0, 1], [0, 1]]))
    np.testing.assert_allclose(logit_confidence(z), [2.0 - np.log(2.0), logit(p[1, 2])])
    assert logit_confidence(np.array([[40.0, 0.0]]))[0] == pytest.approx(40.0)  # no overflow


def test_lira_online_hand_value():
    # mu_in = 2, mu_out = 1, sd_in = sd_out = sqrt(2) (ddof 1); phi = 2:
    # log N(2; 2, s) - log N(2; 1, s) = 0 + 1 / (2 * 2) = 0.25
    s = lira_online(np.array([[2.0]]), PHI, IN, variance="per_example")
    np.testing.assert_allclose(s, [0.25])


def test_lira_offline_hand_value_is_one_sided():
    # log Phi((2 - 1) / sqrt(2)) = log 0.7602499 = -0.2741080
    s = lira_offline(np.array([[2.0]]), PHI, IN, variance="per_example")
    np.testing.assert_allclose(s, [-0.2741080], atol=1e-6)
    hi = lira_offline(np.array([[9.0]]), PHI, IN, variance="per_example")
    lo = lira_offline(np.array([[-9.0]]), PHI, IN, variance="per_example")
    assert hi[0] > s[0] > lo[0] and hi[0] <= 0.0  # monotone, log of a probability


def test_global_variance_pools_residuals():
    # OUT values: row 0 {0, 2}, row 1 {5, 9}; pooled sd = sqrt((1 + 1 + 4 + 4) / (4 - 2)) = sqrt 5
    ref = np.array([[[0.0], [2.0]], [[5.0], [9.0]]])
    out = np.zeros((2, 2), bool)
    f = gaussian_fits(ref, out, "global")
    np.testing.assert_allclose(f["sd_out"], np.sqrt(5.0))
    np.testing.assert_allclose(f["mu_out"], [[1.0], [7.0]])
    s = lira_offline(np.array([[1.0], [7.0]]), ref, out, "global")
    np.testing.assert_allclose(s, np.log(0.5))


def test_missing_side_borrows_the_mean_gap():
    # row 0 has IN {4} and OUT {1}: gap 3; row 1 only OUT {2}: mu_in = 2 + 3 = 5
    ref = np.array([[[4.0], [1.0]], [[2.0], [2.0]]])
    rin = np.array([[True, False], [False, False]])
    f = gaussian_fits(ref, rin, "global")
    np.testing.assert_allclose(f["mu_in"][:, 0], [4.0, 5.0])


def test_lira_averages_augmentations():
    ref = np.concatenate([PHI, PHI + 10.0], axis=2)  # (1, 4, 2)
    s = lira_online(np.array([[2.0, 12.0]]), ref, IN, variance="per_example")
    np.testing.assert_allclose(s, [0.25])


def test_rmia_offline_correction_matches_the_paper():
    # Pr_IN ~ a * Pr_OUT + (1 - a); Pr(x) = (Pr_IN + Pr_OUT) / 2 = ((1 + a) Pr_OUT + 1 - a) / 2
    a, p_out = 0.3, 0.4
    p_in = a * p_out + (1 - a)
    assert offline_pr_x(p_out, a) == pytest.approx((p_in + p_out) / 2) == pytest.approx(0.61)
    assert offline_pr_x(p_out, 1.0) == pytest.approx(p_out)  # a = 1: IN looks like OUT
    assert offline_pr_x(p_out, 0.0) == pytest.approx((1 + p_out) / 2)  # a = 0: Pr_IN = 1
    # offline uses the OUT references only; a row with only IN references inverts the line
    ref_p = np.array([[0.9, 0.4], [0.82, 0.82]])
    rin = np.array([[True, False], [True, True]])
    np.testing.assert_allclose(pr_x(ref_p, rin, True, a), [0.61, 0.61])
    np.testing.assert_allclose(pr_x(ref_p, rin, False, a), [0.65, 0.82])


def test_rmia_pairwise_ratio_hand_values():
    # ratio_x = [0.9/0.6, 0.2/0.4] = [1.5, 0.5]; ratio_z = [1, 0.5, 2]
    args = (np.array([0.9, 0.2]), np.array([0.6, 0.4]), np.array([0.5, 0.3, 0.8]))
    zref = np.array([0.5, 0.6, 0.4])
    np.testing.assert_allclose(rmia_scores(*args, zref, gamma=1.0), [2 / 3, 1 / 3])
    np.testing.assert_allclose(rmia_scores(*args, zref, gamma=2.0), [1 / 3, 0.0])


def test_rmia_attack_with_one_reference():
    # one OUT reference: Pr(x) = ((1 + a) p_ref + 1 - a) / 2; z = the fit set's non-members,
    # x dominates z when ratio_z <= ratio_x (gamma = 1)
    a = 0.5
    p_t = np.array([0.9, 0.5, 0.3])
    p_ref = np.array([0.5, 0.5, 0.5])
    sig = {
        "cal_phi": logit(p_t)[:, None],
        "ref_phi": logit(p_ref)[:, None, None],
        "ref_in": np.zeros((3, 1), bool),
        "role": np.array(["member", "nonmember", "nonmember"]),
    }
    att = RMIA(offline=True, a=a).fit(sig)
    px = 0.5 * ((1 + a) * 0.5 + 1 - a)  # 0.625
    np.testing.assert_allclose(att.z_target, [0.5, 0.3])
    np.testing.assert_allclose(att.z_ref, [px, px])  # Pr(z) corrected like Pr(x)
    ratio_x = p_t / px  # [1.44, 0.8, 0.48]
    ratio_z = np.array([0.5, 0.3]) / px  # [0.8, 0.48]
    want = [(ratio_z <= r).mean() for r in ratio_x]
    np.testing.assert_allclose(att.score(sig), want)
    assert want == [1.0, 1.0, 0.5]


def test_logit_confidence_in_row_blocks_equals_one_pass():
    """Rows in blocks (bounded float64 work arrays) give exactly the one-pass figures."""
    from attacks.lira import logit_confidence

    rng = np.random.default_rng(3)
    z = rng.normal(size=(50, 2, 7)).astype(np.float32)
    lab = rng.integers(0, 7, size=(50, 1))
    whole = logit_confidence(z, lab, chunk=50)
    assert np.array_equal(logit_confidence(z, lab, chunk=3), whole)
    assert np.array_equal(logit_confidence(z, None, chunk=4), logit_confidence(z, None, chunk=50))
    p = np.exp(z[0, 0]) / np.exp(z[0, 0]).sum()
    y = lab[0, 0]
    assert whole[0, 0] == pytest.approx(np.log(p[y] / (1 - p[y])), rel=1e-6)
