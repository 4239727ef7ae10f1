"""Open-set metrics (attacks/open_set.py) against hand-computed values and their definitions:
BAKS, BAUS and AUROC-new as wildlife-datasets defines them, the operating point, Platt scaling,
encounter aggregation, re-ID top-k and the Where's Whale-do mAP."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import average_precision_score, roc_auc_score

from attacks import open_set as os_


def test_auroc_matches_sklearn_with_ties():
    rng = np.random.default_rng(0)
    s = rng.integers(0, 5, 60).astype(float)  # many ties
    y = rng.integers(0, 2, 60)
    assert os_.auroc(s, y) == pytest.approx(roc_auc_score(y, s))
    assert os_.auroc(s, np.ones(60)) == 0.5


def test_baks_baus_auroc_new_by_hand():
    # known A (2 photos), B (1); new X (2), Y (1); "new" is the new-individual label
    y_true = ["A", "A", "B", "X", "X", "Y"]
    y_pred = ["A", "new", "A", "new", "B", "new"]
    assert os_.baks(y_true, y_pred, {"X", "Y"}) == pytest.approx((1 / 2 + 0) / 2)
    assert os_.baus(y_true, y_pred, {"X", "Y"}, "new") == pytest.approx((1 / 2 + 1) / 2)
    # new rows score -0.5, -0.1 against known -0.9, -0.3: 3 of 4 pairs ordered right
    assert os_.auroc_new(["A", "B", "new", "new"], [0.9, 0.3, 0.5, 0.1], "new") == 0.75
    assert np.isnan(os_.baks(["X"], ["new"], {"X"}))


def test_against_wildlife_datasets_when_installed():
    wd = pytest.importorskip("wildlife_datasets.metrics")
    rng = np.random.default_rng(1)
    ids = np.array(["a", "b", "c", "x", "y"])
    y_true = ids[rng.integers(0, 5, 80)]
    new = ["x", "y"]
    y_true_new = np.where(np.isin(y_true, new), "new", y_true)
    y_pred = np.array(["a", "b", "c", "new"])[rng.integers(0, 4, 80)]
    score = rng.normal(size=80)
    assert os_.baks(y_true, y_pred, new) == pytest.approx(wd.BAKS(y_true, y_pred, new))
    assert os_.baus(y_true, y_pred, new, "new") == pytest.approx(
        wd.BAUS(y_true, y_pred, new, "new")
    )
    assert os_.auroc_new(y_true_new, score, "new") == pytest.approx(
        wd.auc_roc_new_class(list(y_true_new), list(score), "new")
    )


def test_open_set_metrics_agree_with_the_label_form():
    ident = np.array(["A", "A", "B", "X", "X", "Y"])
    y = np.array([1, 1, 1, 0, 0, 0])
    s = np.array([0.9, 0.2, 0.8, 0.1, 0.7, 0.3])
    label = np.array([0, 0, 1, -1, -1, -1])
    pred = np.array([0, 0, 0, 1, 1, 0])
    m = os_.open_set_metrics(s, y, 0.5, identity=ident, label=label, pred=pred)
    names = np.array(["A", "B"])
    decided = np.where(s >= 0.5, names[pred], "new")
    assert m["baks"] == pytest.approx(os_.baks(ident, decided, {"X", "Y"}))
    assert m["baus"] == pytest.approx(os_.baus(ident, decided, {"X", "Y"}, "new"))
    assert m["auroc_new"] == pytest.approx(os_.auroc_new(np.where(y, ident, "new"), s, "new"))


def test_threshold_at_fpr_and_rates():
    neg = np.linspace(0.1, 1.0, 10)
    pos = np.array([0.85, 0.5, 0.95])
    s = np.concatenate([pos, neg])
    y = np.array([1, 1, 1] + [0] * 10)
    tau = os_.threshold_at_fpr(s, y, 0.2)  # two false positives allowed: 1.0 and 0.9
    assert 0.8 < tau <= 0.8 + 1e-12
    assert os_.rates(s, y, tau) == (pytest.approx(2 / 3), pytest.approx(0.2))
    tau0 = os_.threshold_at_fpr(s, y, 0.05)  # none allowed: just above the top new score
    assert os_.rates(s, y, tau0) == (0.0, 0.0) and tau0 > 1.0
    assert os_.rates(s, y, os_.threshold_at_fpr(s, y, 1.0)) == (1.0, 1.0)
    with pytest.raises(ValueError, match="non-members"):
        os_.threshold_at_fpr(pos, np.ones(3), 0.05)


def test_platt_scaling_is_the_logistic_fit_with_platt_targets():
    from scipy.optimize import minimize

    rng = np.random.default_rng(0)
    y = np.r_[np.ones(40), np.zeros(60)]
    s = rng.normal(y * 1.5, 1.0) * 3 + 10  # an arbitrary scale and offset
    cal = os_.fit_platt(s, y)
    t = np.where(y == 1, 41 / 42, 1 / 62)
    wt = np.where(y == 1, 100 / 80, 100 / 120)  # each class weighs half

    def nll(w):
        p = np.clip(1 / (1 + np.exp(-(w[0] * s + w[1]))), 1e-15, 1 - 1e-15)
        return -(wt * (t * np.log(p) + (1 - t) * np.log(1 - p))).sum()

    ref = minimize(nll, [0.0, 0.0], method="Nelder-Mead", options={"xatol": 1e-9, "fatol": 1e-12})
    assert nll([cal.a, cal.b]) <= ref.fun + 1e-6
    p = cal(s)
    assert cal.a > 0 and np.all((p > 0) & (p < 1))
    assert os_.auroc(p, y) == pytest.approx(os_.auroc(s, y))  # ranking kept
    with pytest.raises(ValueError, match="members and non-members"):
        os_.fit_platt(s, np.ones(100))
    sep = os_.fit_platt(np.r_[np.ones(5), np.zeros(5)], np.r_[np.ones(5), np.zeros(5)])
    assert np.isfinite(sep.a) and sep(np.array([1.0]))[0] == pytest.approx(6 / 7, abs=1e-3)


def test_aggregate_rules_by_hand():
    names, m = os_.aggregate(np.array([1.0, 3.0, 10.0]), ["a", "a", "b"], "mean")
    assert list(names) == ["a", "b"] and list(m) == [2.0, 10.0]
    assert list(os_.aggregate(np.array([1.0, 3.0, 10.0]), ["a", "a", "b"], "max")[1]) == [3, 10]
    # probabilities (N, C): the consensus is the column mean
    _, p = os_.aggregate(np.array([[0.6, 0.4], [0.2, 0.8]]), ["e", "e"], "mean")
    assert p[0] == pytest.approx([0.4, 0.6])
    # embeddings: each photo counts once whatever its norm
    _, e = os_.aggregate(np.array([[2.0, 0.0], [0.0, 1.0]]), ["e", "e"], "mean_embedding")
    assert e[0] == pytest.approx([2**-0.5, 2**-0.5])
    with pytest.raises(ValueError, match="choose one of"):
        os_.aggregate(np.zeros(2), ["a", "b"], "median")
    assert list(os_.group_labels(["w1", "w1", "w2"], ["e1", "e1", "e2"])[1]) == ["w1", "w2"]
    with pytest.raises(ValueError, match="mixes"):
        os_.group_labels(["w1", "w2"], ["e1", "e1"])


def test_topk_and_reid_accuracy_by_hand():
    cs = np.array(
        [
            [0.1, 0.5, 0.2, 0.2],  # label 2: rank 2 (tie with 3 goes to the lower index)
            [0.7, 0.1, 0.1, 0.1],  # label 0: rank 1
            [0.1, 0.2, 0.3, 0.4],  # label 0: rank 4
            [0.9, 0.0, 0.0, 0.1],  # new individual: not counted
        ]
    )
    idx, val = os_.topk(cs, 2)
    assert idx.tolist() == [[1, 2], [0, 1], [3, 2], [0, 3]] and val[0].tolist() == [0.5, 0.2]
    assert os_.topk(cs, 9)[0].shape == (4, 4)
    m = os_.reid_topk(cs, np.array([2, 0, 0, -1]), ks=(1, 2, 5))
    assert m == {"reid_top1": pytest.approx(1 / 3), "reid_top2": 2 / 3, "reid_top5": 1.0}


def test_class_similarity_is_the_nearest_gallery_photo_per_class():
    gallery = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    sim = os_.class_similarity(np.array([[1.0, 0.0]]), gallery, np.array([0, 1, 1]), 3)
    assert sim[0, 0] == pytest.approx(1.0) and sim[0, 1] == pytest.approx(2**-0.5)
    assert sim[0, 2] == -np.inf


def test_whaledo_map_by_hand_and_against_the_challenge_formula():
    gid = np.array(["B", "A", "C", "A"])
    sim = np.array([[0.9, 0.8, 0.1, 0.5]])
    # ranked B, A, A, C: hits at ranks 2 and 3 -> (1/2 + 2/3) / 2
    assert os_.whaledo_map(sim, ["A"], gid) == pytest.approx(7 / 12)
    assert os_.whaledo_map(sim, ["A"], gid, limit=2) == pytest.approx(0.5 / 2)
    assert os_.whaledo_map(np.vstack([sim, sim]), ["A", "Z"], gid) == pytest.approx(7 / 12)
    assert np.isnan(os_.whaledo_map(sim, ["Z"], gid))
    # the challenge: sklearn AP over the top `limit`, times hits / min(matches, limit)
    rng = np.random.default_rng(3)
    g = rng.integers(0, 6, 40).astype(str)
    q = rng.integers(0, 7, 12).astype(str)
    s = rng.random((12, 40))
    ref = []
    for i in range(12):
        top = np.argsort(-s[i])[:20]
        act = (g[top] == q[i]).astype(float)
        n_rel = (g == q[i]).sum()
        if n_rel == 0:
            continue
        ap = average_precision_score(act, s[i, top]) if act.sum() else 0.0
        ref.append(ap * act.sum() / min(n_rel, 20))
    assert os_.whaledo_map(s, q, g) == pytest.approx(np.mean(ref))


# ---- the hand-written pieces against scikit-learn ---------------------------------------------
def test_auroc_equals_sklearn_roc_auc_score_ties_included():
    """Kept hand-written (see :func:`attacks.open_set.auroc`), and it gives sklearn's numbers."""
    from sklearn.metrics import roc_auc_score

    rng = np.random.default_rng(1)
    for n, levels in ((7, 3), (50, 5), (300, 1000)):  # few levels: many ties
        s = rng.integers(0, levels, n).astype(float)
        y = rng.integers(0, 2, n)
        y[:2] = [0, 1]
        assert os_.auroc(s, y) == pytest.approx(roc_auc_score(y, s), abs=1e-12)
    assert os_.auroc(np.array([1.0, 2.0]), np.array([1, 1])) == 0.5  # sklearn raises here


