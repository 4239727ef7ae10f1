"""Every detection config passes ``fit --trainer.fast_dev_run true`` on tiny fixture data written
in the real formats (VOC, INRIA, SynthText; synthetic for the demo), on the CPU."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

import cli
from attacks.signals import load_signals
from datamodules.manifest import read_manifest

CONFIGS = Path(cli.__file__).resolve().parent / "configs"
DETECTION = sorted(p.name for p in (CONFIGS / "detection").glob("*.yaml"))

#: config -> (fixture kind, extra arguments); SSD-VGG/ResNet keep their native 300/512 px input
#: (their extra layers need it), the two-stage models run at 128 px.
CASES = {
    "detection_demo.yaml": ("synthetic", ["--data.init_args.reader.init_args.n_images", "24"]),
    "detection_dp_demo.yaml": ("synthetic", ["--data.init_args.reader.init_args.n_images", "24"]),
    "detection_ssd300_vgg16_voc_dp.yaml": ("voc", []),
    "detection_ssd300_vgg16_voc.yaml": ("voc", []),
    "detection_ssd512_vgg16_voc.yaml": ("voc", []),
    "detection_ssd300_resnet50_voc.yaml": ("voc", []),
    "detection_frcnn_vgg16_voc.yaml": (
        "voc",
        ["--model.init_args.input_size", "128", "--model.init_args.max_size", "160"],
    ),
    "detection_frcnn_resnet50_fpn_voc.yaml": (
        "voc",
        ["--model.init_args.input_size", "128", "--model.init_args.max_size", "160"],
    ),
    "detection_ssd300_vgg16_inria.yaml": ("inria", []),
    "detection_ssd300_vgg16_synthtext.yaml": (
        "synthtext",
        ["--data.init_args.split.n_target", "6", "--data.init_args.split.n_shadow", "6"],
    ),
    "detection_transfer_grid.yaml": ("voc", []),
}
SLOW = {  # over ~15 s each on 2 shared cores (SSD-VGG/ResNet50 at their native 300/512 px)
    "detection_ssd300_vgg16_voc.yaml",
    "detection_ssd300_vgg16_voc_dp.yaml",
    "detection_ssd512_vgg16_voc.yaml",
    "detection_ssd300_resnet50_voc.yaml",
    "detection_frcnn_vgg16_voc.yaml",
    "detection_frcnn_resnet50_fpn_voc.yaml",
    "detection_transfer_grid.yaml",
}


def test_every_detection_config_has_a_case():
    assert set(DETECTION) == set(CASES), "add new detection configs to CASES"


@pytest.fixture
def dataset_root(write_voc, write_inria, write_synthtext):
    """``make(kind, tmp)``: a tiny dataset of ``kind`` (voc, inria, synthtext) under ``tmp/kind``."""

    def make(kind: str, tmp: Path) -> Path:
        root = tmp / kind
        if kind == "voc":
            write_voc(root, n=8)
        elif kind == "inria":
            write_inria(root, n_train=4, n_test=4)
        elif kind == "synthtext":
            write_synthtext(root, n_backgrounds=6, variants=2)
        return root

    return make


@pytest.mark.parametrize(
    "config",
    [pytest.param(c, marks=pytest.mark.slow) if c in SLOW else c for c in DETECTION],
)
def test_one_step_run(config, tmp_path, monkeypatch, dataset_root, one_step):
    """One training step and one validation batch; the run folder holds the config, the split
    manifest, the checkpoint and one prediction row per image of the target's in and out sets."""
    kind, extra = CASES[config]
    root = dataset_root(kind, tmp_path)
    monkeypatch.chdir(tmp_path)  # nothing may land in the checkout
    cli.main(
        [
            "fit",
            "--config",
            config,
            *one_step,
            "--trainer.default_root_dir",
            str(tmp_path / "runs"),
            "--trainer.accelerator",
            "cpu",
            "--data.init_args.root",
            str(root),
            "--data.init_args.loader.batch_size",
            "2" if kind == "synthetic" else "1",
            "--data.init_args.loader.num_workers",
            "0",
            *extra,
        ]
    )
    run = tmp_path / "runs" / Path(config).stem / "version_0"
    for f in ("config.yaml", "split_manifest.csv", "checkpoints/last.ckpt"):
        assert (run / f).is_file(), f
    rows, _ = read_manifest(run)
    sig = load_signals(run / "signals" / "predictions.npz")
    target = [r["sample_id"] for r in rows if r["side"] == "target"]
    assert sorted(sig["sample_id"]) == sorted(target)  # every target image once
    assert sig["scores"].shape[0] == len(target)


