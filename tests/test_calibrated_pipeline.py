"""Reference models and the calibrated attacks through ``cli.py attack`` on a tiny run folder:
the identity-level references never see an evaluated individual, the references are cached and
re-used, one index trains one reference (a job-array task), and references from elsewhere are
validated."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest

from experiments.side_models.reference import keep_matrix, plan

OFF = [
    "--yeom.enabled",
    "false",
    "--salem.enabled",
    "false",
    "--label_only.enabled",
    "false",
    "--ensemble.enabled",
    "false",
    "--baselines",
    "false",
    "--device",
    "cpu",
]
CAL = [
    "--calibrated.enabled",
    "true",
    "--calibrated.n_models",
    "2",
    "--calibrated.epochs",
    "1",
    "--calibrated.n_boot",
    "50",
    "--calibrated.rmia_refs",
    "[1, 2]",
    "--salem.epochs",
    "20",
]


@pytest.fixture(scope="module")
def run_folder(tmp_path_factory, make_run_folder) -> Path:
    return make_run_folder(tmp_path_factory.mktemp("cal_run"), n_individuals=12, size=24)


def _rows(run: Path) -> tuple[list[dict], list[str]]:
    from datamodules.manifest import read_manifest

    rows, header = read_manifest(run)
    return rows, list(header["class_names"])


def test_keep_matrix_gives_balanced_halves():
    keep = keep_matrix(50, 4, 0)
    assert (keep.sum(1) == 2).all()
    assert keep_matrix(1000, 1, 0).mean() == pytest.approx(0.5, abs=0.05)


def test_identity_level_references_never_see_evaluated_individuals(run_folder):
    rows, classes = _rows(run_folder)
    evaluated = {r["identity"] for r in rows if r["set"] in ("eval", "train")} | set(classes)
    seen = set()
    for k in range(4):
        train, idents, in_mask = plan(rows, classes, "identity", k, 4, seed=3)
        seen |= {r["identity"] for r in train} | set(idents)
        assert all(r["split"] == "attack" for r in train)  # attack-side photos only
        assert not in_mask[[i for i, r in enumerate(rows) if r["set"] == "eval"]].any()
    assert seen and not seen & evaluated


def test_sample_level_references_take_random_halves_of_known_individuals(run_folder):
    rows, classes = _rows(run_folder)
    masks = [plan(rows, classes, "sample", k, 4, seed=0)[2] for k in range(4)]
    pool = [i for i, r in enumerate(rows) if r["identity"] in classes and r["split"] != "attack"]
    counts = np.sum(masks, 0)
    assert (counts[pool] == 2).all() and counts.sum() == 2 * len(pool)


@pytest.mark.slow
def test_calibrated_attacks_end_to_end(run_folder):
    from cli import main

    main(["attack", "--run", str(run_folder), *OFF, *CAL])
    out = run_folder / "attacks"
    for name in (
        "identity_lira_offline",
        "identity_rmia_k1",
        "identity_rmia_k2",
        "sample_lira_offline",
        "sample_lira_online",
        "sample_rmia_k1",
        "sample_yeom",
        "sample_salem",
    ):
        assert (out / name / "metrics.json").is_file(), name
    assert not (out / "identity_lira_online").exists()
    report = (out / "report.md").read_text()
    assert "bootstrap by individual" in report and "Most exposed" in report
    rows = list(csv.DictReader((out / "risk.csv").open()))
    assert {"level", "file", "identity", "role", "sample_lira_online_rank"} <= set(rows[0])
    assert {r["level"] for r in rows} == {"identity", "sample"}
    refs = list((run_folder / "references").glob("*/identity/ref_*.json"))
    assert len(refs) == 2
    stamp = [p.stat().st_mtime_ns for p in refs]
    # cached: a second attack re-uses the references (no retraining)
    main(["attack", "--run", str(run_folder), *OFF, *CAL, "--output", "attacks2"])
    assert [p.stat().st_mtime_ns for p in refs] == stamp
    payload = json.loads((run_folder / "attacks2" / "sample_rmia_k2" / "metrics.json").read_text())
    assert payload["info"]["n_references"] == 2
    assert payload["info"]["references_seconds_this_call"] < 60  # loaded, not trained


@pytest.mark.slow
def test_index_trains_one_reference_and_reference_runs_are_validated(run_folder, tmp_path, capsys):
    from cli import main

    extra = ["--calibrated.n_models", "3", "--calibrated.levels", "[identity]"]
    main(["attack", "--run", str(run_folder), *OFF, *CAL, *extra, "--calibrated.index", "[2]"])
    folder = [
        f
        for f in (run_folder / "references").iterdir()
        if (f / "identity" / "ref_002.npz").is_file()
    ]
    assert len(folder) == 1 and not (folder[0] / "identity" / "ref_000.npz").exists()
    bad = tmp_path / "refs"
    bad.mkdir()
    (bad / "references.json").write_text(json.dumps({"manifest_hash": "other"}))
    with pytest.raises(SystemExit) as exc:
        main(["attack", "--run", str(run_folder), *OFF, *CAL, "--reference_runs", f"[{bad}]"])
    assert exc.value.code == 2 and "another split manifest" in capsys.readouterr().err
