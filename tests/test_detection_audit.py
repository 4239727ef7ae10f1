"""The one-command chain on tiny settings: target, shadow, signals, attacks, report, transfer."""

from __future__ import annotations

import json

import numpy as np
import pytest
import yaml

import cli
from attacks.signals import load_signals

TINY = {
    "seed_everything": 0,
    "data": {
        "class_path": "datamodules.detection.datamodule.DetectionDataModule",
        "init_args": {
            "reader": {
                "class_path": "datamodules.detection.synthetic.SyntheticVocReader",
                "init_args": {"n_images": 24, "image_size": 48},
            },
            "loader": {
                "image_size": 48,
                "augment": "little",
                "batch_size": 8,
                "num_workers": 0,
                "verify_images": True,
            },
        },
    },
    "model": {
        "class_path": "lightning_modules.detector.ObjectDetector",
        "init_args": {"arch": "tiny_ssd", "input_size": 48, "predict": {"max_boxes": 20}},
    },
    "trainer": {
        "max_epochs": 1,
        "accelerator": "cpu",
        "enable_model_summary": False,
    },
    "audit": {
        "rows": ["xgb", "shallow_o", "alexnet_aug_u_sr"],
        "xgb": {"n_estimators": 20},
        "n_boot": 50,
        "canvas": {"canvas_size": 64, "epochs": 1, "batch_size": 8},
        "transfer": {
            "model": [
                {"name": "SSD", "config": "CFG"},
                {"name": "FR", "config": "CFG", "args": ["--model.init_args.arch", "tiny_frcnn"]},
            ]
        },
    },
}


@pytest.mark.slow
def test_audit_chain_end_to_end(tmp_path, monkeypatch):
    cfg = tmp_path / "tiny_audit.yaml"
    text = yaml.safe_dump(TINY).replace("CFG", str(cfg))
    cfg.write_text(text)
    monkeypatch.chdir(tmp_path)
    out = tmp_path / "audit"
    data = ["--data.init_args.root", str(tmp_path / "synth")]
    cli.main(["audit", "--config", str(cfg), "--output", str(out), *data])

    report = json.loads((out / "report.json").read_text())
    assert list(report["rows"]) == ["xgb", "shallow_o", "alexnet_aug_u_sr"]
    for m in report["rows"].values():
        assert 0 <= m["acc"] <= 1 and 0 <= m["auc"] <= 1 and "tpr@1%fpr" in m
    md = (out / "report.md").read_text()
    rows = [[c.strip() for c in line.split("|")[1:-1]] for line in md.splitlines() if "|" in line]
    assert ["XGB", "", "", ""] in [r[:4] for r in rows] and "test mAP" in rows[0]
    assert ["AlexNet", "✓", "(U)", "✓"] in [r[:4] for r in rows]
    # signal files: one row per image of the role's in/out sets, padded to K = 20
    t = load_signals(out / "target" / "signals" / "predictions.npz")
    s = load_signals(out / "shadow" / "signals" / "predictions.npz")
    assert set(t["side"]) == {"target"} and set(s["side"]) == {"shadow"}
    assert t["boxes"].shape[1:] == (20, 4) and t["scores"].shape[1] == 20
    assert set(t["role"]) == {"member", "nonmember"} and set(t["split"]) == {"in", "out"}
    assert not set(t["file"]) & set(s["file"])
    assert (t["boxes"] >= 0).all() and (t["boxes"] <= 1).all()
    valid = np.arange(20)[None] < t["n_boxes"][:, None]
    assert (t["scores"][~valid] == 0).all() and (
        np.diff(t["scores"], axis=1)[valid[:, 1:]] <= 0
    ).all()
    assert (out / "target" / "split_manifest.csv").is_file()
    # transfer grid (Table 3 layout): rows shadow, columns target
    grid = report["transfer"]["model"]
    assert set(grid) == {"SSD", "FR"} and set(grid["FR"]) == {"SSD", "FR"}
    assert "shadow \\ target" in (out / "transfer.md").read_text()

    # re-attack finished runs without training
    again = cli_reattack(out, cfg, tmp_path)
    assert again["rows"]["xgb"]["acc"] == report["rows"]["xgb"]["acc"]


def cli_reattack(out, cfg, tmp_path):
    from experiments.commands.audit import main

    plain = tmp_path / "plain.yaml"
    d = yaml.safe_load(cfg.read_text())
    d["audit"].pop("transfer")
    plain.write_text(yaml.safe_dump(d))
    return main(
        [
            "--config",
            str(plain),
            "--output",
            str(tmp_path / "again"),
            "--rows",
            '["xgb"]',
            "--target_run",
            str(out / "target"),
            "--shadow_run",
            str(out / "shadow"),
        ]
    )
