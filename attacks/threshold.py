"""Yeom et al. metric attack: a loss threshold swept on the attack set, frozen for evaluation.

Identity-level variant: non-member whales have no label in the target's label space, so the
default signal is the predicted-label loss ``loss_pred`` (= -log max softmax). With
``signal="loss_true"`` the classic photo-level attack is used where true labels exist.
"""

from __future__ import annotations

import numpy as np

from attacks.metrics import best_threshold
from attacks.registry import register
from attacks.signals import membership


@register("yeom")
class YeomAttack:
    """Member iff ``loss <= tau``. ``tau`` is chosen on the attack set only."""

    def __init__(self, signal: str = "loss_pred"):
        self.signal = signal
        self.threshold: float | None = None

    def _score(self, signals: dict) -> np.ndarray:
        return -np.asarray(signals[self.signal], dtype=np.float64)

    def fit(self, attack_signals: dict) -> YeomAttack:
        """Sweep the threshold on attack-set rows (members: ID1-val, non-members: ID2)."""
        tau, _ = best_threshold(self._score(attack_signals), membership(attack_signals))
        self.threshold = tau
        return self

    def score(self, signals: dict) -> np.ndarray:
        """Membership score (N,), higher = member: the negated loss."""
        return self._score(signals)

    @property
    def score_threshold(self) -> float:
        """Threshold on ``score`` (not on the loss): member iff score >= this."""
        if self.threshold is None:
            raise RuntimeError("fit the attack first")
        return self.threshold
