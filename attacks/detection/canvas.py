"""The canvas method (paper, section 3.3): predicted boxes drawn on an empty canvas.

Each image becomes one (1, S, S) canvas (S = 300 in the paper). Every box is drawn as a filled
rectangle centred where the predicted box is centred, with intensity equal to its score or, with
score rescaling, ``-log(1 - s)`` (so 0.9 -> 2.30 and 0.9999 -> 9.21); overlapping boxes add up.
Box size is either the box's own size (``original``) or a square of ``uniform_frac`` x S pixels
(``uniform``, 10% = 30 px at S = 300).

Pixel rule (shared by the vectorised and the naive renderer): with normalised corners, ``original``
covers columns ``[round(x0 * S), round(x1 * S))`` (at least one pixel) and likewise rows;
``uniform`` covers ``[round(cx * S - u / 2), ... + u)`` with ``u = round(uniform_frac * S)``,
clipped to the canvas.

The renderer is vectorised: each box adds four corner values to a difference array
(``scatter_add_``) and two prefix sums turn it into the canvas. The cost is O(N S^2 + N K),
with no Python loop over boxes, and it runs on any torch device.
"""

from __future__ import annotations

import numpy as np
import torch

STYLES = ("original", "uniform")
#: scores are clipped to 1 - EPS before rescaling, so -log(1 - s) <= 27.6
EPS = 1e-12


def intensity(scores: torch.Tensor, rescale: bool) -> torch.Tensor:
    """Box intensity: the score, or ``-log(1 - s)`` computed in float64."""
    if not rescale:
        return scores.float()
    s = scores.double().clamp(0.0, 1.0 - EPS)
    return (-torch.log1p(-s)).float()


def pixel_rects(
    boxes: torch.Tensor, size: int, box_style: str, uniform_frac: float = 0.1
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Half-open pixel rectangles ``(x0, y0, x1, y1)`` (each (N, K) int64) on an S x S canvas."""
    if box_style not in STYLES:
        raise ValueError(f"box_style={box_style!r}: choose one of {list(STYLES)}.")
    b = boxes.double() * size
    if box_style == "original":
        x0 = torch.round(b[..., 0]).long().clamp(0, size - 1)
        y0 = torch.round(b[..., 1]).long().clamp(0, size - 1)
        x1 = torch.maximum(torch.round(b[..., 2]).long(), x0 + 1).clamp(max=size)
        y1 = torch.maximum(torch.round(b[..., 3]).long(), y0 + 1).clamp(max=size)
        return x0, y0, x1, y1
    u = max(1, int(round(uniform_frac * size)))
    cx = (b[..., 0] + b[..., 2]) / 2
    cy = (b[..., 1] + b[..., 3]) / 2
    x0 = torch.round(cx - u / 2).long()
    y0 = torch.round(cy - u / 2).long()
    x1, y1 = x0 + u, y0 + u
    x0, y0 = x0.clamp(0, size - 1), y0.clamp(0, size - 1)
    x1 = torch.maximum(x1.clamp(max=size), x0 + 1)
    y1 = torch.maximum(y1.clamp(max=size), y0 + 1)
    return x0, y0, x1, y1


def _valid(scores: torch.Tensor, n_boxes: torch.Tensor | None) -> torch.Tensor:
    if n_boxes is None:
        return scores > 0
    k = torch.arange(scores.shape[1], device=scores.device)
    return k[None, :] < n_boxes.to(scores.device)[:, None]


def render_canvas(
    boxes,
    scores,
    n_boxes=None,
    size: int = 300,
    box_style: str = "original",
    rescale: bool = False,
    uniform_frac: float = 0.1,
    chunk: int | None = None,
) -> torch.Tensor:
    """Render canvases (N, 1, S, S) float32 from boxes (N, K, 4) normalised and scores (N, K).

    ``n_boxes`` (N,) marks the valid slots (None: score > 0). Works on the device of ``boxes``;
    numpy inputs are converted. ``chunk`` canvases are summed at a time (None: 8 on the CPU, which
    keeps the buffer in cache; all at once on a GPU).
    """
    boxes = torch.as_tensor(np.asarray(boxes) if not torch.is_tensor(boxes) else boxes)
    scores = torch.as_tensor(
        np.asarray(scores) if not torch.is_tensor(scores) else scores, device=boxes.device
    )
    if n_boxes is not None:
        n_boxes = torch.as_tensor(
            np.asarray(n_boxes) if not torch.is_tensor(n_boxes) else n_boxes, device=boxes.device
        )
    n = scores.shape[0]
    x0, y0, x1, y1 = pixel_rects(boxes, size, box_style, uniform_frac)
    v = intensity(scores, rescale) * _valid(scores, n_boxes)
    w = size + 1
    idx = torch.cat([y0 * w + x0, y0 * w + x1, y1 * w + x0, y1 * w + x1], 1)
    val = torch.cat([v, -v, -v, v], 1)
    out = torch.empty(n, 1, size, size, dtype=torch.float32, device=boxes.device)
    if chunk is None:
        chunk = 8 if boxes.device.type == "cpu" else max(1, n)
    for a in range(0, n, chunk):
        b = min(n, a + chunk)
        diff = torch.zeros(b - a, w * w, dtype=torch.float32, device=boxes.device)
        diff.scatter_add_(1, idx[a:b], val[a:b])
        grid = diff.view(b - a, w, w)
        grid.cumsum_(1).cumsum_(2)  # in place: two prefix sums give the filled rectangles
        out[a:b, 0] = grid[:, :size, :size]
    return out


def render_naive(
    boxes,
    scores,
    n_boxes=None,
    size: int = 300,
    box_style: str = "original",
    rescale: bool = False,
    uniform_frac: float = 0.1,
) -> np.ndarray:
    """Reference renderer: a Python loop over boxes, one slice-add each. (N, 1, S, S) float32."""
    boxes_t = torch.as_tensor(np.asarray(boxes))
    scores_t = torch.as_tensor(np.asarray(scores))
    x0, y0, x1, y1 = (t.numpy() for t in pixel_rects(boxes_t, size, box_style, uniform_frac))
    v = intensity(scores_t, rescale).numpy()
    valid = _valid(scores_t, None if n_boxes is None else torch.as_tensor(np.asarray(n_boxes)))
    valid = valid.numpy()
    out = np.zeros((len(v), 1, size, size), dtype=np.float32)
    for i in range(len(v)):
        for j in range(v.shape[1]):
            if valid[i, j]:
                out[i, 0, y0[i, j] : y1[i, j], x0[i, j] : x1[i, j]] += v[i, j]
    return out
