"""The ensemble attack: its rules' truth tables and scores (attacks/ensemble.py), the identity
subsets, the job-array tasks that train the subsets' targets, and the rules' intervals and risk
columns in the reports (experiments/side_models/ensemble.py)."""

from __future__ import annotations

import csv
import itertools
import re
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

import experiments.side_models.ensemble as ens
from attacks.ensemble import combine, split_identities
from attacks.signals import membership, subset
from experiments.attack_steps.results import intervals, risk_section
from experiments.settings.attack import AttackSettings


@pytest.fixture(scope="module")
def run_folder(tmp_path_factory, make_run_folder) -> Path:
    return make_run_folder(tmp_path_factory.mktemp("ensemble_run"))


def test_ensemble_rule_truth_tables():
    taus = np.array([0.5, 0.5, 0.5])
    for votes in itertools.product([0, 1], repeat=3):
        scores = np.array(votes, dtype=float)[:, None] * 0.4 + 0.3  # 0.7 (yes) or 0.3 (no)
        any_, _ = combine(scores, taus, "any")
        maj, _ = combine(scores, taus, "majority")
        mean, _ = combine(scores, taus, "mean_score")
        assert bool(any_[0]) == (sum(votes) >= 1)
        assert bool(maj[0]) == (sum(votes) >= 2)
        assert bool(mean[0]) == (np.mean(np.array(votes) * 0.4 - 0.2) >= 0)
    # mean_score uses margins, not votes: one confident yes outweighs two weak no's
    dec, _ = combine(np.array([[0.9], [0.45], [0.45]]), taus, "mean_score")
    assert dec[0]
    dec, _ = combine(np.array([[0.9], [0.45], [0.45]]), taus, "majority")
    assert not dec[0]
    with pytest.raises(ValueError, match="rule"):
        combine(np.zeros((2, 1)), np.zeros(2), "median")


def test_ensemble_majority_even_k_needs_more_than_half():
    scores = np.array([[1.0], [1.0], [0.0], [0.0]])
    dec, _ = combine(scores, np.full(4, 0.5), "majority")
    assert not dec[0]


def test_split_identities_down_to_two_per_subset():
    names = [f"w{i}" for i in range(7)]
    groups = split_identities(names, 3, seed=1)
    assert sorted(sum(groups, [])) == sorted(names) and len(groups) == 3
    assert max(map(len, groups)) - min(map(len, groups)) <= 1
    # a one-individual softmax target carries no signal: subsets keep at least two individuals
    with pytest.warns(UserWarning, match="n_subsets=100 clipped to 3"):
        smallest = split_identities(names, 100)
    assert len(smallest) == 3 and all(len(g) >= 2 for g in smallest)
    assert sorted(sum(smallest, [])) == sorted(names)


