"""Shadow models (experiments/side_models/shadow.py): the shadow's rows come from the attack
set's individuals only, and a second run serves as the shadow through its attack set."""

from __future__ import annotations

from pathlib import Path

import pytest

from experiments.side_models.shadow import shadow_rows, shadow_run_signals


@pytest.fixture(scope="module")
def run_folder(tmp_path_factory, make_run_folder) -> Path:
    return make_run_folder(tmp_path_factory.mktemp("shadow_run"))


def test_shadow_rows_split_id2_only():
    rows = [
        {"identity": f"w{i}", "split": "attack", "sample_id": f"{i}-{j}"}
        for i in range(5)
        for j in range(4)
    ]
    rows += [{"identity": "t", "split": "train", "sample_id": "t"}]
    sh = shadow_rows(rows, seed=0)
    assert all(r["identity"] != "t" for r in sh)  # never ID1 (nor ID3)
    known = {r["identity"] for r in sh if r["role"] == "member"}
    out = {r["identity"] for r in sh if r["role"] == "nonmember"}
    assert len(known) >= 2 and out and not known & out
    assert {r["split"] for r in sh} == {"shadow_train", "shadow_val", "shadow_out"}


def test_shadow_from_a_second_run_uses_its_attack_set(run_folder, tmp_path):
    sig, info = shadow_run_signals(run_folder, tmp_path)
    assert set(sig["set"]) == {"attack"} and set(sig["role"]) == {"member", "nonmember"}
    assert info["arch"] == "resnet18"
