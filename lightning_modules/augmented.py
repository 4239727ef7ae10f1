"""Test-time augmented queries for the calibrated attacks (LiRA, RMIA): the logits of each image
under a fixed list of views (identity, horizontal flip, shifts by a few pixels).

The attacks stay pure: they receive the logits reduced to a statistic per view, (N, A).
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader


def view_names(flip: bool = True, shift: int = 2) -> list[str]:
    """Names of the views :func:`augment` produces, in order: ``id``, ``flip``, ``shift+x``...."""
    names = ["id"] + (["flip"] if flip else [])
    if shift > 0:
        names += [f"shift{d}{shift}" for d in ("+x", "-x", "+y", "-y")]
    return names


def _shifted(x: torch.Tensor, dx: int, dy: int) -> torch.Tensor:
    """``x`` (B, C, H, W) translated by ``(dx, dy)`` pixels, borders reflected."""
    s = max(abs(dx), abs(dy))
    pad = F.pad(x, (s, s, s, s), mode="reflect")
    h, w = x.shape[-2:]
    return pad[..., s - dy : s - dy + h, s - dx : s - dx + w]


def augment(x: torch.Tensor, flip: bool = True, shift: int = 2) -> list[torch.Tensor]:
    """The views of a batch (B, C, H, W), in :func:`view_names` order."""
    views = [x] + ([torch.flip(x, dims=[-1])] if flip else [])
    if shift > 0:
        views += [_shifted(x, d, 0) for d in (shift, -shift)]
        views += [_shifted(x, 0, d) for d in (shift, -shift)]
    return views


@torch.no_grad()
def augmented_logits(
    model: torch.nn.Module,
    loader: DataLoader,
    device: str,
    *,
    flip: bool = True,
    shift: int = 2,
) -> tuple[np.ndarray, np.ndarray]:
    """``(index (N,) int64, logits (N, A, C) float32)`` of every sample of ``loader`` (batches of
    ``(x, label, index)``) under the :func:`augment` views, sorted by ``index``."""
    was = model.training
    model.eval()
    idx, out = [], []
    try:
        for x, _, i in loader:
            x = x.to(device)
            views = augment(x, flip, shift)
            logits = torch.stack([model(v).float() for v in views], 1)
            idx.append(i.cpu())
            out.append(logits.cpu())
    finally:
        model.train(was)
    index = torch.cat(idx).numpy()
    order = np.argsort(index, kind="stable")
    return index[order], torch.cat(out).numpy()[order]
