"""The grouped bootstrap (attacks/group_bootstrap.py): whole groups resampled, intervals by
individual wider than by row, seeded, and several metrics over one resampling."""

from __future__ import annotations

import numpy as np

from attacks.group_bootstrap import bootstrap_ci, bootstrap_cis
from attacks.metrics import auc


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


def test_several_metrics_over_one_resampling_equal_each_alone():
    rng = np.random.default_rng(2)
    groups = rng.integers(0, 15, 120)
    y = (groups < 7).astype(int)
    s = rng.normal(size=120) + 0.5 * y
    metrics = {"auc": auc, "tpr": lambda a, b: float((a[b == 1] >= 0.2).mean())}
    together = bootstrap_cis(metrics, s, y, groups, n_boot=150, seed=4)
    for name, metric in metrics.items():
        assert together[name] == bootstrap_ci(metric, s, y, groups, n_boot=150, seed=4)
