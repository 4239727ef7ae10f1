"""Reports that read right: AUC in every ROC legend, log-log ROC from the smallest measurable
FPR, coinciding curves labelled together, one named warning per attack, one tpr column, Yeom's
threshold as a loss."""

from __future__ import annotations

import json

import numpy as np
import pytest

from attacks.metrics import auc, roc
from attacks.report import SHOWN, evaluate, roc_lines, same_score_groups, write_attack


def test_roc_lines_label_auc_group_identical_curves_and_stop_at_one_over_n():
    rng = np.random.default_rng(0)
    y = np.array([1] * 40 + [0] * 50)
    s = rng.normal(size=90) + y
    other = rng.normal(size=90) + 2 * y
    curves = {"yeom": roc(s, y), "msp": roc(2 * s + 1, y), "salem": roc(other, y)}
    lines, floor = roc_lines(curves, loglog=False)
    assert [lb.split(" (")[0] for lb, _, _ in lines] == ["yeom = msp", "salem"]
    assert lines[0][0].endswith(f"(AUC {auc(s, y):.3f})") and floor == 0.0
    lines, floor = roc_lines(curves, loglog=True)
    assert floor == pytest.approx(1 / 50)  # 50 non-members: nothing below FPR 0.02 is measurable
    assert all(f.min() >= 1 / 50 - 1e-6 for _, f, _ in lines)


def test_leakage_figure_groups_attacks_with_identical_series():
    rows = [
        {
            "leak/yeom_auc": a,
            "leak/msp_auc": a,
            "leak/yeom_tpr@1%fpr": 0.1,
            "leak/msp_tpr@1%fpr": 0.1,
            "leak/entropy_auc": 0.6,
            "leak/entropy_tpr@1%fpr": 0.0,
        }
        for a in (0.5, 0.7)
    ]
    assert same_score_groups(rows, ("yeom", "yeom_true", "msp", "entropy")) == [
        ["yeom", "msp"],
        ["entropy"],
    ]


def test_warnings_name_their_attack_once_and_yeom_threshold_is_a_loss(tmp_path):
    y = np.array([1] * 30 + [0] * 30)
    loss = np.concatenate([np.linspace(0.1, 1.0, 30), np.linspace(0.8, 3.0, 30)])
    m, sel = evaluate(-loss, y, -0.9, name="yeom")
    assert len(m["warnings"]) == 1 and m["warnings"][0].startswith("attack yeom:")
    assert "recall" not in m and "recall" not in SHOWN and "advantage" in SHOWN
    write_attack(tmp_path, "yeom", m, -loss[sel], y[sel], {"signal": "loss_pred"})
    report = (tmp_path / "report.md").read_text()
    assert "Threshold on the loss `loss_pred`: 0.9 nats" in report
    saved = json.loads((tmp_path / "metrics.json").read_text())["metrics"]
    assert saved["loss_threshold"] == pytest.approx(0.9) and saved["threshold"] == -0.9
