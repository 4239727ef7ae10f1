"""ART's label-only boundary search, the reference :func:`experiments.side_models.boundary_search.hsj_distances`
follows: ``LabelOnlyDecisionBoundary`` / ``HopSkipJump`` one sample at a time (``label_only``
``method: art``, the tests and ``benchmarks/label_only_vs_art.py``). ART hands float64 arrays to
the model, so :class:`Float32Model` casts inside the wrapper and counts the queries."""

from __future__ import annotations

import itertools
import time
from contextlib import contextmanager

import numpy as np
import torch
from torch import nn

from experiments.side_models.boundary_search import CLIP


class Float32Model(nn.Module):
    """Casts inputs to float32 (ART's HopSkipJump hands float64 arrays) and counts queries
    (images), calls (forward passes) and the seconds spent inside the model."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model
        self.queries = 0
        self.calls = 0
        self.seconds = 0.0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        t0 = time.perf_counter()
        self.queries += int(x.shape[0])
        self.calls += 1
        out = self.model(x.float())
        self.seconds += time.perf_counter() - t0
        return out


def art_classifier(model: nn.Module, x_shape: tuple[int, ...], nb_classes: int):
    """ART ``PyTorchClassifier`` around :class:`Float32Model` (returned too, for its counter)."""
    from art.estimators.classification import PyTorchClassifier

    wrapped = Float32Model(model).eval()
    dev = next(model.parameters()).device
    clf = PyTorchClassifier(
        model=wrapped,
        loss=nn.CrossEntropyLoss(),
        input_shape=tuple(x_shape),
        nb_classes=nb_classes,
        clip_values=CLIP,
        device_type="gpu" if dev.type == "cuda" else "cpu",
    )
    return clf, wrapped


@contextmanager
def seeded_random_states(seed: int):
    """Within the block, ``np.random.RandomState()`` without a seed is seeded (``seed``,
    ``seed + 1``, ...): ART's HopSkipJump draws its random start from such an unseeded state,
    which made the reference distances differ from run to run."""
    original = np.random.RandomState
    counter = itertools.count(seed)

    class Seeded(original):
        def __init__(self, s=None):
            super().__init__(next(counter) if s is None else s)

    np.random.RandomState = Seeded
    try:
        yield
    finally:
        np.random.RandomState = original


def art_distances(
    model: nn.Module,
    x: torch.Tensor,
    nb_classes: int,
    *,
    max_iter: int = 50,
    init_eval: int = 100,
    max_eval: int = 10000,
    init_size: int = 100,
    seed: int = 0,
    batch_size: int = 64,
) -> dict[str, np.ndarray]:
    """Boundary distances with ART's reference, one sample at a time.

    Exactly the distance computation of ART's ``LabelOnlyDecisionBoundary`` (HopSkipJump
    ``generate``, L2 norm of ``x_adv - x``, 0 where the prediction differs from ``y``) with ``y``
    = the target's predicted label. Returns the fields of :func:`hsj_distances`; ``queries`` is
    measured per sample by running samples one by one through the counting wrapper, which also
    gives ``calls`` (N,), ART's forward passes per sample, and ``model_seconds`` (N,), the time
    spent inside the model.
    """
    from art.attacks.evasion.hop_skip_jump import HopSkipJump

    clf, wrapped = art_classifier(model, tuple(x.shape[1:]), nb_classes)
    xn = x.detach().cpu().numpy().astype(np.float32)
    np.random.seed(seed)
    pred = clf.predict(xn, batch_size=batch_size).argmax(1)
    hsj = HopSkipJump(
        clf,
        targeted=False,
        norm=2,
        max_iter=max_iter,
        max_eval=max_eval,
        init_eval=init_eval,
        init_size=init_size,
        batch_size=batch_size,
        verbose=False,
    )
    onehot = np.eye(nb_classes, dtype=np.float32)[pred]
    dist = np.zeros(len(xn))
    queries = np.zeros(len(xn), dtype=np.int64)
    calls = np.zeros(len(xn), dtype=np.int64)
    model_s = np.zeros(len(xn))
    with seeded_random_states(seed):
        for i in range(len(xn)):
            wrapped.queries, wrapped.calls, wrapped.seconds = 0, 0, 0.0
            adv = hsj.generate(x=xn[i : i + 1], y=onehot[i : i + 1])
            queries[i], calls[i], model_s[i] = wrapped.queries, wrapped.calls, wrapped.seconds
            dist[i] = np.linalg.norm((adv - xn[i : i + 1]).reshape(1, -1), axis=1)[0]
    return {
        "distance": dist,
        "queries": queries,
        "calls": calls,
        "model_seconds": model_s,
        "pred": pred,
        "success": dist > 0,
        "iterations": np.full(len(xn), max_iter),
    }


def art_reference_attack(model: nn.Module, x_shape, nb_classes: int, tau: float):
    """ART's ``LabelOnlyDecisionBoundary`` with a given threshold (for ``infer`` decisions)."""
    from art.attacks.inference.membership_inference import LabelOnlyDecisionBoundary

    clf, _ = art_classifier(model, tuple(x_shape), nb_classes)
    return LabelOnlyDecisionBoundary(clf, distance_threshold_tau=float(tau))