def test_platt_differs_from_a_plain_sklearn_logistic_fit_but_not_from_its_weighted_form():
    """``LogisticRegression`` takes hard labels: on separable scores its unpenalised fit runs
    off to a huge slope (p of 1.0), where Platt's smoothed targets keep p = (n+ + 1)/(n+ + 2).
    Given Platt's targets as two weighted copies of each row it reproduces the fit, so the
    hand-written one is kept for start-up time only (see :func:`attacks.open_set.fit_platt`)."""
    import warnings

    from sklearn.linear_model import LogisticRegression

    s = np.r_[np.ones(5), np.zeros(5)]
    y = s.astype(int)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # lbfgs does not converge: the slope has no optimum
        plain = LogisticRegression(C=np.inf, max_iter=1000).fit(s[:, None], y)
    assert plain.predict_proba([[1.0]])[0, 1] > 0.99
    assert os_.fit_platt(s, y)(np.array([1.0]))[0] == pytest.approx(6 / 7, abs=1e-3)

    rng = np.random.default_rng(0)
    y = np.r_[np.ones(40), np.zeros(60)].astype(int)
    s = rng.normal(y * 1.5, 1.0) * 3 + 10
    cal = os_.fit_platt(s, y)
    t = np.where(y == 1, 41 / 42, 1 / 62)
    w = np.where(y == 1, 100 / 80, 100 / 120)
    x = ((s - s.mean()) / s.std())[:, None]
    twice = LogisticRegression(C=np.inf, tol=1e-12, max_iter=10000).fit(
        np.r_[x, x], np.r_[np.ones(100), np.zeros(100)], sample_weight=np.r_[w * t, w * (1 - t)]
    )
    np.testing.assert_allclose(twice.predict_proba(x)[:, 1], cal(s), atol=1e-6)
