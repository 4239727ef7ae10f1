"""attacks.known_new by hand: one fit and one decision on planted signal arrays (no run folder,
no model). Eight known whales (two training photos, two attack-set photos, two evaluation photos
each, one encounter per set) and eight new whales in each of the attack and evaluation sets; the
attack's score is planted (the ``cosine`` scale is the identity, so the fitted scale is the
planted score)."""

from __future__ import annotations

import numpy as np
import pytest

from attacks.known_new import KnownNew, Scorer, encounter_rows, feature
from attacks.known_new_levels import VoteLevel, separable

N_KNOWN = 8


class Planted:
    """An attack whose score is the ``score`` column of the signals."""

    def score(self, sig: dict) -> np.ndarray:
        return np.asarray(sig["score"], dtype=np.float64)


def planted(known: np.ndarray, new: np.ndarray) -> tuple[dict, np.ndarray]:
    """``(signals, encounters)``: per set (attack, eval) known whale ``i`` has two photos scored
    ``known[i]`` and new whale ``i`` two photos scored ``new[i]``; known whale ``i`` also has two
    training photos with embedding ``e_i`` (the gallery of class ``i``)."""
    rows = []  # (set, identity, label, score, embedding class)
    for i in range(N_KNOWN):
        rows += [("train", f"k{i}", i, 0.0, i)] * 2
    for set_name in ("attack", "eval"):
        for i in range(N_KNOWN):
            rows += [(set_name, f"k{i}", i, float(known[i]), i)] * 2
        for i in range(len(new)):
            rows += [(set_name, f"{set_name}-n{i}", -1, float(new[i]), i % N_KNOWN)] * 2
    sets, ident, label, score, cls = (np.array(c) for c in zip(*rows))
    sig = {
        "set": sets,
        "split": np.where(sets == "train", "train", "test"),
        "role": np.where(label >= 0, "member", "nonmember"),
        "identity": ident,
        "label": label,
        "score": score,
        "embedding": np.eye(N_KNOWN)[cls],
        "logits": np.zeros((len(rows), N_KNOWN)),
        "index": np.arange(len(rows)),
    }
    return sig, np.array([f"{s}/{i}" for s, i in zip(sets, ident)])


def queries(scores: list[float], enc: list[str]) -> tuple[dict, np.ndarray]:
    """New photos with these scores, in these encounters, embedded like catalog whale 0."""
    n = len(scores)
    sig = {"score": np.array(scores), "embedding": np.eye(N_KNOWN)[[0] * n]}
    return sig | {"logits": np.zeros((n, N_KNOWN))}, np.array(enc)


SPREAD = np.linspace(0.0, 0.14, N_KNOWN)
SEPARABLE = (0.7 + SPREAD, 0.3 - SPREAD)  # known 0.70-0.84, new 0.16-0.30: mirror images


def fit(known, new, **kw) -> KnownNew:
    sig, enc = planted(known, new)
    return KnownNew.fit(Planted(), sig, enc, name="cosine", n_classes=N_KNOWN, n_boot=200, **kw)


def test_separable_scores_give_a_threshold_above_every_new_whale_and_clean_decisions():
    known_new = fit(*SEPARABLE)
    photo = known_new.levels["photo"]
    # mirrored classes weighted equally: the Platt map is 0.5 at the midpoint 0.5
    assert photo.p_known(np.array([0.5]))[0] == pytest.approx(0.5, abs=1e-6)
    # FPR 0.05 on 16 new photos allows no false positive: just above the best new photo
    assert photo.tau == np.nextafter(photo.p_known(np.array([0.3]))[0], np.inf)
    report = photo.report
    assert report["attack_set"]["tpr"] == 1.0 and report["attack_set"]["fpr"] == 0.0
    assert report["eval"]["tpr"] == [1.0, 1.0, 1.0] and report["eval"]["fpr"] == [0.0, 0.0, 0.0]
    assert report["eval"]["auroc"] == [1.0, 1.0, 1.0] and photo.separable
    assert report["attack_set"]["individuals_known"] == 8 and report["eval"]["rows_new"] == 16
    enc_report = known_new.levels["encounter"].report
    assert enc_report["eval"]["rows_known"] == 8 and enc_report["separable"]

    sig, enc = queries([0.9, 0.85, 0.1, 0.15, 0.9, 0.1], ["q1", "q1", "q2", "q2", "q3", "q3"])
    out = known_new.decide(sig, enc)
    assert list(out["dec"]) == ["known", "known", "new", "new", "known", "new"]
    assert out["enc_names"] == ["q1", "q2", "q3"]
    # q3: mean score 0.5, so p_known 0.5, above the encounter threshold (new whales <= 0.3)
    assert out["enc_p"][2] == pytest.approx(0.5, abs=1e-6)
    assert list(out["enc_dec"]) == ["known", "new", "known"]
    np.testing.assert_allclose(out["nearest"], 1.0)
    assert not out["ood"].any()
    assert out["enc_cs"].shape == (3, N_KNOWN)  # softmax of zero logits: 1/8 each
    np.testing.assert_allclose(out["enc_cs"], 1 / N_KNOWN)


