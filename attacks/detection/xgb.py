"""XGBoost attack on the padded ``[x0, y0, x1, y1, score]`` vectors (paper, section 3.2)."""

from __future__ import annotations

import numpy as np

from attacks.detection.common import DetectorAttack, shadow_split, validation_metrics
from attacks.detection.features import padded_vectors
from attacks.registry import register
from attacks.signals import membership, select


@register("det_xgb")
class DetXGBAttack(DetectorAttack):
    """Gradient-boosted trees (max depth 5, 450 estimators) on :func:`padded_vectors`.

    ``fit`` trains on the shadow model's in/out signals (balanced; ``val_fraction`` held out for
    the "Val Acc" column); ``score`` returns P(member) (N,) for any detector signals.

    Args:
        max_depth, n_estimators: the paper's tree settings.
        max_boxes: padded length K in boxes (None: the signal file's K). Target and shadow are
            padded to the same K.
        val_fraction: share of the shadow signals held out for validation.
        seed: split and XGBoost seed.
        n_jobs: XGBoost threads (None: all cores).
    """

    def __init__(
        self,
        max_depth: int = 5,
        n_estimators: int = 450,
        max_boxes: int | None = None,
        val_fraction: float = 0.2,
        seed: int = 0,
        n_jobs: int | None = None,
    ):
        self.max_depth, self.n_estimators = max_depth, n_estimators
        self.max_boxes, self.val_fraction, self.seed, self.n_jobs = (
            max_boxes,
            val_fraction,
            seed,
            n_jobs,
        )
        self.model = None
        self.val_metrics: dict = {}

    def _x(self, signals: dict) -> np.ndarray:
        k = self.max_boxes or signals["scores"].shape[1]
        return padded_vectors(signals["boxes"], signals["scores"], signals.get("n_boxes"), k)

    def fit(self, shadow_signals: dict) -> DetXGBAttack:
        from xgboost import XGBClassifier

        if self.max_boxes is None:
            self.max_boxes = int(shadow_signals["scores"].shape[1])
        tr, va = shadow_split(shadow_signals, self.val_fraction, self.seed)
        train = select(shadow_signals, tr)
        self.model = XGBClassifier(
            max_depth=self.max_depth,
            n_estimators=self.n_estimators,
            random_state=self.seed,
            n_jobs=self.n_jobs,
            tree_method="hist",
            eval_metric="logloss",
        )
        self.model.fit(self._x(train), membership(train))
        if len(va):
            val = select(shadow_signals, va)
            self.val_metrics = validation_metrics(self, val)
        return self

    def score(self, signals: dict) -> np.ndarray:
        """P(member) per image (N,)."""
        if self.model is None:
            raise RuntimeError("fit the attack first")
        return self.model.predict_proba(self._x(signals))[:, 1]
