"""Every whale config in configs/ runs one training step on the CPU, on fixture data in its format.

Detector configs are run by tests/test_detection_configs.py; ``test_every_config_is_covered``
checks that no config in configs/ escapes both lists. That every config resolves as before:
tests/test_config_resolution.py.
"""

from __future__ import annotations

import pytest

import cli
from attacks.signals import load_signals
from datamodules.errors import DataError
from datamodules.manifest import read_manifest
from experiments.run.config_files import resolve_config_args
from tests.config_lists import (
    CONFIGS,
    is_fit_config,
    load_config,
    population_configs,
    whale_configs,
)

READER_FIXTURE = {"FolderReader": "folder", "NoaaReader": "noaa", "HappywhaleReader": "happywhale"}


@pytest.fixture(scope="module")
def catalogs(tmp_path_factory, folder_catalog, noaa_catalog, happywhale_catalog):
    base = tmp_path_factory.mktemp("catalogs")
    makers = {"folder": folder_catalog, "noaa": noaa_catalog, "happywhale": happywhale_catalog}
    return {fmt: make(base / fmt) for fmt, make in makers.items()}


@pytest.mark.parametrize("config", whale_configs(), ids=lambda p: p.stem)
def test_one_step_run(config, catalogs, tmp_path, one_step):
    """One training step, one validation batch, one monitor pass: the run folder holds what a
    full run leaves (config, environment, manifest, checkpoint, the epoch's signal rows)."""
    cfg = load_config(config)["data"]["init_args"]
    reader = cfg["reader"]["class_path"].rsplit(".", 1)[-1]
    args = [
        "fit",
        "--config",
        config.name,
        *one_step,
        "--leakage.max_rows",
        "8",
        "--attack_after_fit",
        "null",
        "--trainer.accelerator",
        "cpu",
        "--trainer.devices",
        "1",
        "--trainer.strategy",
        "auto",
        "--trainer.enable_progress_bar",
        "false",
        "--trainer.default_root_dir",
        str(tmp_path),
        "--data.init_args.loader.image_size",
        "32",
        "--data.init_args.loader.batch_size",
        "4",
        "--data.init_args.loader.eval_batch_size",
        "4",
        "--data.init_args.loader.num_workers",
        "0",
    ]
    if reader == "SyntheticWhalesReader":
        args += [
            "--data.init_args.root",
            str(tmp_path / "synthetic"),
            "--data.init_args.reader.init_args.n_individuals",
            "9",
            "--data.init_args.reader.init_args.encounters_per_individual",
            "3",
            "--data.init_args.reader.init_args.photos_per_encounter",
            "1",
            "--data.init_args.reader.init_args.image_size",
            "32",
        ]
    else:
        args += ["--data.init_args.root", str(catalogs[READER_FIXTURE[reader]])]
    if cfg.get("split", {}).get("images_per_identity"):
        args += ["--data.init_args.split.images_per_identity", "6"]
    cli.main(args)
    run = tmp_path / config.stem / "version_0"  # under --trainer.default_root_dir
    for f in ("config.yaml", "environment.json", "split_manifest.csv", "checkpoints/last.ckpt"):
        assert (run / f).is_file(), f
    rows, _ = read_manifest(run)
    sig = load_signals(run / "signals" / "epoch=000.npz")
    ids = list(sig["sample_id"])
    assert 0 < len(ids) < len(rows) and len(set(ids)) == len(ids)  # a sample, each row once
    assert set(ids) <= {r["sample_id"] for r in rows}
    assert set(sig["role"]) == {"member", "nonmember"}


def test_every_config_is_covered():
    """Each config is a whale fit config (above), a detector config, or a non-fit config."""
    detection = [p for p in CONFIGS.glob("[!p]*/*.yaml") if p.name.startswith("detection")]
    others = [p for p in CONFIGS.glob("[!p]*/*.yaml") if not is_fit_config(load_config(p))]
    uncovered = (
        set(CONFIGS.glob("[!p]*/*.yaml")) - set(whale_configs()) - set(detection) - set(others)
    )
    uncovered -= set(population_configs())  # test_population_configs_resolve; a fit: test_reid_*
    assert not uncovered, f"configs without a fast_dev_run test: {sorted(uncovered)}"
    assert len(whale_configs()) >= 13  # the 3 x 2 x 2 paper grid + the demo


def test_bare_config_name_resolves_and_unknown_fails():
    args = resolve_config_args(["fit", "--config", "demo.yaml"])
    assert args[2] == str(CONFIGS / "fit/demo.yaml")
    args = resolve_config_args(["fit", "--config=gremm_resnet50_overfit"])
    assert args[1] == "--config=" + str(CONFIGS / "fit/gremm_resnet50_overfit.yaml")
    with pytest.raises(DataError, match="--config nosuch.yaml: no such file"):
        resolve_config_args(["fit", "--config", "nosuch.yaml"])


def test_bad_config_key_names_the_key(tmp_path, capsys):
    with pytest.raises(SystemExit) as exc:
        cli.main(
            [
                "fit",
                "--config",
                "demo.yaml",
                "--model.init_args.no_such_key",
                "1",
                "--trainer.default_root_dir",
                str(tmp_path),
            ]
        )
    assert exc.value.code != 0
    assert "no_such_key" in capsys.readouterr().err


def test_missing_data_root_is_one_clear_error(tmp_path, capsys):
    with pytest.raises(SystemExit) as exc:
        cli.main(
            [
                "fit",
                "--config",
                "noaa_resnet50_overfit.yaml",
                "--data.init_args.root",
                str(tmp_path / "absent"),
                "--trainer.default_root_dir",
                str(tmp_path),
            ]
        )
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert "data.root" in err and "demo.yaml" in err and "Traceback" not in err
