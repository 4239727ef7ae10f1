"""Shared pieces of the detector attacks: balanced shadow sets and a seeded train/val split."""

from __future__ import annotations

import numpy as np

from attacks.metrics import balance
from attacks.signals import membership


def shadow_split(
    signals: dict[str, np.ndarray], val_fraction: float, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """Indices (train, val) into ``signals``: class-balanced, stratified, seeded.

    ``val`` holds ``val_fraction`` of each class (none when the fraction is 0).
    """
    y = membership(signals)
    keep = balance(y, seed=seed)
    rng = np.random.default_rng(seed)
    train, val = [], []
    for c in (0, 1):
        idx = keep[y[keep] == c]
        idx = idx[rng.permutation(len(idx))]
        n_val = int(round(val_fraction * len(idx))) if val_fraction > 0 else 0
        if 0 < val_fraction and len(idx) >= 2:
            n_val = min(max(n_val, 1), len(idx) - 1)
        val.append(idx[:n_val])
        train.append(idx[n_val:])
    return np.sort(np.concatenate(train)), np.sort(np.concatenate(val))


def take(signals: dict[str, np.ndarray], idx: np.ndarray) -> dict[str, np.ndarray]:
    return {k: v[idx] for k, v in signals.items()}
