"""KL divergence and threshold-attack math against hand-computed values."""

from __future__ import annotations

import math

import numpy as np
import pytest

from attacks.epoch_leakage import leakage_metrics
from attacks.metrics import balance, best_threshold, histogram_kl, threshold_metrics, tpr_at_fpr
from attacks.yeom import YeomAttack


def test_kl_hand_computed():
    # bins over [0, 2] with 2 bins: [0, 1), [1, 2]
    p = np.array([0.2, 0.4, 1.5])  # counts (2, 1)
    q = np.array([0.1, 1.2, 1.6, 2.0])  # counts (1, 3)
    a = 0.5
    pp = np.array([2 + a, 1 + a]) / (3 + 2 * a)
    qq = np.array([1 + a, 3 + a]) / (4 + 2 * a)
    expected = float(np.sum(pp * np.log(pp / qq)))
    assert histogram_kl(p, q, bins=2) == pytest.approx(expected, rel=1e-12)
    assert expected == pytest.approx(0.625 * math.log(0.625 / 0.3) + 0.375 * math.log(0.375 / 0.7))


def test_kl_zero_for_identical_and_nan_for_empty():
    x = np.array([0.5, 1.0, 3.0])
    assert histogram_kl(x, x) == pytest.approx(0.0, abs=1e-12)
    assert math.isnan(histogram_kl(np.array([]), x))
    assert histogram_kl(np.zeros(3), np.zeros(4)) == 0.0
    # NaN losses (no true label) are dropped, not propagated
    assert histogram_kl(np.array([0.5, np.nan]), np.array([0.5])) == pytest.approx(0.0, abs=1e-12)


def test_best_threshold_hand_computed():
    scores = np.array([0.1, 0.4, 0.35, 0.8])
    member = np.array([0, 0, 1, 1])
    tau, acc = best_threshold(scores, member)
    # sorted: 0.1(n) 0.35(m) 0.4(n) 0.8(m); best: tau between 0.1 and 0.35 -> 3/4, or 0.4..0.8 -> 3/4
    assert acc == pytest.approx(0.75)
    assert tau == pytest.approx((0.1 + 0.35) / 2)  # ties go to the lowest candidate
    # perfectly separable: accuracy 1 and a threshold between the classes
    tau, acc = best_threshold(np.array([3.0, 1.0, 2.0, 4.0]), np.array([1, 0, 0, 1]))
    assert acc == 1.0 and tau == pytest.approx(2.5)


def test_threshold_metrics_hand_computed():
    scores = np.array([0.9, 0.8, 0.3, 0.7, 0.2, 0.1])
    member = np.array([1, 1, 1, 0, 0, 0])
    with pytest.warns(UserWarning, match="non-members"):
        m = threshold_metrics(scores, member, tau=0.5)
    # predictions: 1 1 0 1 0 0 -> tp 2, fn 1, fp 1, tn 2
    assert m["acc"] == pytest.approx(4 / 6)
    assert m["tpr"] == pytest.approx(2 / 3) and m["fpr"] == pytest.approx(1 / 3)
    assert m["precision"] == pytest.approx(2 / 3)
    assert m["balanced_acc"] == pytest.approx((2 / 3 + 2 / 3) / 2)
    # AUC: pairs (member > non-member) = 0.9>all 3, 0.8>all 3, 0.3>0.2,0.1 -> 8 of 9
    assert m["auc"] == pytest.approx(8 / 9)
    assert tpr_at_fpr(scores, member, 0.0) == pytest.approx(2 / 3)
    assert not m["tpr@1%fpr_reliable"] and m["n_nonmembers"] == 3


def test_balance_subsamples_larger_class():
    member = np.array([1] * 10 + [0] * 4)
    idx = balance(member, seed=0)
    assert len(idx) == 8 and member[idx].sum() == 4
    assert np.array_equal(idx, balance(member, seed=0))