def test_vote_calls_an_encounter_known_only_with_more_than_half_of_its_photos():
    known_new = fit(*SEPARABLE, vote=True)
    level = known_new.levels["encounter"]
    assert isinstance(level, VoteLevel) and level.tau == np.nextafter(0.5, 1.0)
    assert level.report["chosen_by"] == "the majority of its photos' decisions"
    sig, enc = queries([0.9, 0.9, 0.1, 0.9, 0.1, 0.1, 0.9], ["a", "a", "a", "b", "b", "c", "c"])
    out = known_new.decide(sig, enc)
    np.testing.assert_allclose(out["enc_p"], [2 / 3, 0.5, 0.5])
    assert list(out["enc_dec"]) == ["known", "new", "new"]


def test_a_given_threshold_replaces_the_fpr_choice():
    known_new = fit(*SEPARABLE, threshold=0.5)
    photo = known_new.levels["photo"]
    assert photo.tau == 0.5 and photo.report["chosen_by"] == "--threshold"
    out = known_new.decide(*queries([0.49, 0.51], ["x", "y"]))
    assert list(out["dec"]) == ["new", "known"]


def test_overlapping_scores_cannot_separate_and_stay_undecided_unless_forced():
    """Known whales score a notch above new ones (0.20-0.80 against 0.15-0.75): 36 of the 64
    (known, new) pairs rank right, AUROC 0.5625, and with 8 whales per class its interval
    reaches chance."""
    step = np.linspace(0.0, 0.6, N_KNOWN)
    known_new = fit(0.2 + step, 0.15 + step)
    for level in known_new.levels.values():
        assert not level.separable and "reaches chance 0.5" in level.report["why_not"]
        assert level.report["eval"]["auroc"][0] == pytest.approx(36 / 64)
    sig, enc = queries([0.95, 0.05], ["x", "y"])
    out = known_new.decide(sig, enc)
    assert set(out["dec"]) == {"undecided"} and set(out["enc_dec"]) == {"undecided"}
    forced = known_new.decide(sig, enc, force=True)
    assert list(forced["dec"]) == ["known", "new"] and list(forced["enc_dec"]) == ["known", "new"]


def test_reversed_scores_keep_an_increasing_near_flat_map():
    """New whales scoring above known ones must not flip the rule: p_known stays about 0.5."""
    known_new = fit(*SEPARABLE[::-1])
    photo = known_new.levels["photo"]
    assert photo.platt.a > 0 and photo.platt.b == 0.0
    np.testing.assert_allclose(photo.p_known(np.array([0.0, 1.0])), 0.5, atol=1e-5)
    assert not photo.separable


def test_photos_far_from_every_training_photo_are_out_of_distribution():
    known_new = fit(*SEPARABLE)
    sig, enc = queries([0.9, 0.9], ["x", "x"])
    sig["embedding"] = np.array([np.eye(N_KNOWN)[0], -np.eye(N_KNOWN)[0]])  # nearest: 1 and 0
    out = known_new.decide(sig, enc, floor=0.5)
    assert list(out["ood"]) == [False, True] and list(out["dec"]) == ["known", "undecided"]
    held = known_new.scorer.held_out_nearest(planted(*SEPARABLE)[0])
    assert len(held) == 64 and np.allclose(held, 1.0)  # attack + eval photos, not train


def test_a_set_without_new_whales_is_refused():
    sig, enc = planted(*SEPARABLE)
    keep = ~((sig["set"] == "eval") & (sig["role"] == "nonmember"))
    sig = {k: v[keep] for k, v in sig.items()}
    with pytest.raises(ValueError, match="photo level: .* need known and new whales"):
        KnownNew.fit(Planted(), sig, enc[keep], name="cosine", n_classes=N_KNOWN, n_boot=20)


def test_cosine_scorer_ranks_candidates_by_the_nearest_training_photo_of_each_class():
    sig, enc = planted(*SEPARABLE)
    scorer = Scorer.from_signals(Planted(), "cosine", sig, N_KNOWN, "mean_embedding", True)
    assert scorer.gallery.shape == (16, N_KNOWN) and list(scorer.gallery_index[:2]) == [0, 1]
    q = {"embedding": np.array([[3.0, 4.0, 0, 0, 0, 0, 0, 0]]), "score": np.array([0.9])}
    np.testing.assert_allclose(scorer.class_scores(q)[0, :3], [0.6, 0.8, 0.0])
    rows = encounter_rows(scorer, {k: v[sig["set"] == "eval"] for k, v in sig.items()},
                          enc[sig["set"] == "eval"])  # fmt: skip
    assert len(rows["name"]) == 16 and rows["member"].sum() == 8
    np.testing.assert_allclose(rows["score"], 1.0)  # mean embedding e_i: its class's photo


@pytest.mark.parametrize("name", ["yeom", "baseline_msp", "salem", "cosine"])
def test_the_fitted_scale_keeps_the_ranking(name):
    score = {"yeom": -np.array([3.0, 1.0, 1e-3]), "baseline_msp": np.array([0.1, 0.5, 0.99])}
    score |= {"salem": np.array([0.01, 0.5, 0.99]), "cosine": np.array([-0.5, 0.1, 0.9])}
    assert np.all(np.diff(feature(name, score[name])) > 0)


def test_separable_names_the_first_reason():
    assert separable([0.8, 0.6, 0.9], [0.05, 0.0, 0.1], [0.9, 0.8, 0.95]) == (True, "")
    ok, why = separable([0.5, 0.04, 0.7], [0.05, 0.0, 0.1], [0.9, 0.6, 0.95], 0.05)
    assert not ok and why == "TPR [0.040, 0.700] does not exceed FPR 0.050"
