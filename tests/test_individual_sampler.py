"""The individual/encounter batch sampler (datamodules/identity_batches.py): runs of m photos of one
individual from different encounters, seeded; and against pytorch-metric-learning's
MPerClassSampler: ours spreads an individual's photos over its encounters, MPerClassSampler cannot
(it sees labels only), which is why datamodules/identity_batches.py keeps its own."""

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


def _rows(n_ind=3, n_enc=(5, 2, 1), per=3):
    return [
        {"identity": f"w{i}", "group": f"w{i}-e{e}"}
        for i in range(n_ind)
        for e in range(n_enc[i])
        for _ in range(per)
    ]


def test_sampler_gives_runs_of_m_from_different_encounters():
    rows = _rows()
    s = IndividualEncounterSampler(rows, m=4, seed=0)
    idx = list(s)
    assert len(idx) == len(s) == (len(rows) // 4) * 4
    for k in range(0, len(idx), 4):
        run = [rows[i] for i in idx[k : k + 4]]
        assert len({r["identity"] for r in run}) == 1
        n_enc = {"w0": 5, "w1": 2, "w2": 1}[run[0]["identity"]]
        assert len({r["group"] for r in run}) == min(4, n_enc)  # spread over the encounters
    assert idx != list(IndividualEncounterSampler(rows, m=4, seed=1))


def test_sampler_without_groups_takes_distinct_photos():
    rows = [{"identity": "a", "group": ""} for _ in range(6)]
    assert (
        len(set(IndividualEncounterSampler(rows, m=4, seed=0).run("a", np.random.default_rng(0))))
        == 4
    )
