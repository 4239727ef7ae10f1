"""Padded vectors, canvas pixels, the vectorised renderer and the attack classes."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from attacks.detection.canvas import render_canvas, render_naive
from attacks.detection.features import padded_vectors
from attacks.metrics import threshold_metrics


def test_padded_vector_layout():
    boxes = np.array(
        [[[0.1, 0.2, 0.3, 0.4], [0.5, 0.5, 0.9, 0.8], [0.7, 0.7, 0.8, 0.8]]], dtype=np.float32
    )
    scores = np.array([[0.3, 0.9, 0.6]], dtype=np.float32)
    v = padded_vectors(boxes, scores, np.array([2]), max_boxes=4)
    assert v.shape == (1, 20) and v.dtype == np.float32
    expected = [0.5, 0.5, 0.9, 0.8, 0.9, 0.1, 0.2, 0.3, 0.4, 0.3] + [0.0] * 10
    np.testing.assert_allclose(v[0], expected, rtol=1e-6)  # third box is padding (n_boxes=2)
    # without counts, positive scores are valid; sorted by score; truncation keeps the best
    v = padded_vectors(boxes, scores, None, max_boxes=2)
    np.testing.assert_allclose(v[0, [4, 9]], [0.9, 0.6], rtol=1e-6)


def test_canvas_original_box_pixels():
    # box (0.1, 0.2)-(0.3, 0.5) on a 300 px canvas: columns 30..89, rows 60..149
    c = render_canvas(np.array([[[0.1, 0.2, 0.3, 0.5]]]), np.array([[0.5]]), size=300)
    assert c.shape == (1, 1, 300, 300)
    img = c[0, 0].numpy()
    assert img[60:150, 30:90].min() == pytest.approx(0.5) and img.sum() == pytest.approx(
        0.5 * 60 * 90
    )
    assert img[59, 30] == 0 and img[150, 30] == 0 and img[60, 29] == 0 and img[60, 90] == 0


def test_canvas_uniform_box_and_rescaling():
    # centre (0.5, 0.5) -> 30 x 30 square (10% of 300 px) over rows/cols 135..164
    boxes = np.array([[[0.4, 0.45, 0.6, 0.55]]])
    c = render_canvas(boxes, np.array([[0.9999]]), size=300, box_style="uniform", rescale=True)
    img = c[0, 0].numpy()
    assert img[135, 135] == pytest.approx(-math.log(1 - 0.9999), rel=1e-4)
    assert img[135, 135] == pytest.approx(9.21, abs=0.01)
    assert (img > 0).sum() == 900 and img[134, 135] == 0 and img[165, 150] == 0
    c = render_canvas(boxes, np.array([[0.9]]), size=300, box_style="uniform", rescale=True)
    assert float(c.max()) == pytest.approx(2.303, abs=1e-3)
    c = render_canvas(boxes, np.array([[0.9]]), size=300, box_style="uniform", rescale=False)
    assert float(c.max()) == pytest.approx(0.9)


def test_canvas_overlaps_add_and_padding_ignored():
    boxes = np.array([[[0.0, 0.0, 0.5, 0.5], [0.25, 0.25, 0.75, 0.75], [0.0, 0.0, 1.0, 1.0]]])
    scores = np.array([[0.5, 0.25, 0.0]])
    img = render_canvas(boxes, scores, np.array([2]), size=100)[0, 0].numpy()
    assert img[30, 30] == pytest.approx(0.75) and img[10, 10] == pytest.approx(0.5)
    assert img[90, 90] == 0  # third slot is padding


@pytest.mark.parametrize("style", ["original", "uniform"])
@pytest.mark.parametrize("rescale", [False, True])
def test_vectorised_matches_naive(style, rescale):
    rng = np.random.default_rng(0)
    a = rng.random((5, 40, 4))
    boxes = np.concatenate(
        [np.minimum(a[..., :2], a[..., 2:]), np.maximum(a[..., :2], a[..., 2:])], -1
    )
    scores = rng.random((5, 40)).astype(np.float32)
    n = np.array([0, 1, 10, 39, 40])
    fast = render_canvas(boxes, scores, n, 64, style, rescale).numpy()
    slow = render_naive(boxes, scores, n, 64, style, rescale)
    np.testing.assert_allclose(fast, slow, atol=1e-4)


def test_metrics():
    # average recall (the paper's Table 2) = mean recall on members and non-members
    recall = threshold_metrics(np.array([1, 1, 0, 0]), np.array([1, 0, 0, 0]), 0.5)
    assert recall["balanced_acc"] == pytest.approx((1.0 + 2 / 3) / 2)
    m = threshold_metrics(np.array([0.9, 0.8, 0.2, 0.6]), np.array([1, 1, 0, 0]), 0.5)
    assert m["acc"] == 0.75 and m["auc"] == 1.0 and m["n_members"] == 2


def test_attacks_learn_a_clear_signal(make_detector_signals):
    from attacks.registry import get

    shadow = make_detector_signals(60, 8, 0, "shadow")
    target = make_detector_signals(40, 8, 1, "target")
    y = (target["role"] == "member").astype(int)
    xgb = get("det_xgb")(n_estimators=50).fit(shadow)
    assert threshold_metrics(xgb.score(target), y, 0.5)["acc"] > 0.9
    torch.manual_seed(0)
    cnn = get("det_canvas")(model="shallow", canvas_size=32, epochs=6, lr=1e-3, device="cpu")
    cnn.fit(shadow)
    assert threshold_metrics(cnn.score(target), y, 0.5)["auc"] > 0.9
    assert "acc" in cnn.val_metrics and len(cnn.history) == 6
