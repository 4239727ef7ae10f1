"""TensorBoard as Lightning users expect it, read back from the event files: the monitor's image
at the same step as its ``leak/*`` scalars, and the attack results once, through
``log_hyperparams``, in the HPARAMS tab (no single-point count scalars)."""

from __future__ import annotations

import glob
from pathlib import Path

import pytest
import yaml
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tensorboard.plugins.hparams import plugin_data_pb2

import cli
from experiments.run.loggers import RunLoggers


def accumulators(run: Path) -> list[EventAccumulator]:
    out = []
    for ev in sorted(glob.glob(str(run / "events.out.tfevents.*"))):
        acc = EventAccumulator(ev, size_guidance={"images": 0, "tensors": 0, "scalars": 0})
        acc.Reload()
        out.append(acc)
    return out


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
def test_monitor_image_and_scalars_share_the_global_step(tmp_path, tiny_args, scalars):
    # batches of 2: several optimizer steps per epoch, so steps and epoch numbers differ
    cli.main(tiny_args(tmp_path, epochs=2) + ["--data.init_args.loader.batch_size", "2"])
    run = tmp_path / "logs" / "run" / "version_0"
    gap = [s for s, _ in scalars(run, "leak/gap")]
    images = sorted(
        e.step for acc in accumulators(run) for e in acc.Images("leak/overfitting_vs_leakage")
    )
    assert len(gap) == 2 and images == gap
    loss = [s for s, _ in scalars(run, "train/loss_epoch")]
    assert loss == gap  # the epoch's other epoch-end scalars sit there too
    assert gap[0] > 1 and gap[1] > 2 * gap[0]  # the global step, not the epoch number


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
