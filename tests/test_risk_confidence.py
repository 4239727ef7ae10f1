"""Per-photo risk ranks and the by-individual confidence intervals of the report."""

from __future__ import annotations

import csv
import re

import numpy as np

from attacks.metric_intervals import balanced_accuracy, bootstrap_groups, ci_summary
from attacks.report_tables import ci_table
from attacks.risk import most_exposed, ranks, risk_rows, write_risk_csv


def test_ranks_put_the_highest_score_first_and_share_ties():
    np.testing.assert_array_equal(ranks(np.array([0.1, 0.9, 0.5, 0.9])), [4, 1, 3, 1])


def test_risk_csv_and_most_exposed(tmp_path):
    meta = {
        "sample_id": np.array(["a", "b", "c"]),
        "file": np.array(["a.jpg", "b.jpg", "c.jpg"]),
        "identity": np.array(["w1", "w1", "w2"]),
        "role": np.array(["member", "member", "nonmember"]),
    }
    rows = risk_rows(
        "identity", meta, {"x": np.array([3.0, 1.0, 2.0]), "y": np.array([2.0, np.nan, 1.0])}
    )
    assert rows[0]["x_rank"] == 1 and rows[1]["y_rank"] == "" and rows[2]["y_rank"] == 2
    assert float(rows[0]["exposure"]) == 0.0  # first under both attacks
    path = write_risk_csv(tmp_path / "risk.csv", rows)
    back = list(csv.DictReader(path.open()))
    assert [r["file"] for r in back] == ["a.jpg", "b.jpg", "c.jpg"]
    md = most_exposed(rows, top=1)
    cells = [[c.strip() for c in ln.split("|")[1:-1]] for ln in md.splitlines() if ln[:2] == "| "]
    assert ["a.jpg", "w1", "member", "0.000"] in cells and ["w1", "2", "0.500"] in cells
    # the non-member c.jpg is no exposed member: it is listed apart, as a false alarm
    exposed, alarms = md.split("false alarms**")
    assert "c.jpg" not in exposed and ["c.jpg", "w2", "nonmember", "0.750"] in cells
    assert "a.jpg" not in alarms


def test_ci_summary_counts_and_groups():
    y = np.array([1, 1, 1, 0, 0, 0])
    s = np.array([0.9, 0.8, 0.4, 0.5, 0.2, 0.1])
    ident = np.array(["a", "a", "b", "c", "d", "d"])
    assert balanced_accuracy(s, y, 0.45) == (2 / 3 + 2 / 3) / 2
    r = ci_summary(s, y, 0.45, ident, n_boot=200)
    assert abs(r["auc"][0] - 8 / 9) < 1e-12  # sklearn: exact in float64
    assert r["auc"][1] <= r["auc"][0] <= r["auc"][2]
    assert (r["n_members"], r["n_nonmembers"], r["n_individuals"]) == (3, 3, 4)
    assert r["min_fpr"] == 1 / 3
    table = ci_table({}, {"x": r})
    assert re.search(r"\| x +\| 0\.889 \[", table) and "n/a¹ (n=3)" in table
    # an individual with both classes (the sample level) is resampled as two groups
    mixed = bootstrap_groups(np.array(["a", "a", "b"]), np.array([1, 0, 0]))
    assert list(mixed) == ["a|member", "a|nonmember", "b|nonmember"]
    assert np.isfinite(ci_summary(s, y, 0.45, np.array(["a"] * 6), n_boot=50)["auc"][1])
