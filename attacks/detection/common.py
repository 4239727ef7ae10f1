"""Shared pieces of the detector attacks: their base class, a balanced, seeded train/val split of
the shadow signals, and the validation metrics."""

from __future__ import annotations

import warnings

import numpy as np

from attacks.base import RegisteredAttack
from attacks.metrics import balance, threshold_metrics
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


class DetectorAttack(RegisteredAttack):
    """A detector attack: fitted on a shadow detector's in/out signals, it returns P(member)
    (N,) per image, and member iff P(member) >= 0.5."""

    kind = "detector"
    requires: tuple[str, ...] = ("boxes", "scores")
    score_threshold = 0.5


def validation_metrics(attack: DetectorAttack, val: dict[str, np.ndarray]) -> dict:
    """Decision metrics of ``attack`` on held-out shadow rows (``acc`` is the paper's Val Acc)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # a small validation set: low-FPR figures are coarse
        return threshold_metrics(attack.score(val), membership(val), attack.score_threshold)
