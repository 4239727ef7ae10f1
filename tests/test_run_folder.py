"""A tiny demo run: run-folder contents, the leakage monitor's scalars over the whole fit, resume
without duplicated epochs, and 2-process DDP."""

from __future__ import annotations

import glob

import numpy as np
import pytest

import cli
from attacks.signals import list_epochs, load_signals
from datamodules.manifest import read_manifest


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory, tiny_args):
    tmp = tmp_path_factory.mktemp("demo")
    cli.main(tiny_args(tmp, epochs=2))
    return tmp, tmp / "logs" / "run" / "version_0"


def test_run_folder_holds_everything(demo_run, scalars):
    _, run = demo_run
    for name in (
        "config.yaml",
        "environment.json",
        "split_manifest.csv",
        "split_manifest.json",
        "checkpoints/last.ckpt",
        "signals/epoch=000.npz",
        "signals/epoch=001.npz",
    ):
        assert (run / name).is_file(), name
    rows, header = read_manifest(run)
    assert header["seed"] == 0 and len(header["hash"]) == 64
    sig = load_signals(run / "signals" / "epoch=001.npz")
    assert len(sig["index"]) == len(rows)
    assert np.array_equal(sig["index"], np.arange(len(rows)))
    assert list(sig["sample_id"]) == [r["sample_id"] for r in rows]
    assert sig["logits"].shape == (len(rows), header["n_individuals"]["ID1"])
    nonmember = sig["label"] == -1
    assert np.isnan(sig["loss_true"][nonmember]).all() and np.isfinite(sig["loss_pred"]).all()
    for tag in (
        "leak/train_acc",
        "leak/test_acc",
        "leak/gap",
        "leak/kl",
        "attack/acc",
        "attack/auc",
        "attack/tpr@1%fpr",
        "train/loss_epoch",
        "val/acc",
    ):
        assert len(scalars(run, tag)) == 2, tag
    assert scalars(run, "hp_metric") == []  # no placeholder metric of -1
    assert (run / "leakage.png").is_file()  # the overfitting-vs-leakage chart of the whole fit


def test_monitor_scores_every_cheap_attack_into_tensorboard(demo_run, scalars):
    """Every cheap attack per epoch (both levels), the KL null, the custom-scalars layout, one
    image per monitored epoch and the metrics JSON beside each signal file."""
    import json

    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    _, run = demo_run
    for stem in ("yeom", "yeom_true", "msp", "entropy", "nn_cosine"):
        for metric in ("auc", "adv", "tpr@1%fpr", "acc"):
            assert len(scalars(run, f"leak/{stem}_{metric}")) == 2, (stem, metric)
    assert len(scalars(run, "leak/kl_null")) == 2 and len(scalars(run, "leak/kl_photo_null")) == 2
    # yeom (loss_pred) and max softmax rank photos identically
    assert scalars(run, "leak/yeom_auc") == scalars(run, "leak/msp_auc")
    acc = EventAccumulator(str(run), size_guidance={"images": 0, "tensors": 0})
    acc.Reload()
    assert "custom_scalars__config__" in acc.Tags()["tensors"]
    assert len(acc.Images("leak/overfitting_vs_leakage")) == 2
    m = json.loads((run / "signals" / "epoch=001.json").read_text())
    assert m["leak/yeom_auc"] == pytest.approx(scalars(run, "leak/yeom_auc")[-1][1], abs=1e-6)
    assert "embedding" not in load_signals(run / "signals" / "epoch=001.npz")  # not asked to


def test_resume_continues_without_duplicated_epochs(demo_run, scalars, tiny_args):
    tmp, run = demo_run
    before = scalars(run, "leak/gap")
    cli.main(tiny_args(tmp, epochs=4) + ["--ckpt_path", str(run / "checkpoints" / "last.ckpt")])
    assert not (tmp / "logs" / "run" / "version_1").exists()  # same run folder
    assert list_epochs(run) == [0, 1, 2, 3]
    after = scalars(run, "leak/gap")
    steps = [s for s, _ in after]
    assert len(after) == 4 and len(set(steps)) == 4 and after[:2] == before
    epochs = [v for _, v in scalars(run, "epoch")]
    assert sorted(set(epochs)) == [0, 1, 2, 3]
    assert (run / "config.yaml").is_file() and (run / "config_resume_1.yaml").is_file()


@pytest.mark.ddp
@pytest.mark.slow
def test_ddp_two_cpu_processes_write_each_sample_once(tmp_path, run_cli, scalars, tiny_args):
    epochs = 2
    args = tiny_args(tmp_path, epochs=epochs, name="ddp") + [
        "--data.init_args.reader.init_args.photos_per_encounter",
        "3",  # 45 rows: the two ranks' shards differ in size (no sampler padding may duplicate)
        "--trainer.devices",
        "2",
        "--trainer.strategy",
        "ddp",
        "--trainer.num_nodes",
        "1",
    ]
    run_cli(args)
    run = tmp_path / "logs" / "ddp" / "version_0"
    rows, _ = read_manifest(run)
    assert len(rows) % 2 == 1, len(rows)
    assert list_epochs(run) == list(range(epochs))
    for epoch in range(epochs):
        sig = load_signals(run / "signals" / f"epoch={epoch:03d}.npz")
        assert len(sig["sample_id"]) == len(rows) == len(set(sig["sample_id"])), epoch
        assert np.array_equal(sig["index"], np.arange(len(rows))), epoch
        assert list(sig["sample_id"]) == [r["sample_id"] for r in rows], epoch
    # written by rank 0 only, and once: no second run folder, event file or leftover temp file
    assert sorted(p.name for p in (run / "signals").iterdir()) == [
        f"epoch={e:03d}.{ext}" for e in range(epochs) for ext in ("json", "npz")
    ]
    assert [p.name for p in (tmp_path / "logs" / "ddp").iterdir()] == ["version_0"]
    assert len(glob.glob(str(run / "events.out.tfevents.*"))) == 1  # rank 0 logs only
    for tag in ("leak/gap", "leak/train_acc", "attack/acc", "attack/auc", "attack/tpr@1%fpr"):
        steps = [s for s, _ in scalars(run, tag)]
        assert len(steps) == epochs and len(set(steps)) == epochs, (tag, steps)