def test_ensemble_scores_order_like_decisions():
    """The ensemble score crosses its cut exactly where the rule's decision flips, even with
    saturated margins (the ROC of the combined score matches the decisions)."""
    rng = np.random.default_rng(0)
    for k in (1, 2, 3, 4, 5):
        scores = rng.normal(0, 50, (k, 400))
        taus = np.zeros(k)
        for rule, cut in (("any", 0.0), ("mean_score", 0.0), ("majority", k // 2 + 0.5)):
            dec, sc = combine(scores, taus, rule)
            np.testing.assert_array_equal(sc >= cut, dec)


@pytest.mark.slow
def test_ensemble_job_array_tasks_then_combine(run_folder, tmp_path):
    """Each array task trains one subset's target and stops; the combining job reuses them."""
    pytest.importorskip("art")
    from experiments.commands.attack import main  # what `python cli.py attack ...` runs

    out = "attacks_array"
    common = ["--run", str(run_folder), "--output", out, "--ensemble.epochs", "1"]
    edir = run_folder / out / "ensemble"
    for k in (0, 1):  # what `#SBATCH --array=0-1` runs, one task each
        assert main(common + ["--ensemble.subsets", f"[{k}]"]) == {}
        assert (edir / f"subset_{k:03d}" / "signals.npz").is_file()
    assert not (run_folder / out / "summary.json").exists()  # tasks run no other attack
    stamps = {p: p.stat().st_mtime_ns for p in edir.glob("subset_*/signals.npz")}
    off = ["--yeom.enabled", "false", "--salem.enabled", "false", "--salem.shadow.enabled"]
    off += ["false", "--label_only.enabled", "false", "--baselines", "false"]
    res = main(common + off + ["--ensemble.reuse", "true"])
    assert {"ensemble_any", "ensemble_majority", "ensemble_mean_score"} <= set(res)
    assert {p: p.stat().st_mtime_ns for p in stamps} == stamps  # reused, not retrained
    with pytest.raises(ValueError, match="out of range.*--array=0-1"):
        main(common + ["--ensemble.subsets", "[2]"])


def test_ensemble_rules_get_intervals_and_risk_columns(monkeypatch, tmp_path, separable_run):
    """Every ensemble rule gets bootstrap intervals by individual and its score and rank in
    risk.csv; scores are matched to the evaluation rows by manifest index, not by position."""
    sig, _, ev = separable_run
    order = ev["index"][::-1]  # the ensemble's rows in another order than the signal file's
    back = {int(i): k for k, i in enumerate(ev["index"])}
    rows = np.array([back[int(i)] for i in order])
    loss = ev["loss_pred"][rows].astype(np.float64)
    scores = np.stack([-loss, -loss + 0.01])
    res = {
        "rules": {r: dict(zip(("decision", "score"), combine(scores, [-0.5, -0.5], r))) for r in
                  ("any", "majority", "mean_score")},
        "eval_index": order,
        "is_member": membership(ev)[rows],
        "thresholds": np.array([-0.5, -0.5]),
        "subsets": [],
        "n_subsets": 2,
        "base": "yeom",
        "train_seconds": 1.0,
        "combine_seconds_per_sample": 0.0,
        "single": {"score": -ev["loss_pred"].astype(np.float64), "threshold": -0.5,
                   "is_member": membership(ev), "identity": ev["identity"]},
    }  # fmt: skip
    monkeypatch.setattr(ens, "run_ensemble", lambda *a, **k: res)
    s = AttackSettings()
    s.calibrated.n_boot = 50
    ctx = SimpleNamespace(
        config={"trainer": {"max_epochs": 1}},
        data_setting=lambda *a: a[-1],
        model_args={"arch": "resnet18"},
    )
    scored: dict = {}
    out = ens.ensemble_attacks(ctx, sig, s, tmp_path, 1e-3, log=lambda *a: None, scored=scored)
    names = {"ensemble_any", "ensemble_majority", "ensemble_mean_score"}
    assert set(out) == set(scored) == names
    for name in names:
        ci = scored[name][4]["ci"]
        assert ci["auc"][0] == 1.0  # separable, so the rows were matched up right
        for k in ("auc", "tpr@1%fpr", "tpr@0.1%fpr", "balanced_acc"):
            assert ci[k][1] <= ci[k][0] <= ci[k][2]
    report = (tmp_path / "ensemble" / "report.md").read_text()
    assert "bootstrap by individual" in report
    assert re.search(r"\| ensemble `majority` +\| 1\.000 \[", report)
    results = {k: m for k, (m, _) in out.items()}
    md = risk_section(results, scored, intervals(scored, 50, 0), tmp_path, top=10)
    assert re.search(r"\| ensemble_mean_score +\| 1\.000 \[", md)
    got = list(csv.DictReader((tmp_path / "risk.csv").open()))
    assert len(got) == len(subset(sig, "eval")["index"])
    first = min(got, key=lambda r: -float(r["ensemble_any"]))
    assert first["ensemble_any_rank"] == "1" and first["role"] == "member"
    assert {f"{n}_rank" for n in names} <= set(got[0])
