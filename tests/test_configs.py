"""Every whale config in configs/ passes a fast_dev_run on the CPU, on fixture data in its format.

Detector configs are run by tests/test_detection_configs.py; ``test_every_config_is_covered``
checks that no config in configs/ escapes both lists.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from whale_fixtures import folder_catalog, happywhale_catalog, noaa_catalog

import cli
from experiments.config_files import resolve_config_args

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
FIXTURES = {"folder": folder_catalog, "noaa": noaa_catalog, "happywhale": happywhale_catalog}


def _load(path: Path) -> dict:
    return yaml.safe_load(path.read_text()) or {}


def is_fit_config(cfg: dict) -> bool:
    return "model" in cfg and "data" in cfg


def whale_configs() -> list[Path]:
    return sorted(
        p
        for p in CONFIGS.glob("*.yaml")
        if is_fit_config(c := _load(p)) and "WhaleDataModule" in c["data"]["class_path"]
    )


@pytest.fixture(scope="module")
def catalogs(tmp_path_factory):
    base = tmp_path_factory.mktemp("catalogs")
    return {fmt: make(base / fmt) for fmt, make in FIXTURES.items()}


@pytest.mark.parametrize("config", whale_configs(), ids=lambda p: p.stem)
def test_fast_dev_run(config, catalogs, tmp_path):
    cfg = _load(config)["data"]["init_args"]
    args = [
        "fit",
        "--config",
        config.name,
        "--trainer.fast_dev_run",
        "true",
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
        "--data.init_args.image_size",
        "32",
        "--data.init_args.batch_size",
        "4",
        "--data.init_args.eval_batch_size",
        "4",
        "--data.init_args.num_workers",
        "0",
    ]
    if cfg.get("format") == "synthetic":
        args += [
            "--data.init_args.root",
            str(tmp_path / "synthetic"),
            "--data.init_args.synthetic.n_individuals",
            "9",
            "--data.init_args.synthetic.encounters_per_individual",
            "3",
            "--data.init_args.synthetic.photos_per_encounter",
            "1",
            "--data.init_args.synthetic.image_size",
            "32",
        ]
    else:
        args += ["--data.init_args.root", str(catalogs[cfg["format"]])]
    if cfg.get("images_per_identity"):
        args += ["--data.init_args.images_per_identity", "6"]
    cli.main(args)


def test_every_config_is_covered():
    """Each config is a whale fit config (above), a detector config, or a non-fit config."""
    detection = [p for p in CONFIGS.glob("*.yaml") if p.name.startswith("detection")]
    others = [p for p in CONFIGS.glob("*.yaml") if not is_fit_config(_load(p))]
    uncovered = set(CONFIGS.glob("*.yaml")) - set(whale_configs()) - set(detection) - set(others)
    assert not uncovered, f"configs without a fast_dev_run test: {sorted(uncovered)}"
    assert len(whale_configs()) >= 13  # the 3 x 2 x 2 paper grid + the demo


def test_bare_config_name_resolves_and_unknown_fails():
    args = resolve_config_args(["fit", "--config", "demo.yaml"])
    assert args[2] == str(CONFIGS / "demo.yaml")
    args = resolve_config_args(["fit", "--config=gremm_resnet50_overfit"])
    assert args[1] == "--config=" + str(CONFIGS / "gremm_resnet50_overfit.yaml")
    with pytest.raises(cli.DataError, match="--config nosuch.yaml: no such file"):
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
