"""``cli.py reid --target``: a target run's attack scores and the open-set score of the population
embedding on the same encounters (experiments/known_new/reid_target.py), on a hand-made run folder and an
embedding stand-in whose embeddings are known."""

from __future__ import annotations

import csv
import hashlib
import json

import numpy as np
import pytest

from attacks.metrics import auc
from datamodules.errors import DataError
from datamodules.splits import COLUMNS
from experiments.known_new.reid_target import attack_scores, compare


class FakeEmbedding:
    """Embeds a photo as its whale's axis (known whales exactly; others orthogonal)."""

    def __init__(self, whales: list[str]):
        self.axis = {w: i for i, w in enumerate(whales)}
        self.dim = len(whales) + 8

    def embed(self, reader, root, rows, tta=True):
        out = np.zeros((len(rows), self.dim), np.float32)
        for i, r in enumerate(rows):
            out[i, self.axis[r["identity"]]] = 1.0
            out[i, -1 - (i % 8)] = 0.1  # a little photo noise
        return out

    def reference(self, tta=True):
        ref = np.zeros((4, self.dim), np.float32)
        ref[np.arange(4), -1 - np.arange(4)] = 1.0
        return ref, np.asarray(["r0", "r1", "r2", "r3"])


def target_run(tmp_path, scores: dict[str, float]):
    """A run folder: 3 known whales (train + held-out test encounter), 3 new whales (eval)."""
    rows = []
    for w in ("k0", "k1", "k2"):
        for split, enc, role, set_ in (("train", "e0", "member", "train"),
                                       ("test", "e1", "member", "eval")):  # fmt: skip
            for f in range(2):
                rows.append({"sample_id": f"{w}-{enc}-{f}", "catalog": "main", "file": f"{w}/{f}",
                             "identity": w, "group": enc, "id_set": "ID1", "split": split,
                             "role": role, "set": set_, "label": 0, "aug": ""})  # fmt: skip
    for w in ("n0", "n1", "n2"):
        for f in range(2):
            rows.append({"sample_id": f"{w}-e0-{f}", "catalog": "main", "file": f"{w}/{f}",
                         "identity": w, "group": "e0", "id_set": "ID3", "split": "eval",
                         "role": "nonmember", "set": "eval", "label": -1, "aug": ""})  # fmt: skip
    (tmp_path / "config.yaml").write_text("model: {}\n")
    with (tmp_path / "split_manifest.csv").open("w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=COLUMNS)
        w.writeheader()
        w.writerows(rows)
    digest = hashlib.sha256((tmp_path / "split_manifest.csv").read_bytes()).hexdigest()
    header = {"roots": {"main": str(tmp_path)}, "hash": digest}
    (tmp_path / "split_manifest.json").write_text(json.dumps(header))
    att = tmp_path / "attacks" / "yeom"
    att.mkdir(parents=True)
    ids = [r["sample_id"] for r in rows if r["set"] == "eval"]
    np.savez(att / "scores.npz", score=np.asarray([scores[i[:2]] for i in ids]),
             sample_id=np.asarray(ids), is_member=np.zeros(len(ids)))  # fmt: skip
    return tmp_path


def test_same_encounters_both_sides(tmp_path):
    # known k0 0.1 is below every new encounter, and new n0 0.9 above every known one
    scores = {"k0": 0.1, "k1": 0.8, "k2": 0.7, "n0": 0.9, "n1": 0.2, "n2": 0.3}
    run = target_run(tmp_path, scores)
    fake = FakeEmbedding(["k0", "k1", "k2", "n0", "n1", "n2"])
    res = compare(fake, run, statistic="zscore", n_boot=50)
    r = res["attacks"]["yeom"]
    assert r["n_known_encounters"] == 3 and r["n_new_encounters"] == 3
    # by hand: encounter means are the photo scores; known > new in 4 of the 9 pairs
    # (0.8 > 0.2, 0.3 and 0.7 > 0.2, 0.3)
    assert r["attack"][0] == pytest.approx(auc(np.array([0.1, 0.8, 0.7, 0.9, 0.2, 0.3]),
                                               np.array([1, 1, 1, 0, 0, 0])))  # fmt: skip
    assert r["attack"][0] == pytest.approx(4 / 9)
    assert r["open_set"][0] == pytest.approx(1.0)  # known whales match their catalog exactly
    assert r["difference"][0] == pytest.approx(1.0 - 4 / 9)
    assert r["difference"][1] <= r["difference"][0] <= r["difference"][2]


def test_a_target_without_attack_scores_is_one_line(tmp_path):
    (tmp_path / "attacks").mkdir()
    with pytest.raises(DataError, match="no attacks/\\*/scores.npz; run `python cli.py attack"):
        attack_scores(tmp_path)
