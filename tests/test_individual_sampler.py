"""The individual/encounter batch sampler against pytorch-metric-learning's MPerClassSampler:
ours spreads an individual's photos over its encounters, MPerClassSampler cannot (it sees labels
only), which is why datamodules/identity_batches.py keeps its own."""

from __future__ import annotations

import numpy as np
import pytest

from datamodules.identity_batches import IndividualEncounterSampler


def lopsided_rows() -> list[dict]:
    """Three individuals, each with one encounter of 9 photos and one of a single photo."""
    rows = []
    for ind in range(3):
        for k in range(10):
            rows.append({"identity": f"w{ind}", "group": f"w{ind}-{'big' if k < 9 else 'one'}"})
    return rows


def runs(indices: list[int], m: int) -> list[list[int]]:
    return [indices[k : k + m] for k in range(0, len(indices) - m + 1, m)]


def test_ours_takes_each_run_from_different_encounters():
    rows = lopsided_rows()
    sampler = IndividualEncounterSampler(rows, m=2, seed=0)
    order = list(sampler)
    assert len(order) == len(rows)
    for run in runs(order, 2):
        assert len({rows[i]["identity"] for i in run}) == 1
        assert len({rows[i]["group"] for i in run}) == 2  # both encounters, every time


def test_mperclass_sampler_cannot_keep_encounters_apart(monkeypatch):
    samplers = pytest.importorskip("pytorch_metric_learning.samplers")
    common = pytest.importorskip("pytorch_metric_learning.utils.common_functions")
    monkeypatch.setattr(common, "NUMPY_RANDOM", np.random.RandomState(0))
    rows = lopsided_rows()
    labels = np.array([int(r["identity"][1:]) for r in rows])
    theirs = samplers.MPerClassSampler(labels, m=2, length_before_new_iter=60)
    order = [int(i) for i in theirs]
    assert len(order) == 60  # its epoch is length_before_new_iter, not the 30 rows
    same = [run for run in runs(order, 2) if len({rows[i]["group"] for i in run}) == 1]
    # it draws 2 of an individual's 10 photos uniformly: both from the big encounter 80% of
    # the time, although every individual has a second encounter
    assert len(same) >= 10
