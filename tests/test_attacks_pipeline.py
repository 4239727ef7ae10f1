"""The attack pipeline on a tiny run folder built directly (no fit): the whole `cli.py attack`
with tiny budgets (`cli.py discriminate` is tested in test_discriminate.py)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import yaml
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

pytest.importorskip("art")


@pytest.fixture(scope="module")
def run_folder(tmp_path_factory, make_run_folder) -> Path:
    return make_run_folder(tmp_path_factory.mktemp("attack_run"))


@pytest.mark.slow
def test_attack_command_writes_every_report(run_folder, tmp_path):
    from cli import main

    cfg = tmp_path / "a.yaml"
    cfg.write_text(
        yaml.safe_dump(
            {
                "salem": {
                    "epochs": 50,
                    "shadow": {"enabled": True, "epochs": 1, "arch": "resnet18"},
                },
                "label_only": {
                    "max_iter": 1,
                    "init_eval": 4,
                    "max_eval": 8,
                    "init_size": 5,
                    "max_per_role": 4,
                },
                "ensemble": {"n_subsets": 2, "epochs": 1},
            }
        )
    )
    # the run's loggers, as a fit with a TensorBoard and a CSV logger saves them
    run_cfg = yaml.safe_load((run_folder / "config.yaml").read_text())
    run_cfg["trainer"]["logger"] = [
        {"class_path": f"pytorch_lightning.loggers.{c}", "init_args": {"save_dir": "x"}}
        for c in ("TensorBoardLogger", "CSVLogger")
    ]
    (run_folder / "config.yaml").write_text(yaml.safe_dump(run_cfg))
    main(["attack", "--run", str(run_folder), "--config", str(cfg)])
    att = run_folder / "attacks"
    for name in (
        "yeom",
        "salem",
        "salem_shadow",
        "label_only",
        "baseline_msp",
        "baseline_nn_cosine",
        "ensemble/any",
        "ensemble/majority",
        "ensemble/mean_score",
    ):
        for f in ("metrics.json", "report.md", "roc.png", "roc_loglog.png", "hist.png"):
            assert (att / name / f).is_file(), f"{name}/{f}"
        m = json.loads((att / name / "metrics.json").read_text())["metrics"]
        assert m["n_members"] == m["n_nonmembers"]  # balanced evaluation
        for k in ("acc", "auc", "fpr", "tpr@1%fpr", "baks", "baus", "gmean", "auroc_new"):
            assert k in m
    summary = json.loads((att / "summary.json").read_text())
    assert "label_only" in summary["metrics"]
    assert summary["info"]["label_only"]["queries_mean"] > 0
    report = (att / "report.md").read_text()
    assert "Figure 6" in report and "Table 4" in report
    assert "Table 6" in (att / "ensemble" / "report.md").read_text()
    risk_cols = (att / "risk.csv").read_text().splitlines()[0].split(",")
    assert {"yeom", "ensemble_any", "ensemble_any_rank", "ensemble_majority"} <= set(risk_cols)
    ci_rows = report.split("## Confidence intervals", 1)[1].splitlines()
    assert any(re.match(r"\| ensemble_any +\| \d", ln) for ln in ci_rows)  # has intervals
    assert not re.search(r"\bnan\b", report)
    drawn = [a for f in summary["figures"].values() for a in f["attacks"]]
    assert sorted(drawn) == sorted(summary["metrics"])  # the ROC figures show every attack
    # results went through the run's loggers: TensorBoard in the run folder, CSV beside the reports
    tags = set()
    for ev in run_folder.glob("events.out.tfevents.*"):
        acc = EventAccumulator(str(ev))
        acc.Reload()
        tags |= set(acc.Tags()["scalars"]) | set(acc.Tags()["images"])
    assert {"attack_yeom/auc", "attack_ensemble_any/auc", "target/train_acc"} <= tags
    assert not any(t.endswith(("/n_members", "/n_nonmembers")) for t in tags)  # no counts
    assert {"attack_yeom/roc", "attacks/roc_loglog"} <= tags
    assert "hp_metric" not in tags
    header = (att / "csv" / "metrics.csv").read_text().splitlines()[0].split(",")
    assert {"attack_yeom/auc", "attack_label_only/auc"} <= set(header)
    assert (run_folder / "signals" / "final.npz").is_file()


def test_shadow_rows_split_id2_only():
    from experiments.side_models.shadow import shadow_rows

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
    from experiments.side_models.shadow import shadow_run_signals

    sig, info = shadow_run_signals(run_folder, tmp_path)
    assert set(sig["set"]) == {"attack"} and set(sig["role"]) == {"member", "nonmember"}
    assert info["arch"] == "resnet18"


@pytest.mark.slow
def test_ensemble_job_array_tasks_then_combine(run_folder, tmp_path):
    """Each array task trains one subset's target and stops; the combining job reuses them."""
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


@pytest.mark.parametrize(
    "extra",
    [{"dropout_defense": True}, {"dp": {"noise_multiplier": 1.0}}],
    ids=["dropout_defense", "dp"],
)
def test_attack_rebuilds_defended_targets(tmp_path, extra, make_run_folder):
    """A dropout-defense or DP run's checkpoint loads into the same network (the dropout head,
    the Opacus wrapping) and gives signals with embeddings."""
    from experiments.run.folder import RunContext, final_signals

    run = make_run_folder(tmp_path, n_individuals=9, model_args=extra)
    ctx = RunContext.open(run, "cpu")
    sig, _ = final_signals(ctx)
    assert len(sig["index"]) == len(ctx.rows)
    assert sig["embedding"].shape[0] == len(ctx.rows)


def test_a_run_saved_with_flat_data_settings_keeps_its_image_size(run_folder, tmp_path):
    """Run folders written before the data settings were grouped keep working: their flat
    ``data.init_args.image_size`` is read, not replaced by a default."""
    import shutil

    from experiments.run.folder import RunContext

    old = tmp_path / "old_run"
    shutil.copytree(run_folder, old, ignore=shutil.ignore_patterns("attacks", "signals"))
    cfg = yaml.safe_load((old / "config.yaml").read_text())
    loader = cfg["data"]["init_args"].pop("loader")
    cfg["data"]["init_args"].update(loader)  # the old flat layout
    (old / "config.yaml").write_text(yaml.safe_dump(cfg))
    ctx = RunContext.open(old)
    assert ctx.image_size == RunContext.open(run_folder).image_size == loader["image_size"]


def test_ensemble_rules_get_intervals_and_risk_columns(monkeypatch, tmp_path, separable_run):
    """Every ensemble rule gets bootstrap intervals by individual and its score and rank in
    risk.csv; scores are matched to the evaluation rows by manifest index, not by position."""
    import csv
    from types import SimpleNamespace

    import numpy as np

    import experiments.side_models.ensemble as ens
    from attacks.ensemble import combine
    from attacks.signals import membership, subset
    from experiments.attack_steps.results import intervals, risk_section
    from experiments.settings.attack import AttackSettings

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