def _signals(member_loss, nonmember_loss, split_m, split_n, set_name):
    n_m, n_n = len(member_loss), len(nonmember_loss)
    return {
        "split": np.array([split_m] * n_m + [split_n] * n_n),
        "set": np.array([set_name] * (n_m + n_n)),
        "role": np.array(["member"] * n_m + ["nonmember"] * n_n),
        "loss_pred": np.concatenate([member_loss, nonmember_loss]).astype(np.float32),
        "loss_true": np.concatenate([member_loss, np.full(n_n, np.nan)]).astype(np.float32),
        "label": np.array([0] * n_m + [-1] * n_n),
        "pred": np.zeros(n_m + n_n, dtype=np.int64),
    }


def test_yeom_threshold_is_fitted_on_the_attack_set_only():
    # attack set: members have loss < 1, non-members > 1 -> loss threshold ~1
    att = _signals(np.array([0.2, 0.5, 0.8]), np.array([1.2, 1.5, 2.0]), "val", "attack", "attack")
    attack = YeomAttack().fit(att)
    assert -attack.score_threshold == pytest.approx(1.0)
    # a shifted evaluation set where all losses are +5: a threshold fitted on it would be ~6;
    # the frozen attack-set threshold calls everything a non-member
    ev = _signals(np.array([5.2, 5.5, 5.8]), np.array([6.2, 6.5, 7.0]), "test", "eval", "eval")
    with pytest.warns(UserWarning):
        m = threshold_metrics(attack.score(ev), (ev["role"] == "member"), attack.score_threshold)
    assert m["acc"] == pytest.approx(0.5) and m["tpr"] == 0.0 and m["auc"] == 1.0


def test_leakage_metrics_end_to_end_on_hand_built_signals():
    train = _signals(np.array([0.01, 0.02]), np.array([]), "train", "", "train")
    att = _signals(np.array([0.2, 0.5, 0.8]), np.array([1.2, 1.5, 2.0]), "val", "attack", "attack")
    ev = _signals(np.array([0.3, 0.4, 1.1]), np.array([0.9, 1.6, 2.2]), "test", "eval", "eval")
    sig = {k: np.concatenate([train[k], att[k], ev[k]]) for k in att}
    sig["pred"][:] = 0
    sig["pred"][sig["split"] == "test"] = [0, 0, 1]  # one wrong test prediction
    m = leakage_metrics(sig, kl_bins=4)
    assert m["leak/train_acc"] == 1.0 and m["leak/test_acc"] == pytest.approx(2 / 3)
    assert m["leak/gap"] == pytest.approx(1 / 3)
    # threshold ~1.0 on the loss: eval members 0.3, 0.4 in; 1.1 out; non-member 0.9 in
    assert m["attack/acc"] == pytest.approx(4 / 6)
    assert m["attack/auc"] == pytest.approx(8 / 9)  # member>non-member pairs: 3 + 3 + 2
    assert m["leak/kl"] == pytest.approx(
        histogram_kl(np.array([0.3, 0.4, 1.1]), np.array([0.9, 1.6, 2.2]), bins=4)
    )


def test_kl_floor_at_n100_and_its_permutation_null():
    """Identical distributions at n = 100 give a KL well above 0 (the small-sample floor); the
    permutation null at the same n sits at the same level, so the excess is ~0, while a real
    difference clears it."""
    from attacks.metrics import kl_permutation_null

    rng = np.random.default_rng(0)
    kl, null = [], []
    for i in range(40):
        a, b = rng.exponential(size=100), rng.exponential(size=100)
        kl.append(histogram_kl(a, b))
        null.append(kl_permutation_null(a, b, seed=i))
    assert 0.07 < np.mean(kl) < 0.2  # the floor: not 0
    assert abs(np.mean(kl) - np.mean(null)) < 0.02  # the null reproduces it
    a, b = rng.exponential(size=100), rng.exponential(size=100) * 3
    assert histogram_kl(a, b) - kl_permutation_null(a, b) > 0.2
    assert kl_permutation_null(a, b, seed=1) == kl_permutation_null(a, b, seed=1)
    assert math.isnan(kl_permutation_null(np.array([]), a))


