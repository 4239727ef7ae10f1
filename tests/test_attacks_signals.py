"""Attacks over hand-built signal arrays with known answers; metrics against sklearn; no threshold
is ever fitted on the evaluation set (the ensemble's rules: tests/test_ensemble.py)."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from sklearn.metrics import (
    accuracy_score,
    balanced_accuracy_score,
    precision_score,
    recall_score,
    roc_auc_score,
    roc_curve,
)

from attacks.baselines import nn_cosine_scores
from attacks.metrics import auc, roc, threshold_metrics, tpr_at_fpr
from attacks.open_set import open_set_metrics
from attacks.registry import available, get


def test_registry_lists_paper_attacks():
    assert {"yeom", "salem", "label_only"} <= set(available())
    with pytest.raises(ValueError, match="already registered"):
        from attacks.registry import register

        register("yeom")(type("Dup", (), {}))


def test_yeom_separable_auc1_and_expected_threshold(separable):
    a = get("yeom")().fit(separable)
    # best threshold on -loss lies between the worst member (-0.2) and best non-member (-1.0)
    assert a.score_threshold == pytest.approx((-0.2 + -1.0) / 2)
    m = threshold_metrics(a.score(separable), separable["role"] == "member", a.score_threshold)
    assert m["auc"] == 1.0 and m["acc"] == 1.0 and m["fpr"] == 0.0


def test_label_only_separable_threshold_between_distances(separable):
    a = get("label_only")().fit(separable)
    d = separable["boundary_distance"]
    lo, hi = d[20:].max(), d[:20].min()
    assert a.score_threshold == pytest.approx((lo + hi) / 2)
    assert auc(a.score(separable), separable["role"] == "member") == 1.0


def test_salem_separable_auc1(separable):
    a = get("salem")(epochs=200, seed=0).fit(separable)
    s = a.score(separable)
    y = separable["role"] == "member"
    assert auc(s, y) == 1.0
    assert ((s >= a.score_threshold) == y).mean() == 1.0


def test_salem_features_are_sorted_topk_posteriors():
    from attacks.salem import topk_posteriors

    sig = {"logits": np.log(np.array([[0.1, 0.6, 0.3], [0.2, 0.2, 0.6]], dtype=np.float32))}
    f = topk_posteriors(sig, 4)
    np.testing.assert_allclose(f, [[0.6, 0.3, 0.1, 0.0], [0.6, 0.2, 0.2, 0.0]], atol=1e-6)


def test_baselines_msp_and_nn_cosine(separable):
    gal = np.array([[1.0, 0.0], [0.0, 1.0]])
    q = np.array([[2.0, 0.0], [1.0, 1.0], [-1.0, 0.0]])
    np.testing.assert_allclose(nn_cosine_scores(gal, q), [1.0, np.sqrt(0.5), 0.0], atol=1e-9)
    msp = get("baseline_msp")().fit(separable)
    assert auc(msp.score(separable), separable["role"] == "member") == 1.0


@pytest.mark.parametrize("name", ["yeom", "salem", "label_only", "msp"])
def test_threshold_never_fitted_on_eval_set(name, make_classifier_signals):
    """Plant an evaluation set shifted far beyond the attack set: a threshold fitted on it would
    separate it perfectly; the frozen attack-set threshold calls every eval sample a non-member
    (members' losses moved above tau), so accuracy is exactly 0.5 and the threshold unchanged."""
    att = make_classifier_signals(np.full(10, 0.05) + np.linspace(0, 0.01, 10), np.full(10, 1.0))
    ev = make_classifier_signals(
        np.full(10, 4.0), np.full(10, 6.0) + np.linspace(0, 0.1, 10), "eval"
    )
    a = get("baseline_msp")() if name == "msp" else get(name)()
    a.fit(att)
    tau = a.score_threshold
    s = a.score(ev)
    y = ev["role"] == "member"
    assert a.score_threshold == tau
    assert auc(s, y) == 1.0  # the eval set itself is separable ...
    assert ((s >= tau) == y).mean() == 0.5  # ... but the frozen threshold is the attack set's


def test_metrics_against_sklearn_on_random_scores():
    rng = np.random.default_rng(3)
    for _ in range(5):
        y = rng.integers(0, 2, 300)
        s = rng.normal(size=300) + 0.7 * y
        s[:20] = np.round(s[:20], 1)  # some ties
        assert auc(s, y) == pytest.approx(roc_auc_score(y, s), abs=1e-6)
        f, t = roc(s, y)
        fs, ts, _ = roc_curve(y, s, drop_intermediate=False)
        ours = np.array(sorted(zip(f, t)))
        theirs = np.array(sorted(zip(fs, ts)))
        np.testing.assert_allclose(ours, theirs, atol=1e-6)
        tau = float(np.median(s))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            m = threshold_metrics(s, y, tau)
        pred = s >= tau
        assert m["acc"] == pytest.approx(accuracy_score(y, pred))
        assert m["balanced_acc"] == pytest.approx(balanced_accuracy_score(y, pred))
        assert m["precision"] == pytest.approx(precision_score(y, pred))
        assert m["tpr"] == pytest.approx(recall_score(y, pred))  # one column: tpr = recall
        assert "recall" not in m
        assert m["fpr"] == pytest.approx(((pred == 1) & (y == 0)).sum() / (y == 0).sum())
        # tpr@fpr: the best sklearn ROC point with fpr <= 1%
        ok = fs <= 0.01
        assert tpr_at_fpr(s, y, 0.01) == pytest.approx(ts[ok].max())


def test_low_fpr_reliability_flag_and_warning():
    y = np.array([1] * 50 + [0] * 50)
    s = np.arange(100.0)
    with pytest.warns(UserWarning, match="attack demo: .*50 non-members"):
        m = threshold_metrics(s, y, 50.0, name="demo")
    assert m["tpr@1%fpr_reliable"] is False and m["n_nonmembers"] == 50


def test_min_negatives_is_honoured():
    """TPR at 1% FPR on 100 non-members rests on one false positive: not reliable by default;
    with 1,000 non-members ten false positives stand behind it; ``min_negatives`` sets the bar."""
    rng = np.random.default_rng(0)

    def metrics(n_neg, **kw):
        y = np.array([1] * 200 + [0] * n_neg)
        s = rng.normal(size=len(y)) + y
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            m = threshold_metrics(s, y, 0.5, **kw)
        return m, [str(w.message) for w in caught]

    m, warned = metrics(100)
    assert m["tpr@1%fpr_n_fp"] == 1 and m["tpr@1%fpr_reliable"] is False
    assert len(warned) == 1 and "1% FPR" in warned[0] and "0.1% FPR" in warned[0]
    m, _ = metrics(100, min_negatives=1)
    assert m["tpr@1%fpr_reliable"] is True and m["tpr@0.1%fpr_reliable"] is False
    m, warned = metrics(1000)
    assert m["tpr@1%fpr_n_fp"] == 10 and m["tpr@1%fpr_reliable"] is True
    assert m["tpr@0.1%fpr_reliable"] is False and "TPR at 0.1% FPR" in warned[0]
    m, warned = metrics(1000, min_negatives=11)
    assert m["tpr@1%fpr_reliable"] is False


def test_advantage_is_max_tpr_minus_fpr():
    from attacks.metrics import advantage

    # ROC points: (0, 0.5) after 0.9; (0.5, 0.5); (0.5, 1); (1, 1) -> max TPR - FPR = 0.5
    s = np.array([0.9, 0.6, 0.4, 0.1])
    y = np.array([1, 0, 1, 0])
    assert advantage(s, y) == pytest.approx(0.5)
    assert advantage(np.array([2.0, 1.0]), np.array([1, 0])) == pytest.approx(1.0)
    assert advantage(np.array([1.0, 2.0]), np.array([1, 0])) == 0.0
    with pytest.warns(UserWarning, match="2 non-members"):
        assert threshold_metrics(s, y, 0.5)["advantage"] == pytest.approx(0.5)


def test_open_set_metrics_by_hand():
    # two known individuals (A: 2 photos, B: 1), two new (X: 2, Y: 2)
    ident = np.array(["A", "A", "B", "X", "X", "Y", "Y"])
    y = np.array([1, 1, 1, 0, 0, 0, 0])
    s = np.array([0.9, 0.2, 0.8, 0.7, 0.1, 0.2, 0.3])
    label = np.array([0, 0, 1, -1, -1, -1, -1])
    pred = np.array([0, 0, 0, 0, 1, 1, 0])  # B's photo gets the wrong identity
    m = open_set_metrics(s, y, 0.5, identity=ident, label=label, pred=pred)
    assert m["baks_detect"] == pytest.approx((0.5 + 1.0) / 2)
    assert m["baks"] == pytest.approx((0.5 + 0.0) / 2)
    assert m["baus"] == pytest.approx((0.5 + 1.0) / 2)
    assert m["gmean"] == pytest.approx(np.sqrt(0.25 * 0.75))
    assert m["auroc_new"] == pytest.approx(roc_auc_score(1 - y, -s))


def test_extraction_takes_logits_and_embedding_from_one_pass():
    import torch
    from torch.utils.data import DataLoader, TensorDataset

    from lightning_modules.classifier import ImageClassifier
    from lightning_modules.extraction import extract_arrays

    torch.manual_seed(0)
    model = ImageClassifier(num_classes=4, arch="resnet18", dropout_defense=True).eval()
    x, y = torch.rand(6, 3, 32, 32), torch.tensor([0, 1, 2, 3, -1, 0])
    loader = DataLoader(TensorDataset(x, y, torch.arange(6)), batch_size=4)
    calls = []
    model.net.features.register_forward_hook(lambda *a: calls.append(1))
    got = extract_arrays(model, loader, "cpu", embed=model.embed)
    assert len(calls) == 2  # one trunk pass per batch, not two
    with torch.no_grad():
        assert np.allclose(got["logits"], model(x).numpy(), atol=1e-5)
        assert np.allclose(got["embedding"], model.embed(x).numpy(), atol=1e-5)
