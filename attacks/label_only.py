"""Label-only MIA (Choquette-Choo et al.): member iff the L2 distance to the decision boundary is
at least ``tau``.

Pure: thresholds the saved ``boundary_distance`` signal (N,), in L2 units of the model's input
space. The distances are estimated from predicted labels only by the model-querying boundary
search (HopSkipJump) in :mod:`experiments.side_models.boundary_search`.
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


def query_rows(signals: dict, seed: int, max_per_role: int | None) -> np.ndarray:
    """Signal-row indices (K,) whose boundary distances are worth querying: as many members as
    non-members in the attack set and in the evaluation set (each capped at ``max_per_role``
    when it is set), drawn with ``seed``, sorted within each group."""
    rng = np.random.default_rng(seed)
    pick = [
        np.flatnonzero((signals["set"] == set_name) & (signals["role"] == role))
        for set_name in ("attack", "eval")
        for role in ("member", "nonmember")
    ]
    n_att = min(len(pick[0]), len(pick[1]))
    n_ev = min(len(pick[2]), len(pick[3]))
    if max_per_role:
        n_att, n_ev = min(n_att, max_per_role), min(n_ev, max_per_role)
    counts = (n_att, n_att, n_ev, n_ev)
    chosen = [np.sort(rng.choice(p, n, replace=False)) for p, n in zip(pick, counts)]
    return np.concatenate(chosen)