def test_missing_voc_root_is_one_clear_error(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as exc:
        cli.main(
            [
                "fit",
                "--config",
                "detection_ssd300_vgg16_voc.yaml",
                "--data.init_args.root",
                str(tmp_path / "nope"),
                "--trainer.fast_dev_run",
                "true",
            ]
        )
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert "data.root" in err and "nope" in err and "Traceback" not in err


SHARED_VOC = Path(cli.__file__).resolve().parents[1] / "shared" / "data" / "voc2012_sample"


@pytest.mark.slow
@pytest.mark.skipif(not SHARED_VOC.is_dir(), reason="../shared/data/voc2012_sample not present")
def test_real_voc_sample_through_the_pipeline(tmp_path, monkeypatch, one_step, scalars):
    """The 100 real VOC 2012 images: read, split, hash, train one step, evaluate, predict."""
    monkeypatch.chdir(tmp_path)  # nothing may land in the checkout
    cli.main(
        [
            "fit",
            "--config",
            "detection_ssd300_vgg16_voc.yaml",
            *one_step,
            "--trainer.check_val_every_n_epoch",
            "1",
            "--trainer.default_root_dir",
            str(tmp_path / "runs"),
            "--trainer.accelerator",
            "cpu",
            "--data.init_args.root",
            str(SHARED_VOC),
            "--data.init_args.loader.image_size",
            "64",
            "--data.init_args.loader.batch_size",
            "2",
            "--data.init_args.loader.num_workers",
            "0",
            "--model.init_args.arch",
            "tiny_ssd",
            "--model.init_args.input_size",
            "64",
        ]
    )
    run = tmp_path / "runs" / "detection_ssd300_vgg16_voc" / "version_0"
    rows, header = read_manifest(run)  # checks the recorded hash against the rows
    # read: every listed image and its 273 objects of the 20 classes (the sample's README)
    assert len(rows) == 100 and header["reader_summary"] == "nothing skipped"
    assert sum(int(r["n_objects"]) for r in rows) == 273 and len(header["classes"]) == 20
    # split: target and shadow halves, each half in and out, no image on two sides
    assert header["counts"] == dict.fromkeys(
        ("shadow_in", "shadow_out", "target_in", "target_out"), 25
    )
    assert len({r["file"] for r in rows}) == 100
    # hash: the manifest's sha256
    assert len(header["hash"]) == 64 and set(header["hash"]) <= set("0123456789abcdef")
    # train one step, evaluate one batch of the in and the out set
    assert (run / "checkpoints" / "last.ckpt").is_file()
    [(_, loss)] = scalars(run, "train/loss_epoch")
    assert math.isfinite(loss) and loss > 0
    for tag in ("val/map50_in", "val/map50_out"):
        [(_, value)] = scalars(run, tag)
        assert 0.0 <= value <= 1.0, tag
    # predict: one row of boxes per target image, each once
    sig = load_signals(run / "signals" / "predictions.npz")
    target = sorted(r["sample_id"] for r in rows if r["side"] == "target")
    assert sorted(sig["sample_id"]) == target and len(target) == 50
    assert sig["boxes"].shape[:2] == sig["scores"].shape and sig["boxes"].shape[2] == 4
    assert not list(tmp_path.glob("checkpoints"))  # nothing beside the run folder
