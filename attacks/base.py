"""The one attack protocol, and the threshold attack most signal attacks are.

Every registered attack (whale, detector and baseline alike) is a class with

* ``name`` (set by :func:`attacks.registry.register`, with the attack's other declarations:
  aliases, settings block, leakage-monitor level, ``cli.py attack`` step), ``kind`` (``classifier`` or ``detector``:
  which signal files it reads) and ``requires`` (the signal fields it reads);
* ``for_run(run_signals, **settings)``: build it for one run; ``run_signals`` holds every row of
  the run's signal file, for attacks that need context beyond the attack set (the nearest-neighbour
  baseline's gallery of training photos). The default is ``cls(**settings)``;
* ``fit(attack_signals) -> self``: learn on attack-set (or shadow) rows, which carry ``role``;
* ``score(signals) -> (N,) float64``: membership score, higher = member;
* ``score_threshold``: the decision threshold on ``score`` (member iff ``score >= threshold``),
  frozen after ``fit``.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import numpy as np

from attacks.metrics import best_threshold
from attacks.signals import membership


@runtime_checkable
class Attack(Protocol):
    """What :mod:`experiments` may rely on for any attack in the registry."""

    name: str
    kind: str
    requires: tuple[str, ...]

    def fit(self, attack_signals: dict[str, np.ndarray]) -> Attack: ...

    def score(self, signals: dict[str, np.ndarray]) -> np.ndarray: ...

    @property
    def score_threshold(self) -> float: ...


class RegisteredAttack:
    """Defaults shared by the registered attacks: classifier signals, ``for_run`` = constructor."""

    name = ""
    kind = "classifier"
    requires: tuple[str, ...] = ()
    #: what the score is, in its report's ``info`` (the open-set baselines); "": nothing
    score_text = ""

    @classmethod
    def for_run(cls, run_signals: dict[str, np.ndarray], **settings):
        """The attack configured with ``settings`` for a run whose signals are ``run_signals``."""
        return cls(**settings)


class ThresholdAttack(RegisteredAttack):
    """A fixed score of the signals; the threshold is swept on the attack set for accuracy.

    Subclasses define :meth:`raw_score` (N,) (higher = member).
    """

    threshold: float | None = None

    def raw_score(self, signals: dict[str, np.ndarray]) -> np.ndarray:
        raise NotImplementedError

    def fit(self, attack_signals: dict[str, np.ndarray]):
        """Sweep the threshold on the attack rows (members vs non-members) for best accuracy."""
        self.threshold, _ = best_threshold(self.score(attack_signals), membership(attack_signals))
        return self

    def score(self, signals: dict[str, np.ndarray]) -> np.ndarray:
        """Membership score (N,) float64, higher = member."""
        return np.asarray(self.raw_score(signals), dtype=np.float64)

    @property
    def score_threshold(self) -> float:
        """Threshold on ``score``: member iff ``score >= score_threshold``."""
        if self.threshold is None:
            raise RuntimeError(f"attack {self.name!r}: call fit() before reading its threshold")
        return self.threshold
