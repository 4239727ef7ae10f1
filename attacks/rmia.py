"""RMIA, the relative membership inference attack of Zarifzadeh, Liu, Mittal and Shokri
(ICML 2024), with its offline correction ``a``; works with one reference model or more.

Signals as in :mod:`attacks.lira` (``cal_phi`` (N, A), ``ref_phi`` (N, K, A), ``ref_in`` (N, K));
the probability is ``p = sigmoid(phi)`` averaged over the ``A`` augmented queries.

* ``Pr(x | theta)``: the target's probability of ``x``.
* ``Pr(x)``: online, the mean over all references; offline, from the OUT references only,
  ``Pr(x) = ((1 + a) * Pr_OUT(x) + (1 - a)) / 2`` (the paper's linear approximation
  ``Pr_IN ~ a * Pr_OUT + (1 - a)`` averaged with ``Pr_OUT``). A row whose references are all IN
  inverts the approximation: ``Pr_OUT = (Pr_IN - (1 - a)) / a`` (clipped to [0, 1]).
* Population samples ``z``: the non-member rows of the fit set (attack-side photos only);
  ``Pr(z)`` is computed like ``Pr(x)`` (same mode, same correction, the rows' own IN flags), so
  the ratios of ``x`` and ``z`` are on the same scale.
* Score of ``x`` = fraction of ``z`` with ``LR(x, z) = (Pr(x|theta)/Pr(x)) / (Pr(z|theta)/Pr(z))
  >= gamma``. Higher = member.
"""

from __future__ import annotations

import numpy as np
from scipy.special import expit

from attacks.base import ThresholdAttack
from attacks.registry import register
from attacks.signals import membership

_EPS = 1e-12


def probability(phi: np.ndarray) -> np.ndarray:
    """``sigmoid(phi)`` averaged over the last (augmentation) axis: (N, A) -> (N,),
    (N, K, A) -> (N, K)."""
    return expit(np.asarray(phi, dtype=np.float64)).mean(-1)


def offline_pr_x(p_out: np.ndarray, a: float) -> np.ndarray:
    """The offline ``Pr(x) = ((1 + a) * Pr_OUT(x) + (1 - a)) / 2`` (any shape)."""
    return 0.5 * ((1.0 + a) * np.asarray(p_out, dtype=np.float64) + (1.0 - a))


def pr_x(ref_p: np.ndarray, ref_in: np.ndarray, offline: bool, a: float) -> np.ndarray:
    """``Pr(x)`` (N,) from reference probabilities (N, K) and IN flags (N, K)."""
    ref_p = np.asarray(ref_p, dtype=np.float64)
    ref_in = np.asarray(ref_in, dtype=bool)
    if not offline:
        return ref_p.mean(1)
    n_out = (~ref_in).sum(1)
    with np.errstate(invalid="ignore", divide="ignore"):
        p_out = np.where(~ref_in, ref_p, 0.0).sum(1) / n_out
        p_in = np.where(ref_in, ref_p, 0.0).sum(1) / ref_in.sum(1)
    inverted = np.clip((p_in - (1.0 - a)) / max(a, _EPS), 0.0, 1.0)
    return offline_pr_x(np.where(n_out > 0, p_out, inverted), a)


def rmia_scores(
    p_target: np.ndarray, p_x: np.ndarray, z_target: np.ndarray, z_ref: np.ndarray, gamma: float
) -> np.ndarray:
    """Fraction (N,) of population samples ``z`` that ``x`` dominates:
    ``mean_z [ (p_target / p_x) / (z_target / z_ref) >= gamma ]``. ``z_*``: (M,)."""
    ratio_x = np.asarray(p_target, dtype=np.float64) / np.maximum(p_x, _EPS)
    ratio_z = np.asarray(z_target, dtype=np.float64) / np.maximum(z_ref, _EPS)
    if len(ratio_z) == 0:
        raise ValueError("rmia needs population samples z (non-member rows of the fit set)")
    thresholds = np.sort(ratio_z * gamma)
    # ratio_x / ratio_z >= gamma  <=>  ratio_z * gamma <= ratio_x
    return np.searchsorted(thresholds, ratio_x, side="right") / len(thresholds)


@register("rmia", steps=("calibrated",))
class RMIA(ThresholdAttack):
    """RMIA score; ``fit`` keeps the fit set's non-member rows as the population ``z`` and
    sweeps the threshold.

    Args:
        offline: OUT references only, with the ``a`` correction (False: all references).
        a: the offline correction parameter in [0, 1].
        gamma: the pairwise likelihood-ratio threshold (>= 1).
        max_refs: use only the first this many references (None: all).
        max_population: at most this many ``z`` (seeded subsample; None: all).
    """

    requires = ("cal_phi", "ref_phi", "ref_in")

    def __init__(
        self,
        offline: bool = True,
        a: float = 0.3,
        gamma: float = 1.0,
        max_refs: int | None = None,
        max_population: int | None = None,
        seed: int = 0,
    ):
        if not 0.0 <= a <= 1.0:
            raise ValueError(f"rmia: a={a} must lie in [0, 1]")
        self.offline, self.a, self.gamma = offline, a, gamma
        self.max_refs, self.max_population, self.seed = max_refs, max_population, seed
        self.z_target: np.ndarray | None = None
        self.z_ref: np.ndarray | None = None

    def _probs(self, signals: dict) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        k = self.max_refs
        return (
            probability(signals["cal_phi"]),
            probability(signals["ref_phi"][:, :k]),
            np.asarray(signals["ref_in"][:, :k], dtype=bool),
        )

    def fit(self, attack_signals: dict):
        """Population ``z`` = non-member rows of ``attack_signals``; then the threshold sweep."""
        pt, pr, rin = self._probs(attack_signals)
        rows = np.flatnonzero(membership(attack_signals) == 0)
        if self.max_population is not None and len(rows) > self.max_population:
            rng = np.random.default_rng(self.seed)
            rows = np.sort(rng.choice(rows, self.max_population, replace=False))
        self.z_target = pt[rows]
        self.z_ref = pr_x(pr[rows], rin[rows], self.offline, self.a)
        return super().fit(attack_signals)

    def raw_score(self, signals: dict) -> np.ndarray:
        if self.z_target is None:
            raise RuntimeError("rmia: call fit() first (it sets the population z)")
        pt, pr, rin = self._probs(signals)
        return rmia_scores(
            pt, pr_x(pr, rin, self.offline, self.a), self.z_target, self.z_ref, self.gamma
        )
