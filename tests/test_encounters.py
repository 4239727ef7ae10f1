"""Encounters across commands: one encounter key (datamodules/manifest.py) for every command, and
the attack report's figures by seen and new encounter (experiments/attack_steps/results.py)."""

from __future__ import annotations

import numpy as np


def test_encounter_figures_split_member_photos_by_encounter():
    from attacks.report import encounter_table
    from experiments.attack_steps.results import encounter_figures

    rows = [
        {"identity": "x", "group": "a", "split": "train"},
        {"identity": "x", "group": "a", "split": "test"},  # seen encounter
        {"identity": "y", "group": "a", "split": "test"},  # y's own "a": held out (names repeat)
        {"identity": "y", "group": "a", "split": "test"},
        {"identity": "n", "group": "n1", "split": "eval"},
        {"identity": "n", "group": "n2", "split": "eval"},
    ]
    ev = {"index": np.arange(1, 6), "role": np.array(["member"] * 3 + ["nonmember"] * 2)}
    scores = np.array([0.9, 0.2, 0.6, 0.5, 0.1])
    f = encounter_figures(scores, ev, rows)
    assert (f["n_seen_encounter_photos"], f["n_new_encounter_photos"]) == (1, 2)
    assert f["auc_seen_encounter"] == 1.0  # 0.9 above both non-members
    assert f["auc_new_encounter"] == 0.75  # 0.2 and 0.6 against 0.5 and 0.1: 3 of 4 pairs
    assert f["auc_encounter_level"] == 0.5  # encounter y/a mean 0.4: above n2 (0.1), below n1
    assert "held out" in encounter_table({"yeom": f})
    assert encounter_figures(scores, {"role": ev["role"]}, rows) == {}


def test_one_encounter_key_for_every_command():
    from types import SimpleNamespace

    from datamodules.manifest import encounter_key
    from experiments.commands.discriminate import run_encounters

    rows = [
        {"identity": "x", "group": "a", "file": "x/1.jpg"},
        {"identity": "y", "group": "a", "file": "y/1.jpg"},  # group names repeat across whales
        {"identity": "y", "group": "", "file": "y/2.jpg"},  # no group: the photo alone
        {"identity": "y", "group": "", "file": "y/3.jpg"},  # same folder, not the same encounter
    ]
    assert [encounter_key(r) for r in rows] == ["x/a", "y/a", "y/y/2.jpg", "y/y/3.jpg"]
    ctx = SimpleNamespace(rows=rows)
    got = run_encounters(ctx, {"index": np.array([3, 0, 2])})
    assert got.tolist() == ["y/y/3.jpg", "x/a", "y/y/2.jpg"]
