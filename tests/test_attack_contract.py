"""The attack protocol, run over every registered attack (registering an attack registers its
test): its declarations, construction for a run, fit on attack-set rows, scores of the right shape that rank
members above non-members on separable signals, a frozen threshold, and no refit on scoring."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from attacks.base import Attack
from attacks.metrics import auc
from attacks.registry import LEVELS, STEP_KINDS, available, entry, get, register
from attacks.signals import membership

#: quicker settings for the attacks that train a model (the contract holds for any settings)
QUICK = {
    "salem": {"epochs": 100},
    "det_xgb": {"n_estimators": 30},
    "det_canvas": {"model": "shallow", "canvas_size": 32, "epochs": 4, "lr": 1e-3, "device": "cpu"},
}


#: sample-level attacks: every scored row carries its true label (held-out photos of known
#: individuals as non-members), so the fixture's non-members get one
SAMPLE_LEVEL = {"yeom_true"}


def with_reference_rows(run: dict, n: int = 30) -> dict:
    """``run`` plus ``n`` photos of 5 unrelated whales (``split == "reference"``, random
    embeddings): copies of its first rows, for attacks calibrated on a reference population."""
    extra = {k: v[:n].copy() for k, v in run.items()}
    extra["split"] = np.full(n, "reference")
    extra["identity"] = np.array([f"ref{i % 5}" for i in range(n)])
    extra["embedding"] = (
        np.random.default_rng(7).normal(size=extra["embedding"].shape).astype(np.float32)
    )
    out = {k: np.concatenate([v, extra[k]]) for k, v in run.items()}
    out["index"] = np.arange(len(out["index"]))
    return out


#: attacks whose run needs rows the fixture lacks
RUN_ROWS = {"reference_calibrated": with_reference_rows}


def with_true_labels(signals: dict) -> dict:
    out = dict(signals)
    out["label"] = np.zeros_like(signals["label"])
    out["loss_true"] = signals["loss_pred"].copy()
    return out


def data_for(kind: str, separable_run, make_detector_signals, name: str = ""):
    if name in SAMPLE_LEVEL:
        return tuple(with_true_labels(s) for s in separable_run)
    if kind == "classifier":
        return separable_run
    shadow = make_detector_signals(60, 8, 0, "shadow")
    target = make_detector_signals(40, 8, 1, "target")
    return target, shadow, target


@pytest.mark.parametrize("name", available())
def test_attack_contract(name, separable_run, make_detector_signals):
    cls = get(name)
    assert cls.name == name and cls.kind in ("classifier", "detector")
    run, fit_rows, eval_rows = data_for(cls.kind, separable_run, make_detector_signals, name)
    run = RUN_ROWS.get(name, dict)(run)
    torch.manual_seed(0)
    attack = cls.for_run(run, **QUICK.get(name, {}))
    assert set(attack.requires) <= set(fit_rows), f"{name} reads fields the signals lack"
    assert attack.fit(fit_rows) is attack
    assert isinstance(attack, Attack)
    tau = attack.score_threshold
    assert isinstance(tau, float) and np.isfinite(tau)
    s = attack.score(eval_rows)
    assert s.shape == (len(eval_rows["role"]),) and np.issubdtype(s.dtype, np.floating)
    assert np.isfinite(s).all()
    assert auc(s, membership(eval_rows)) >= 0.9, f"{name} does not rank members higher"
    np.testing.assert_array_equal(attack.score(eval_rows), s)  # scoring never refits
    assert attack.score_threshold == tau


@pytest.mark.parametrize("name", available())
def test_attack_declarations(name):
    """Every entry's declarations are usable: aliases reach it, its settings block builds with
    ``enabled``, its monitor level, discriminate name and steps are known ones."""
    e = entry(name)
    assert all(get(n) is e.cls for n in e.names)
    if e.settings is not None:
        assert isinstance(e.settings().enabled, bool)
    assert e.cheap in (None, *LEVELS) and set(e.steps) <= set(STEP_KINDS)
    assert e.discriminate in (None, *e.names)
    if e.cheap or e.discriminate or e.steps:
        assert e.cls.kind == "classifier", f"{name}: classifier-run declarations on a detector"


def test_unfitted_threshold_attack_refuses_to_give_a_threshold():
    with pytest.raises(RuntimeError, match="yeom"):
        _ = get("yeom")().score_threshold


def test_yeom_true_uses_the_true_label_and_refuses_rows_without_one(separable):
    """Sample level: the true-label loss ranks a confidently mislabelled photo as a non-member,
    where the predicted-label loss (= maximum softmax) calls it a member."""
    sig = with_true_labels(separable)
    sig["loss_true"][0] = 5.0  # a member photo predicted confidently, but as the wrong class
    yt, yp = get("yeom_true")(), get("yeom")()
    assert yt.score(sig)[0] == -5.0 and yp.score(sig)[0] == pytest.approx(-0.01)
    msp = get("baseline_msp")()
    np.testing.assert_array_equal(  # yeom on loss_pred and max softmax: the same ranking
        np.argsort(yp.score(separable)), np.argsort(msp.score(separable))
    )
    with pytest.raises(ValueError, match="yeom_true: 20 of 40 rows have no true label"):
        yt.score(separable)


def test_registry_refuses_duplicate_names():
    with pytest.raises(ValueError, match="already registered"):
        register("yeom")(type("Again", (), {}))


def test_registry_knows_both_pipelines():
    assert {"yeom", "salem", "label_only", "baseline_msp", "baseline_nn_cosine"} <= set(
        available("classifier")
    )
    assert set(available("detector")) == {"det_xgb", "det_canvas"}
    with pytest.raises(KeyError, match="unknown attack"):
        get("no_such_attack")


def test_subset_refuses_detector_signals(make_detector_signals, separable):
    from attacks.signals import subset

    assert len(subset(separable, "attack")["role"]) == len(separable["role"])
    with pytest.raises(ValueError, match="detector signals"):
        subset(make_detector_signals(10, 4, 0, "shadow"), "attack")