def test_every_cheap_attack_at_both_levels(make_classifier_signals):
    """All cheap attacks from one signal file: identity level on the attack/eval sets, sample
    level (yeom_true) on ID1-train against held-out ID1 photos, and epsilon for DP runs."""
    from attacks.epoch_leakage import CHEAP_ATTACKS, best_audit_attack

    train = make_classifier_signals(np.linspace(0.01, 0.05, 40), [], "train", seed=3)
    train["split"][:] = "train"
    att = make_classifier_signals(np.linspace(0.3, 1.0, 20), np.linspace(1.0, 3.0, 20), "attack")
    ev = make_classifier_signals(
        np.linspace(0.3, 1.1, 20), np.linspace(1.1, 2.8, 20), "eval", seed=1
    )
    sig = {k: np.concatenate([train[k], att[k], ev[k]]) for k in att}
    m = leakage_metrics(sig, delta=1e-5)
    for stem in ("yeom", "yeom_true", "msp", "entropy", "nn_cosine"):
        assert 0.5 <= m[f"leak/{stem}_auc"] <= 1.0, stem
        assert 0.0 <= m[f"leak/{stem}_adv"] <= 1.0 and f"leak/{stem}_tpr@1%fpr" in m
    assert m["leak/label_only_auc"] > 0.5  # these signals carry boundary distances
    no_distances = {k: v for k, v in sig.items() if k != "boundary_distance"}
    assert "leak/label_only_auc" not in leakage_metrics(no_distances)  # opt-in
    assert m["leak/yeom_auc"] == m["leak/msp_auc"] == m["attack/auc"]
    # sample level: training losses 0.01-0.05 vs held-out 0.3-1.1: perfectly separated
    assert m["leak/yeom_true_auc"] == 1.0 and m["leak/eps_lb"] > 0
    # the DP audit scores every cheap attack at the sample level and names the best
    per = {k[len("leak/eps_lb_") :]: v for k, v in m.items() if k.startswith("leak/eps_lb_")}
    assert set(per) == {"yeom_true", "yeom", "msp", "entropy", "nn_cosine", "label_only"}
    assert m["leak/eps_lb"] == max(per.values())
    assert best_audit_attack(m) == (max(per, key=per.get), m["leak/eps_lb"])
    assert best_audit_attack({"leak/eps_lb": 0.0, "leak/eps_lb_yeom": 0.0}) == (None, 0.0)
    assert "leak/eps_lb" not in leakage_metrics(sig)  # no delta: not a DP run
    only = leakage_metrics(sig, attacks=("entropy",))
    assert "leak/entropy_auc" in only and "leak/yeom_auc" not in only
    assert set(CHEAP_ATTACKS) >= {"yeom", "yeom_true", "msp", "entropy", "nn_cosine", "label_only"}


def test_sample_level_nearest_neighbour_never_scores_a_photo_against_itself():
    """The audit's gallery is the fit split's training photos: a fit member is compared with the
    others (leave one out), so its own copy cannot give it cosine 1; eval rows see the whole
    gallery, which holds none of them."""
    from attacks.epoch_leakage import _loo_nn_cosine

    rng = np.random.default_rng(0)
    att = {"embedding": rng.normal(size=(12, 16)), "role": np.array(["member", "nonmember"] * 6)}
    ev = {"embedding": rng.normal(size=(5, 16)), "role": np.array(["member"] * 5)}
    fit, score = _loo_nn_cosine(att, ev)
    assert fit.shape == (12,) and score.shape == (5,)
    assert fit.max() < 0.99 and score.max() < 0.99  # random 16-d vectors: nothing near 1
    ev_copy = {"embedding": att["embedding"][:1], "role": np.array(["member"])}
    assert _loo_nn_cosine(att, ev_copy)[1][0] == pytest.approx(1.0, abs=1e-6)  # a gallery photo
