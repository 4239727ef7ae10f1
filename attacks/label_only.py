"""Label-only MIA (Choquette-Choo et al.): member iff the L2 distance to the decision boundary is
at least ``tau``.

Pure: thresholds the saved ``boundary_distance`` signal (N,), in L2 units of the model's input
space. The distances are estimated from predicted labels only by the model-querying boundary
search (HopSkipJump) in :mod:`lightning_modules.boundary`.
"""

from __future__ import annotations

import numpy as np

from attacks.metrics import best_threshold
from attacks.registry import register
from attacks.signals import membership


@register("label_only")
class LabelOnlyAttack:
    """Member iff ``boundary_distance >= tau``; ``tau`` swept on attack-set rows only.

    Pure over signals carrying ``boundary_distance`` (N,).
    """

    signal = "boundary_distance"

    def __init__(self):
        self.threshold: float | None = None

    def fit(self, attack_signals: dict) -> LabelOnlyAttack:
        self.threshold, _ = best_threshold(self.score(attack_signals), membership(attack_signals))
        return self

    def score(self, signals: dict) -> np.ndarray:
        return np.asarray(signals[self.signal], dtype=np.float64)

    @property
    def score_threshold(self) -> float:
        if self.threshold is None:
            raise RuntimeError("fit the attack first")
        return self.threshold
