"""The XGBoost attack's input: one flat, zero-padded vector per image (paper, section 3.2).

For an image with boxes ``b_j = (x0, y0, x1, y1)`` (corners normalised to [0, 1] by the image's
width and height) and scores ``s_j`` sorted by descending score, the vector is::

    [x0_1, y0_1, x1_1, y1_1, s_1, x0_2, ..., s_n, 0, 0, ..., 0]     length 5 * K

where ``n <= K`` boxes exist and the rest is zero padding.
"""

from __future__ import annotations

import numpy as np


def valid_mask(scores: np.ndarray, n_boxes: np.ndarray | None) -> np.ndarray:
    """(N, K) bool: the first ``n_boxes`` slots (or, without counts, slots with score > 0)."""
    scores = np.asarray(scores)
    if n_boxes is None:
        return scores > 0
    k = np.arange(scores.shape[1])
    return k[None, :] < np.asarray(n_boxes)[:, None]


def padded_vectors(
    boxes: np.ndarray,
    scores: np.ndarray,
    n_boxes: np.ndarray | None = None,
    max_boxes: int | None = None,
) -> np.ndarray:
    """Flatten boxes and scores into (N, 5 * K) float32 vectors, sorted by score, zero padded.

    Args:
        boxes: (N, K0, 4) normalised corners.
        scores: (N, K0) in [0, 1].
        n_boxes: (N,) valid boxes per image (None: slots with score > 0 are valid).
        max_boxes: K, the padded length in boxes (None: K0). Extra boxes (lowest scores) are cut.
    """
    boxes = np.asarray(boxes, dtype=np.float32)
    scores = np.asarray(scores, dtype=np.float32)
    n, k0 = scores.shape
    k = k0 if max_boxes is None else int(max_boxes)
    valid = valid_mask(scores, n_boxes)
    key = np.where(valid, scores, -np.inf)
    order = np.argsort(-key, axis=1, kind="stable")[:, :k]
    rows = np.arange(n)[:, None]
    s = np.where(valid[rows, order], scores[rows, order], 0.0)
    b = np.where(valid[rows, order][..., None], boxes[rows, order], 0.0)
    out = np.zeros((n, k, 5), dtype=np.float32)
    kk = order.shape[1]
    out[:, :kk, :4] = b
    out[:, :kk, 4] = s
    return out.reshape(n, 5 * k)
