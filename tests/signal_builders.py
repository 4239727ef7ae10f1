"""Signal arrays with known answers, in the layout attacks/signals.py loads: classifier and
detector signals, and the calibrated attacks' reference fields."""

from __future__ import annotations

import numpy as np


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
        "side": np.full(n, side),
    }


def with_references(sig: dict, k: int = 4, n_aug: int = 2, seed: int = 0) -> dict:
    """``sig`` plus calibrated-attack fields (attacks/lira.py): each row has a difficulty ``d``;
    OUT references see ``phi ~ d``, IN ones ``d + 3``, the target ``d + 3`` for members and
    ``d`` for non-members (noise 0.3). Each row is IN for the first half of a random order of
    the ``k`` references."""
    rng = np.random.default_rng(seed)
    n = len(sig["role"])
    member = sig["role"] == "member"
    d = rng.normal(0, 2, n)
    ref_in = np.zeros((n, k), bool)
    for i in range(n):
        ref_in[i, rng.permutation(k)[: k // 2]] = True
    ref_phi = d[:, None, None] + 3.0 * ref_in[:, :, None] + rng.normal(0, 0.3, (n, k, n_aug))
    cal = d[:, None] + 3.0 * member[:, None] + rng.normal(0, 0.3, (n, n_aug))
    return {**sig, "cal_phi": cal, "ref_phi": ref_phi, "ref_in": ref_in}
