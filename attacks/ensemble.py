"""Ensemble MIA (whale paper, sections 3.4 and 5.4).

ID1 is split into ``n_subsets`` disjoint groups of individuals (down to two individuals per
subset; see :func:`split_identities`). For each subset ``k`` a target model is trained on that subset's ID1-train photos, and
an attack is fitted on its own attack set: the subset's ID1-val photos (members) against as many
ID2 individuals, drawn at random (non-members), balanced by photo count. Every attack then scores the whole evaluation
set (ID1-test + ID3) through its own target, and a rule combines the ``K`` outputs:

* ``any`` (the paper's): member iff at least one attack says member;
* ``majority``: member iff more than half say member;
* ``mean_score``: member iff the mean of the per-attack margins ``score_k - tau_k`` is >= 0.

This module holds the pure parts (the rules and the identity split); training the subsets'
targets is an experiment (:mod:`experiments.side_models.ensemble`).
"""

from __future__ import annotations

import warnings

import numpy as np

RULES = ("any", "majority", "mean_score")


def combine(
    scores: np.ndarray, thresholds: np.ndarray, rule: str = "any"
) -> tuple[np.ndarray, np.ndarray]:
    """Combine ``K`` attacks' scores (K, N) with their thresholds (K,).

    Returns ``(decision (N,) bool, ensemble score (N,) float64)``. The score orders samples
    consistently with the rule: ``any`` -> max margin, ``majority`` -> number of votes
    (+ 0.49 tanh(mean margin) to break ties; member iff >= floor(K/2) + 0.5), ``mean_score``
    -> mean margin (member iff >= 0); margins are ``score_k - tau_k``; ``any``: member iff >= 0.
    """
    s = np.asarray(scores, dtype=np.float64)
    t = np.asarray(thresholds, dtype=np.float64).reshape(-1, 1)
    if s.ndim != 2 or len(t) != len(s):
        raise ValueError(f"scores (K, N) and thresholds (K,) expected, got {s.shape}, {t.shape}")
    margin = s - t
    votes = margin >= 0
    k = len(s)
    if rule == "any":
        return votes.any(0), margin.max(0)
    if rule == "majority":
        n = votes.sum(0)
        return n * 2 > k, n + np.tanh(margin.mean(0)) * 0.49
    if rule == "mean_score":
        m = margin.mean(0)
        return m >= 0, m
    raise ValueError(f"ensemble rule={rule!r}: choose one of {RULES}")


def split_identities(names: list[str], n_subsets: int, seed: int = 0) -> list[list[str]]:
    """``names`` shuffled by ``seed`` into ``n_subsets`` near-equal disjoint groups.

    ``n_subsets`` is clipped so every subset keeps at least two individuals: a softmax target
    trained on one individual gives that individual probability 1 for every photo, known or new,
    so it carries no membership signal. The paper's "one individual per subset" therefore becomes
    two individuals per subset here.
    """
    n = max(1, min(int(n_subsets), len(names) // 2))
    if n < int(n_subsets):
        warnings.warn(
            f"ensemble.n_subsets={n_subsets} clipped to {n}: each subset's target needs at least "
            f"two of the {len(names)} known individuals.",
            stacklevel=2,
        )
    order = list(np.random.default_rng(seed).permutation(sorted(names)))
    return [sorted(order[i::n]) for i in range(n)]
