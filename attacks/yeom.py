"""Yeom et al. metric attack: a loss threshold swept on the attack set, frozen for evaluation.

Identity-level variant: non-member whales have no label in the target's label space, so the
default signal is the predicted-label loss ``loss_pred`` (= -log max softmax). With
``signal="loss_true"`` the classic photo-level attack is used where true labels exist.
"""

from __future__ import annotations

import numpy as np

from attacks.base import ThresholdAttack
from attacks.registry import register


@register("yeom")
class YeomAttack(ThresholdAttack):
    """Member iff ``loss <= tau``; ``tau`` is chosen on the attack set only.

    Args:
        signal: the loss field, ``loss_pred`` (label-free) or ``loss_true`` (nats).
    """

    requires = ("loss_pred",)

    def __init__(self, signal: str = "loss_pred"):
        self.signal = signal
        self.requires = (signal,)

    def raw_score(self, signals: dict) -> np.ndarray:
        """The negated loss (N,): higher = member."""
        return -np.asarray(signals[self.signal], dtype=np.float64)
