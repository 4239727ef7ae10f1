"""The attack pipeline on a tiny run folder built directly (no fit): the whole `cli.py attack`
with tiny budgets (`cli.py discriminate` is tested in test_discriminate.py; the ensemble and the
shadow models: test_ensemble.py, test_shadow_models.py)."""

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
