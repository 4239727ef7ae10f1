"""The library calls of ``attacks.metrics`` give the numbers of the hand-written (and the former
torchmetrics) versions they replaced, on random data with many ties."""

from __future__ import annotations

import math

import numpy as np
import pytest

from attacks.metrics import auc, histogram_kl, kl_permutation_null, roc, tpr_at_fpr


def tied_data(seed: int, n: int = 300):
    """Scores rounded to a few levels (many ties across classes) and 0/1 labels."""
    rng = np.random.default_rng(seed)
    y = (rng.random(n) < 0.4).astype(np.int64)
    s = np.round(rng.normal(size=n) + 0.7 * y, 1)
    return s, y


def hand_roc(s: np.ndarray, y: np.ndarray):
    """ROC points by hand: one per distinct score (descending), starting at (0, 0)."""
    thr = np.unique(s)[::-1]
    pos, neg = max(1, y.sum()), max(1, (1 - y).sum())
    t = np.array([0.0] + [((s >= c) & (y == 1)).sum() / pos for c in thr])
    f = np.array([0.0] + [((s >= c) & (y == 0)).sum() / neg for c in thr])
    return f, t


def hand_auc(s: np.ndarray, y: np.ndarray) -> float:
    """P(member score > non-member score) + P(tie) / 2, over all pairs."""
    p, q = s[y == 1][:, None], s[y == 0][None, :]
    return float(((p > q) + 0.5 * (p == q)).mean())


def hand_tpr_at(s, y, fpr: float) -> float:
    f, t = hand_roc(s, y)
    ok = f <= fpr + 1e-12
    return float(t[ok].max()) if ok.any() else 0.0


def hand_kl(p_samples, q_samples, bins=20, a=0.5) -> float:
    """The former ``histogram_kl`` body: sum p log(p / q) over smoothed histograms."""
    p_samples, q_samples = np.asarray(p_samples, float), np.asarray(q_samples, float)
    lo = min(0.0, p_samples.min(), q_samples.min())
    edges = np.linspace(lo, max(p_samples.max(), q_samples.max()), bins + 1)
    p = np.histogram(p_samples, edges)[0] + a
    q = np.histogram(q_samples, edges)[0] + a
    p, q = p / p.sum(), q / q.sum()
    return float(np.sum(p * np.log(p / q)))


@pytest.mark.parametrize("seed", range(5))
def test_auc_and_roc_match_the_hand_written_versions_with_ties(seed):
    s, y = tied_data(seed)
    assert len(np.unique(s)) < len(s) / 3  # many ties
    assert auc(s, y) == pytest.approx(hand_auc(s, y), abs=1e-12)
    f, t = roc(s, y)
    hf, ht = hand_roc(s, y)
    np.testing.assert_allclose(f, hf, atol=1e-12)
    np.testing.assert_allclose(t, ht, atol=1e-12)
    assert f.dtype == np.float64 and (f[0], t[0]) == (0.0, 0.0)
    for rate in (0.0, 0.001, 0.01, 0.1, 0.5):
        assert tpr_at_fpr(s, y, rate) == pytest.approx(hand_tpr_at(s, y, rate), abs=1e-12)


def test_auc_matches_the_former_torchmetrics_version_to_float32():
    """The replaced torchmetrics call (rank workaround, float32 inside) agrees to ~1e-7."""
    torch = pytest.importorskip("torch")
    from torchmetrics.functional.classification import binary_auroc, binary_roc

    for seed in range(3):
        s, y = tied_data(seed, 500)
        _, inv = np.unique(s, return_inverse=True)
        ranks = torch.as_tensor(inv.astype(np.float64) / inv.max())
        old = float(binary_auroc(ranks, torch.as_tensor(y)))
        assert auc(s, y) == pytest.approx(old, abs=1e-6)
        of, ot, _ = binary_roc(ranks, torch.as_tensor(y))
        f, t = roc(s, y)
        np.testing.assert_allclose(f, of.double().numpy(), atol=1e-6)
        np.testing.assert_allclose(t, ot.double().numpy(), atol=1e-6)


def test_non_finite_scores_keep_their_order():
    """scikit-learn refuses inf and NaN; they are ranked instead (inf above every number, NaN
    highest, as numpy sorts them), which gives the ROC of the same ordering."""
    y = np.array([0, 1, 1, 0, 1])
    s = np.array([0.1, np.inf, 0.3, -np.inf, np.nan])
    ranked = np.array([1.0, 3.0, 2.0, 0.0, 4.0])
    from sklearn.metrics import roc_auc_score

    with pytest.raises(ValueError, match="infinity|NaN"):  # why the ranks stay hand-written
        roc_auc_score(y, s)
    assert auc(s, y) == auc(ranked, y) == 1.0
    for a, b in zip(roc(s, y), roc(ranked, y)):
        np.testing.assert_array_equal(a, b)


def test_auc_edge_cases():
    assert auc(np.array([0.1, 0.2]), np.array([1, 1])) == 0.5  # one class only
    assert auc(np.array([1.0, 1.0, 1.0]), np.array([1, 0, 1])) == 0.5  # all tied
    assert auc(np.array([0.0, 1.0]), np.array([1, 0])) == 0.0  # inverted ranking


@pytest.mark.parametrize("seed", range(5))
def test_histogram_kl_matches_the_hand_written_sum(seed):
    rng = np.random.default_rng(seed)
    p = np.round(rng.gamma(2.0, 0.5, size=200), 1)  # ties and empty bins
    q = np.round(rng.gamma(2.5, 0.6, size=150), 1)
    for bins in (2, 7, 20):
        assert histogram_kl(p, q, bins=bins) == pytest.approx(hand_kl(p, q, bins), rel=1e-12)


def test_kl_null_matches_the_hand_written_permutations():
    rng = np.random.default_rng(3)
    p, q = rng.gamma(2.0, 0.5, size=80), rng.gamma(2.0, 0.5, size=60)
    edges = np.linspace(0.0, max(p.max(), q.max()), 21)
    pooled = np.concatenate([p, q])
    idx = np.clip(np.searchsorted(edges, pooled, side="right") - 1, 0, 19)
    perm = np.random.default_rng(0).permuted(np.tile(idx, (50, 1)), axis=1)
    kls = []
    for row in perm:
        cp = np.bincount(row[: p.size], minlength=20) + 0.5
        cq = np.bincount(row[p.size :], minlength=20) + 0.5
        pp, qq = cp / cp.sum(), cq / cq.sum()
        kls.append(np.sum(pp * np.log(pp / qq)))
    assert kl_permutation_null(p, q) == pytest.approx(float(np.mean(kls)), rel=1e-12)
    assert math.isnan(kl_permutation_null(np.array([]), q))
