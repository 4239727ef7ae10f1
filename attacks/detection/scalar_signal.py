"""The per-image scalar that the calibrated attacks (LiRA, RMIA) read from a detector.

For image ``x`` with ground-truth objects ``(g_i, c_i)``, ``i = 1..G`` (difficult ones left out),
and the detector's predicted boxes ``(b_j, s_j, l_j)`` (the attack's post-processing: score
threshold, no NMS, a box cap)::

    m_i(x)   = max { s_j : l_j = c_i and IoU(b_j, g_i) >= 0.5 }     (0 when no box qualifies)
    p(x)     = 1/G sum_i m_i(x)                                       (0 when G = 0)
    phi(x)   = log(p / (1 - p)),  p clipped to [eps, 1 - eps]

``p`` is how confidently the detector finds the image's own objects, the detector analogue of a
classifier's true-label confidence; ``phi`` is its logit scaling, as LiRA uses. Boxes are
corners normalised to [0, 1] (any common scale works: IoU is scale-free).
"""

from __future__ import annotations

import numpy as np

#: ``phi`` clips ``p`` to [EPS, 1 - EPS] (phi within about +-13.8)
EPS = 1e-6


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU of corner boxes ``a`` (..., G, 4) and ``b`` (..., K, 4): (..., G, K) float64."""
    a = np.asarray(a, dtype=np.float64)[..., :, None, :]
    b = np.asarray(b, dtype=np.float64)[..., None, :, :]
    w = np.clip(np.minimum(a[..., 2], b[..., 2]) - np.maximum(a[..., 0], b[..., 0]), 0, None)
    h = np.clip(np.minimum(a[..., 3], b[..., 3]) - np.maximum(a[..., 1], b[..., 1]), 0, None)
    inter = w * h
    area_a = (a[..., 2] - a[..., 0]) * (a[..., 3] - a[..., 1])
    area_b = (b[..., 2] - b[..., 0]) * (b[..., 3] - b[..., 1])
    union = area_a + area_b - inter
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(union > 0, inter / union, 0.0)


def gt_match_scores(
    boxes, scores, labels, n_boxes, gt_boxes, gt_labels, n_gt, iou_thresh: float = 0.5
) -> np.ndarray:
    """``m_i`` (N, G) float64: per ground-truth object, the best score of a predicted box of its
    class with IoU >= ``iou_thresh`` (0 if none; NaN in padding slots).

    Args:
        boxes: (N, K, 4) predicted corners; scores: (N, K); labels: (N, K) int (-1 padding);
        n_boxes: (N,) valid predictions per image (the first ``n_boxes`` slots).
        gt_boxes: (N, G, 4) corners; gt_labels: (N, G) int (-1 padding); n_gt: (N,).
    """
    scores = np.asarray(scores, dtype=np.float64)
    labels = np.asarray(labels)
    gt_labels = np.asarray(gt_labels)
    n, k = scores.shape
    g = gt_labels.shape[1]
    valid = np.arange(k)[None, :] < np.asarray(n_boxes)[:, None]  # (N, K)
    gt_valid = np.arange(g)[None, :] < np.asarray(n_gt)[:, None]  # (N, G)
    iou = box_iou(gt_boxes, boxes)  # (N, G, K)
    ok = (iou >= iou_thresh) & (gt_labels[:, :, None] == labels[:, None, :]) & valid[:, None, :]
    best = np.where(ok, scores[:, None, :], 0.0).max(-1, initial=0.0)
    return np.where(gt_valid, best, np.nan)


def detection_confidence(
    boxes, scores, labels, n_boxes, gt_boxes, gt_labels, n_gt, iou_thresh: float = 0.5
) -> np.ndarray:
    """``p(x)`` (N,) in [0, 1]: the mean over an image's ground-truth objects of
    :func:`gt_match_scores` (0 for an image without objects)."""
    m = gt_match_scores(boxes, scores, labels, n_boxes, gt_boxes, gt_labels, n_gt, iou_thresh)
    n = np.asarray(n_gt)
    total = np.nansum(m, axis=1)
    return np.where(n > 0, total / np.maximum(n, 1), 0.0)


def logit_scale(p: np.ndarray, eps: float = EPS) -> np.ndarray:
    """``phi = log(p / (1 - p))`` with ``p`` clipped to ``[eps, 1 - eps]`` (float64)."""
    q = np.clip(np.asarray(p, dtype=np.float64), eps, 1.0 - eps)
    return np.log(q) - np.log1p(-q)


def detection_phi(signals: dict[str, np.ndarray], iou_thresh: float = 0.5) -> np.ndarray:
    """``phi(x)`` (N,) from a signal dict with ``boxes``, ``scores``, ``labels``, ``n_boxes``,
    ``gt_boxes``, ``gt_labels`` and ``n_gt``."""
    keys = ("boxes", "scores", "labels", "n_boxes", "gt_boxes", "gt_labels", "n_gt")
    return logit_scale(detection_confidence(*(signals[k] for k in keys), iou_thresh=iou_thresh))
