"""Label-only MIA (Choquette-Choo et al.): member iff the L2 distance to the decision boundary is
at least ``tau``.

Pure: thresholds the saved ``boundary_distance`` signal (N,), in L2 units of the model's input
space. The distances are estimated from predicted labels only by the model-querying boundary
search (HopSkipJump) in :mod:`experiments.side_models.boundary_search`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from attacks.base import ThresholdAttack
from attacks.registry import register


@dataclass
class LabelOnlySettings:
    """HopSkipJump boundary-distance attack.

    Args:
        enabled: run the attack.
        method: ``ours`` (batched torch search) or ``art`` (ART's reference implementation).
        max_iter: HopSkipJump iterations.
        init_eval: initial gradient-estimate probes.
        max_eval: maximum gradient-estimate probes.
        init_size: random trials for the adversarial start.
        max_queries: per-sample query cap (None: no cap).
        max_per_role: cap of members and of non-members per set (attack and evaluation) to
            bound the query cost; None keeps all (balanced).
        chunk: images per forward pass.
        seed: seed of the sample choice and of the search.
    """

    enabled: bool = True
    method: str = "ours"
    max_iter: int = 50
    init_eval: int = 100
    max_eval: int = 10000
    init_size: int = 100
    max_queries: int | None = None
    max_per_role: int | None = None
    chunk: int = 1024
    seed: int = 0

    def search_options(self) -> dict:
        """The boundary search's keyword arguments (``boundary_distances``)."""
        keys = ("max_iter", "init_eval", "max_eval", "init_size", "max_queries", "chunk", "seed")
        return {k: getattr(self, k) for k in keys}


@register("label_only", settings=LabelOnlySettings, cheap="identity", steps=("boundary",))
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
