"""The shared output guard (never overwrite, atomic writes) and the grouped bootstrap."""

from __future__ import annotations

import numpy as np
import pytest

from attacks.metrics import auc
from attacks.uncertainty import bootstrap_ci
from datamodules.errors import DataError
from experiments import outputs


def test_claim_refuses_existing_path_unless_overwrite(tmp_path):
    target = tmp_path / "out.csv"
    assert outputs.claim(target) == target
    target.write_text("first")
    with pytest.raises(DataError, match="already exists.*--overwrite"):
        outputs.claim(target)
    assert target.read_text() == "first"
    assert outputs.claim(target, overwrite=True) == target


def test_fresh_name_skips_used_names(tmp_path):
    (tmp_path / "a.csv").write_text("x")
    (tmp_path / "a-1.csv").write_text("x")
    assert outputs.fresh_name(tmp_path, "a", ".csv").name == "a-2.csv"


def test_atomic_write_leaves_old_file_on_failure(tmp_path):
    target = outputs.write_text(tmp_path / "f.txt", "old")
    with pytest.raises(RuntimeError), outputs.atomic_path(target) as tmp:
        tmp.write_text("half")
        raise RuntimeError("killed")
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["f.txt"]


def test_bootstrap_resamples_whole_groups():
    # two groups, each all-one-class and constant: any group resample gives the same AUC
    y = np.array([1, 1, 1, 0, 0, 0])
    s = np.array([0.9, 0.9, 0.9, 0.1, 0.1, 0.1])
    point, lo, hi = bootstrap_ci(auc, s, y, np.array(list("aaabbb")), n_boot=50)
    assert point == lo == hi == 1.0


def test_bootstrap_group_interval_wider_than_row_interval():
    rng = np.random.default_rng(1)
    groups = np.repeat(np.arange(20), 10)
    y = (groups < 10).astype(int)
    shift = rng.normal(size=20)[groups]  # a per-individual effect shared by its photos
    s = shift + 0.1 * rng.normal(size=200)
    _, glo, ghi = bootstrap_ci(auc, s, y, groups, n_boot=200)
    _, rlo, rhi = bootstrap_ci(auc, s, y, None, n_boot=200)
    assert ghi - glo > 1.5 * (rhi - rlo)
    assert bootstrap_ci(auc, s, y, groups, n_boot=50, seed=3) == bootstrap_ci(
        auc, s, y, groups, n_boot=50, seed=3
    )
