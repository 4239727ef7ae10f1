"""Exact cosine kNN in blocks (``attacks.knn``) equals the full similarity matrix: the same
neighbours in the same order (ties by gallery index), whatever the block size."""

from __future__ import annotations

import numpy as np
import pytest

from attacks.knn import cosine_topk, nearest_cosine
from attacks.open_set import cosine


def stable_topk(sim: np.ndarray, k: int) -> np.ndarray:
    return np.argsort(-sim, axis=1, kind="stable")[:, :k]


@pytest.mark.parametrize("block", [1, 7, 64, 5000])
def test_blocked_topk_equals_the_full_matrix(block):
    rng = np.random.default_rng(0)
    q, g = rng.normal(size=(120, 16)), rng.normal(size=(900, 16))
    g[5] = g[7]  # two equal gallery photos
    q[0] = g[5]  # a query tied between them
    full = cosine(q, g)
    sims, idx = cosine_topk(q, g, 20, block)
    assert (idx == stable_topk(full, 20)).all()
    np.testing.assert_allclose(sims, np.take_along_axis(full, idx, 1), rtol=0, atol=1e-12)
    assert list(idx[0, :2]) == [5, 7]
    np.testing.assert_allclose(nearest_cosine(q, g, block), full.max(1), rtol=0, atol=1e-12)


def test_many_ties_at_the_kth_place_keep_the_lower_gallery_index():
    rng = np.random.default_rng(1)
    q = rng.integers(1, 3, size=(40, 3)).astype(float)
    g = rng.integers(1, 3, size=(300, 3)).astype(float)  # few distinct directions: many ties
    _, idx = cosine_topk(q, g, 10, block=8)
    assert (idx == stable_topk(cosine(q, g), 10)).all()


def test_small_and_empty_galleries():
    q = np.eye(3)
    sims, idx = cosine_topk(q, np.eye(3)[:2], k=5)
    assert idx.shape == (3, 2) and list(idx[0]) == [0, 1] and sims[0, 0] == pytest.approx(1.0)
    assert np.isneginf(nearest_cosine(q, np.empty((0, 3)))).all()
    assert cosine_topk(q, np.eye(3), k=0)[1].shape == (3, 0)
