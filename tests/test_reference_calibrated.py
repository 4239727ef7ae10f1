"""Reference-calibrated known/new scores (attacks/reference_calibrated.py): each statistic
against hand-computed values, the tail's stability, per-identity similarity against a loop, the blocked scores against the whole computation, the
attack's construction for a run, and known/new separation on synthetic whales."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import norm

from attacks import reference_calibrated as rc
from attacks.open_set import auroc
from attacks.registry import get

CAT = np.array([[0.9, 0.2], [0.5, 0.4], [0.25, 0.5]])
REF = np.array([[0.1, 0.3, 0.2], [0.6, 0.4, 0.5], [0.25, 0.25, 0.25]])


def test_statistics_by_hand():
    # best = [0.9, 0.5, 0.5]; reference max [0.3, 0.6, 0.25], mean [0.2, 0.5, 0.25]
    # population std of rows 1-2: sqrt((0.1^2 + 0.1^2 + 0) / 3) = sqrt(0.02 / 3); row 3: 0 -> 1e-6
    sd = np.sqrt(0.02 / 3)
    z = np.array([0.7 / sd, 0.0, 0.25 / 1e-6])
    s = {st: rc.calibrated_scores(CAT, REF, st) for st in rc.STATISTICS}
    assert s["raw"] == pytest.approx([0.9, 0.5, 0.5])
    assert s["difference"] == pytest.approx([0.6, -0.1, 0.25])
    assert s["zscore"] == pytest.approx(z)
    # row 1: 3 of 3 references below 0.9; row 2: 0.4 below, 0.5 tied (1/2), 0.6 above
    assert s["rank"] == pytest.approx([1.0, 1.5 / 3, 1.0])
    # tail with K = 2: -log(1 - Phi(z)^2) = -log(2p - p^2), p = 1 - Phi(z) (no cancellation)
    p = norm.sf(z[:2])
    assert s["tail"][:2] == pytest.approx(-np.log(2 * p - p**2), rel=1e-10)
    assert s["tail"][1] == pytest.approx(-np.log(0.75))  # Phi(0)^2 = 1/4
    # row 3 (z = 250000): far tail, -log 2 - log(1 - Phi(z)) ~ z^2 / 2
    assert np.isfinite(s["tail"][2]) and s["tail"][2] == pytest.approx(z[2] ** 2 / 2, rel=1e-6)
    assert all(v.dtype == np.float64 and v.shape == (3,) for v in s.values())
    with pytest.raises(ValueError, match="choose one of"):
        rc.calibrated_scores(CAT, REF, "median")
    with pytest.raises(ValueError, match="need"):
        rc.calibrated_scores(CAT, REF[:2], "zscore")


def test_tail_is_finite_and_increasing_at_the_extremes():
    z = np.linspace(-10, 10, 401)
    for k in (1, 2, 5):
        t = rc.tail_score(z, k)
        assert np.isfinite(t).all() and (np.diff(t) > 0).all() and (t > 0).all()
        mid = np.linspace(-2, 3, 11)  # where the direct formula is still accurate
        assert rc.tail_score(mid, k) == pytest.approx(-np.log1p(-(norm.cdf(mid) ** k)), rel=1e-9)
    wide = rc.tail_score(np.array([-40.0, -10.0, 0.0, 10.0, 40.0, 1e3]), 1000)
    assert np.isfinite(wide).all() and (np.diff(wide) >= 0).all() and wide[-1] > wide[-2]
    # far above: 1 - Phi(z)^k = k (1 - Phi(z)), so the score is -log k - log_ndtr(-z)
    assert rc.tail_score(np.array([40.0]), 7)[0] == pytest.approx(-np.log(7) - norm.logsf(40))


def test_identity_similarity_matches_a_loop_in_any_chunking():
    rng = np.random.default_rng(0)
    q, g = rng.normal(size=(7, 5)), rng.normal(size=(9, 5)) * 3
    ident = np.array(["b", "a", "c", "a", "b", "b", "c", "d", "a"])
    names, sims = rc.identity_similarity(q, g, ident)
    assert list(names) == ["a", "b", "c", "d"] and sims.shape == (7, 4)
    brute = np.empty((7, 4))
    for i in range(7):
        for k, n in enumerate(names):
            brute[i, k] = max(
                q[i] @ g[j] / np.linalg.norm(q[i]) / np.linalg.norm(g[j])
                for j in range(9)
                if ident[j] == n
            )
    np.testing.assert_allclose(sims, brute, rtol=0, atol=1e-12)
    for chunk in (1, 3):
        np.testing.assert_allclose(rc.identity_similarity(q, g, ident, chunk)[1], sims, atol=1e-12)
    assert rc.identity_similarity(q, g[:0], ident[:0])[1].shape == (7, 0)


def test_blocked_scores_equal_the_whole_computation_in_any_chunking():
    """reference_calibrated_scores, a block of queries at a time, gives what identity_similarity
    on every query followed by calibrated_scores gives (bit for bit at the same block size)."""
    rng = np.random.default_rng(1)
    q, g, r = rng.normal(size=(11, 6)), rng.normal(size=(13, 6)), rng.normal(size=(8, 6))
    gi, ri = rng.integers(0, 5, 13), np.array(list("xyzxyzww"))
    for st in rc.STATISTICS:
        whole = rc.calibrated_scores(
            rc.identity_similarity(q, g, gi)[1], rc.identity_similarity(q, r, ri)[1], st
        )
        np.testing.assert_array_equal(
            rc.reference_calibrated_scores(q, (g, gi), (r, ri), st), whole
        )
        for chunk in (1, 4, 11):
            got = rc.reference_calibrated_scores(q, (g, gi), (r, ri), st, chunk)
            np.testing.assert_allclose(got, whole, rtol=1e-9, atol=1e-12)
    assert rc.reference_calibrated_scores(q[:0], (g, gi), (r, ri), "tail").shape == (0,)
    with pytest.raises(ValueError, match="K >= 1 and R >= 1"):
        rc.reference_calibrated_scores(q, (g, gi), (r[:0], ri[:0]), "zscore")


def test_encounter_embeddings_average_unit_rows():
    names, e = rc.encounter_embeddings(
        np.array([[0.0, 3.0], [2.0, 0.0], [0.0, 1.0]]), ["f", "e", "e"]
    )
    assert list(names) == ["e", "f"]
    np.testing.assert_allclose(e, [[2**-0.5, 2**-0.5], [0.0, 1.0]])


def run_signals(with_reference: bool = True, with_identity: bool = True) -> dict:
    """Two train photos (labels 0, 1), two reference photos, one attack photo."""
    split = ["train", "train", "reference", "reference", "attack"]
    if not with_reference:
        split = ["train", "train", "attack", "attack", "attack"]
    run = {
        "embedding": np.eye(5, 4, dtype=np.float32),
        "split": np.array(split),
        "label": np.array([0, 1, -1, -1, 0]),
    }
    if with_identity:
        run["identity"] = np.array(["w0", "w1", "r7", "r8", "w0"])
    return run


def test_for_run_takes_the_gallery_and_the_reference_from_the_run():
    cls = get("reference_calibrated")
    a = cls.for_run(run_signals(), statistic="rank")
    assert a.statistic == "rank" and a.requires == ("embedding",)
    np.testing.assert_array_equal(a.gallery, np.eye(5, 4)[:2])
    assert list(a.gallery_identity) == [0, 1] and list(a.reference_identity) == ["r7", "r8"]
    b = cls.for_run(run_signals(with_identity=False))
    assert list(b.reference_identity) == [-1, -1]  # no identity field: the label
    with pytest.raises(ValueError, match="split == 'reference'"):
        cls.for_run(run_signals(with_reference=False))
    c = cls.for_run(run_signals(with_reference=False), reference=np.ones((3, 4)))
    assert list(c.reference_identity) == [0, 1, 2]  # each given photo its own whale
    assert c.score({"embedding": np.eye(2, 4)}).shape == (2,)
    with pytest.raises(ValueError, match="choose one of"):
        cls(statistic="nope")


def test_zscore_separates_known_from_new_whales():
    rng = np.random.default_rng(1)
    d, n_cat, n_ref = 16, 12, 20
    centres = rng.normal(size=(n_cat, d))
    gallery = np.repeat(centres, 3, 0) + rng.normal(0, 0.3, (3 * n_cat, d))
    gallery_id = np.repeat(np.arange(n_cat), 3)
    reference = np.repeat(rng.normal(size=(n_ref, d)), 3, 0) + rng.normal(0, 0.3, (3 * n_ref, d))
    known = centres[rng.integers(0, n_cat, 40)] + rng.normal(0, 0.3, (40, d))
    new = rng.normal(size=(40, d))
    attack = get("reference_calibrated")(
        gallery, gallery_id, reference, np.repeat(np.arange(n_ref), 3), statistic="zscore"
    )
    s = attack.score({"embedding": np.vstack([known, new])})
    assert s.dtype == np.float64 and np.isfinite(s).all()
    assert auroc(s, np.r_[np.ones(40), np.zeros(40)]) > 0.9
