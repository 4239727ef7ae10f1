"""Open-set baselines scored like attacks: maximum softmax probability, softmax entropy and
nearest-neighbour cosine similarity to the training photos' embeddings."""

from __future__ import annotations

import numpy as np

from attacks.base import ThresholdAttack
from attacks.registry import register


@register(
    "baseline_msp", aliases=("msp",), cheap="identity", discriminate=True, steps=("baseline",)
)
class MaxSoftmaxBaseline(ThresholdAttack):
    """Score = maximum softmax probability (``max_prob``, in [0, 1])."""

    requires = ("max_prob",)
    score_text = "max softmax"

    def raw_score(self, signals: dict) -> np.ndarray:
        return np.asarray(signals["max_prob"], dtype=np.float64)


@register("baseline_entropy", aliases=("entropy",), cheap="identity")
class EntropyBaseline(ThresholdAttack):
    """Score = minus the softmax entropy (``entropy``, nats): confident photos are members."""

    requires = ("entropy",)
    score_text = "minus softmax entropy"

    def raw_score(self, signals: dict) -> np.ndarray:
        return -np.asarray(signals["entropy"], dtype=np.float64)


def nn_cosine_scores(gallery: np.ndarray, queries: np.ndarray, chunk: int = 2048) -> np.ndarray:
    """Max cosine similarity of each query embedding (N, D) to the gallery (M, D): (N,) float64.

    Float32 matrix products over ``chunk`` queries at a time (memory ``chunk * M`` floats)."""
    g = np.asarray(gallery, dtype=np.float32)
    q = np.asarray(queries, dtype=np.float32)
    g = g / (np.linalg.norm(g, axis=1, keepdims=True) + 1e-12)
    q = q / (np.linalg.norm(q, axis=1, keepdims=True) + 1e-12)
    out = np.empty(len(q), dtype=np.float64)
    for i in range(0, len(q), chunk):
        out[i : i + chunk] = (q[i : i + chunk] @ g.T).max(1)
    return out


@register(
    "baseline_nn_cosine",
    aliases=("nn_cosine", "cosine"),
    cheap="identity",
    discriminate="cosine",
    steps=("baseline",),
)
class NearestNeighbourCosine(ThresholdAttack):
    """Score = max cosine similarity of a photo's embedding to the gallery (the target's
    training photos' embeddings, (M, D)); = minus the nearest-neighbour cosine distance."""

    requires = ("embedding",)
    score_text = "max cosine similarity to ID1-train embeddings"

    def __init__(self, gallery: np.ndarray | None = None):
        self.gallery = None if gallery is None else np.asarray(gallery, dtype=np.float32)

    @classmethod
    def for_run(cls, run_signals: dict, **settings):
        """Gallery = embeddings of the run's ``train`` rows (the target's training photos)."""
        return cls(gallery=run_signals["embedding"][run_signals["split"] == "train"], **settings)

    def raw_score(self, signals: dict) -> np.ndarray:
        if self.gallery is None or len(self.gallery) == 0:
            raise ValueError("baseline_nn_cosine needs a gallery of training-photo embeddings")
        return nn_cosine_scores(self.gallery, np.asarray(signals["embedding"]))
