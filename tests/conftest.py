"""Shared fixtures: signal arrays with known answers for the attack tests."""

from __future__ import annotations

import numpy as np
import pytest


def classifier_signals(member_loss, nonmember_loss, set_name="attack", n_classes=4, seed=0):
    """Classifier signal dict with the given predicted-label losses (nats); logits, max_prob,
    boundary distances and embeddings are built to match them (members: low loss)."""
    rng = np.random.default_rng(seed)
    loss = np.concatenate([member_loss, nonmember_loss]).astype(np.float64)
    n_m, n = len(member_loss), len(loss)
    # class 0 has probability p = exp(-loss); the other classes share 1 - p equally
    p = np.exp(-loss)
    rest = (1 - p) / (n_classes - 1)
    probs = np.concatenate([p[:, None], np.repeat(rest[:, None], n_classes - 1, 1)], 1)
    logits = np.log(np.clip(probs, 1e-12, None)).astype(np.float32)
    role = np.array(["member"] * n_m + ["nonmember"] * (n - n_m))
    member = role == "member"
    embedding = rng.normal(size=(n, 8)).astype(np.float32)
    embedding[member, 0] += 6.0  # members sit near the gallery direction (see gallery rows)
    return {
        "index": np.arange(n),
        "sample_id": np.array([f"{set_name}{i}" for i in range(n)]),
        "file": np.array([f"{set_name}{i}.jpg" for i in range(n)]),
        "identity": np.array([f"id{i % 3}" if i < n_m else f"new{i % 5}" for i in range(n)]),
        "split": np.where(member, "val" if set_name == "attack" else "test", set_name),
        "role": role,
        "set": np.array([set_name] * n),
        "label": np.where(member, 0, -1),
        "logits": logits,
        "loss_pred": loss.astype(np.float32),
        "loss_true": np.where(member, loss, np.nan).astype(np.float32),
        "pred": np.zeros(n, dtype=np.int64),
        "max_prob": p.astype(np.float32),
        "entropy": (-(probs * np.log(np.clip(probs, 1e-12, None))).sum(1)).astype(np.float32),
        "boundary_distance": 1.0 / (loss + 0.05) + rng.normal(0, 1e-6, n),
        "embedding": embedding,
    }


def detector_signals(n: int, k: int, seed: int, side: str) -> dict:
    """Detector signal dict: members get confident, tight boxes; non-members spread, low scores."""
    rng = np.random.default_rng(seed)
    member = np.arange(n) % 2 == 0
    centres = rng.uniform(0.3, 0.7, (n, 1, 2))
    spread = np.where(member[:, None, None], 0.02, 0.2)
    c = centres + rng.normal(0, 1, (n, k, 2)) * spread
    boxes = np.clip(np.concatenate([c - 0.1, c + 0.1], -1), 0, 1).astype(np.float32)
    scores = np.where(member[:, None], rng.uniform(0.8, 1.0, (n, k)), rng.uniform(0.0, 0.5, (n, k)))
    return {
        "index": np.arange(n),
        "boxes": boxes,
        "scores": -np.sort(-scores, axis=1).astype(np.float32),
        "n_boxes": np.full(n, k),
        "role": np.where(member, "member", "nonmember"),
        "set": np.full(n, side),
    }


@pytest.fixture
def make_classifier_signals():
    """Factory: :func:`classifier_signals`."""
    return classifier_signals


@pytest.fixture
def make_detector_signals():
    """Factory: :func:`detector_signals`."""
    return detector_signals


@pytest.fixture
def separable():
    """Attack-set classifier signals whose members (loss 0.01-0.2) and non-members (1-3) separate."""
    return classifier_signals(np.linspace(0.01, 0.2, 20), np.linspace(1.0, 3.0, 20))


@pytest.fixture
def separable_run():
    """A run's classifier signals whose members and non-members separate cleanly: training
    rows (the gallery), an attack set and an evaluation set."""
    train = classifier_signals(np.linspace(0.01, 0.05, 12), [], "train", seed=3)
    train["split"] = np.full(len(train["index"]), "train")
    att = classifier_signals(np.linspace(0.01, 0.2, 20), np.linspace(1.0, 3.0, 20), "attack")
    ev = classifier_signals(np.linspace(0.02, 0.25, 16), np.linspace(1.1, 2.8, 16), "eval", seed=1)
    run = {k: np.concatenate([train[k], att[k], ev[k]]) for k in att}
    run["index"] = np.arange(len(run["index"]))
    return run, att, ev
