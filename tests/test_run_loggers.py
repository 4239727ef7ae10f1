"""The run's loggers (experiments/run/loggers.py) as Lightning users expect them, read back from
the event files: the attack results once, through ``log_hyperparams``, in TensorBoard's HPARAMS
tab (no single-point count scalars) and in the CSV logger's metrics. (The monitor's TensorBoard
image and scalars: tests/test_leakage_monitor.py.)"""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from tensorboard.plugins.hparams import plugin_data_pb2

import cli
from experiments.run.loggers import RunLoggers
from tests.cli_runs import accumulators


def hparams_of(run: Path) -> tuple[dict, set]:
    """``(params, metric tags)`` of the hparams plugin data in ``run``'s event files."""
    params, metrics = {}, set()
    for acc in accumulators(run):
        for tag, content in acc.PluginTagToContent("hparams").items():
            data = plugin_data_pb2.HParamsPluginData.FromString(content)
            if tag == "_hparams_/session_start_info":
                for k, v in data.session_start_info.hparams.items():
                    params[k] = v.WhichOneof("kind") and getattr(v, v.WhichOneof("kind"))
            if tag == "_hparams_/experiment":
                metrics |= {m.name.tag for m in data.experiment.metric_infos}
    return params, metrics


def test_run_loggers_send_final_results_to_the_hparams_tab(tmp_path):
    run = tmp_path / "logs" / "run" / "version_0"
    run.mkdir(parents=True)
    cfg = {
        "trainer": {
            "logger": [
                {"class_path": "pytorch_lightning.loggers.TensorBoardLogger"},
                {"class_path": "pytorch_lightning.loggers.CSVLogger"},
            ]
        }
    }
    loggers = RunLoggers.for_run(cfg, run, tmp_path / "out")
    params = {"arch": "resnet18", "image_size": 32, "split_protocol": "photo", "seed": 0}
    loggers.hparams(params, {"attack_yeom/auc": 0.7, "attack_yeom/tpr@1%fpr": float("nan")})
    loggers.close()
    got, metrics = hparams_of(run)
    assert got["arch"] == "resnet18" and got["image_size"] == 32
    assert got["split_protocol"] == "photo"
    assert metrics == {"attack_yeom/auc"}  # NaN is no result
    tags = {t for acc in accumulators(run) for t in acc.Tags()["scalars"]}
    assert tags == {"attack_yeom/auc"}
    header = (tmp_path / "out" / "csv" / "metrics.csv").read_text().splitlines()[0]
    assert "attack_yeom/auc" in header.split(",")


@pytest.mark.slow
def test_attack_results_go_to_hparams_not_single_point_scalars(make_run_folder, tmp_path):
    run = make_run_folder(tmp_path)
    cfg = yaml.safe_load((run / "config.yaml").read_text())
    cfg["trainer"]["logger"] = [{"class_path": "pytorch_lightning.loggers.TensorBoardLogger"}]
    (run / "config.yaml").write_text(yaml.safe_dump(cfg))
    off = ["--salem.enabled", "false", "--label_only.enabled", "false"]
    off += ["--ensemble.enabled", "false", "--calibrated.n_boot", "50"]
    cli.main(["attack", "--run", str(run), "--device", "cpu", *off])
    params, metrics = hparams_of(run)
    assert {"arch", "image_size", "epochs", "split_protocol", "split_seed", "preset"} <= set(params)
    assert {"attack_yeom/auc", "attack_baseline_msp/auc", "target/train_acc"} <= metrics
    assert not any(t.endswith("tpr@0.1%fpr") for t in metrics)  # too few non-members: n/a
    tags = {t for acc in accumulators(run) for t in acc.Tags()["scalars"]}
    assert tags == metrics  # every attack scalar is an hparams metric
    assert not any("n_members" in t or "n_nonmembers" in t for t in tags)
