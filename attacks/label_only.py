"""Label-only MIA (Choquette-Choo et al.): member iff the L2 distance to the decision boundary is
at least ``tau``.

Pure: thresholds the saved ``boundary_distance`` signal (N,), in L2 units of the model's input
space. The distances are estimated from predicted labels only by the model-querying boundary
search (HopSkipJump) in :mod:`lightning_modules.boundary`.
"""

from __future__ import annotations

import numpy as np

from attacks.base import ThresholdAttack
from attacks.registry import register


@register("label_only")
class LabelOnlyAttack(ThresholdAttack):
    """Member iff ``boundary_distance >= tau``; ``tau`` swept on attack-set rows only."""

    requires = ("boundary_distance",)

    def raw_score(self, signals: dict) -> np.ndarray:
        """The boundary distance (N,), L2 in the model's input space: higher = member."""
        return np.asarray(signals["boundary_distance"], dtype=np.float64)
