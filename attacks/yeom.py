"""Yeom et al. metric attack: a loss threshold swept on the attack set, frozen for evaluation.

Two registered variants:

* ``yeom`` (identity level): non-member whales have no label in the target's label space, so the
  signal is the predicted-label loss ``loss_pred`` (= -log max softmax; it ranks photos exactly as
  the maximum-softmax baseline does).
* ``yeom_true`` (sample level, Yeom et al.'s attack with the confidence and the label, "C, L"): the
  true-label loss ``loss_true``; every scored row must carry its true label (members are training
  photos, non-members held-out photos of the same individuals).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from attacks.base import ThresholdAttack
from attacks.registry import register


@dataclass
class YeomSettings:
    """Yeom et al. loss threshold.

    Args:
        enabled: run the attack.
        signal: ``loss_pred`` (label-free, identity level) or ``loss_true`` (photo level).
    """

    enabled: bool = True
    signal: str = "loss_pred"


@register("yeom", settings=YeomSettings, cheap="identity", discriminate=True)
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


@register("yeom_true", cheap="sample")
class YeomTrueLabelAttack(YeomAttack):
    """Sample-level Yeom: member iff the true-label loss ``loss_true <= tau`` (nats)."""

    requires = ("loss_true",)

    def __init__(self):
        super().__init__(signal="loss_true")

    def raw_score(self, signals: dict) -> np.ndarray:
        """The negated true-label loss (N,); raises when a row has no true label (NaN loss)."""
        loss = np.asarray(signals["loss_true"], dtype=np.float64)
        missing = int(np.isnan(loss).sum())
        if missing:
            raise ValueError(
                f"yeom_true: {missing} of {len(loss)} rows have no true label (loss_true is NaN); "
                "it is the sample-level attack (held-out photos of known individuals), use `yeom` "
                "(predicted-label loss) at the identity level."
            )
        return -loss
