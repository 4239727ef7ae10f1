"""The ``reference:`` block of ``cli.py attack`` (experiments/attack_steps/reference_step.py) on a tiny run
folder and tiny Where's Whale-do catalogs of other whales: the attack's folder and report rows,
the refusal of reference whales the target knows, the embedding-run source and the settings'
validation."""

from __future__ import annotations

import csv
import json
import re
from pathlib import Path

import numpy as np
import pytest
import yaml

from datamodules.errors import DataError
from experiments.settings.attack import ReferenceSettings

OFF = [
    "--yeom.enabled",
    "false",
    "--salem.enabled",
    "false",
    "--label_only.enabled",
    "false",
    "--ensemble.enabled",
    "false",
    "--device",
    "cpu",
]


@pytest.fixture(scope="module")
def run_folder(tmp_path_factory, make_run_folder) -> Path:
    return make_run_folder(tmp_path_factory.mktemp("ref_run"), n_individuals=12, size=24)


def reference_catalog(root: Path, noaa_catalog, prefix: str) -> Path:
    """A 4-whale Where's Whale-do catalog (16 photos) whose ``whaleNNN`` ids become
    ``<prefix>NNN`` (``whale_`` gives the synthetic target's own ids)."""
    noaa_catalog(root, n_ind=4, n_enc=2, per_enc=2)
    meta = root / "metadata.csv"
    meta.write_text(re.sub(r"whale(\d{3})", rf"{prefix}\1", meta.read_text()))
    return root


def test_settings_validation(capsys):
    from cli import main

    with pytest.raises(DataError, match="exactly one of reference.root"):
        ReferenceSettings(enabled=True, root="a", embedding_run="b")
    with pytest.raises(DataError, match="exactly one of reference.root"):
        ReferenceSettings(enabled=True)
    with pytest.raises(DataError, match="reference.max_photos=0"):
        ReferenceSettings(max_photos=0)
    ReferenceSettings(root="a", embedding_run="b")  # disabled: not checked
    with pytest.raises(SystemExit) as exc:
        main(["attack", "--run", "nowhere", "--reference.statistic", "median"])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert "reference.statistic='median': choose one of raw" in err and err.count("\n") == 1


def test_reference_whales_known_to_the_target_are_refused(run_folder, noaa_catalog, capsys):
    from cli import main

    cat = reference_catalog(run_folder.parent / "shared_ids", noaa_catalog, "whale_")
    argv = ["attack", "--run", str(run_folder), *OFF, "--output", "refused"]
    with pytest.raises(SystemExit) as exc:
        main([*argv, "--reference.enabled", "true", "--reference.root", str(cat)])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert f"reference.root {cat}: 4 whale id(s) also in the target's split manifest" in err
    assert err.count("\n") == 1
    assert not (run_folder / "refused").exists()  # refused before anything is written


def test_reference_photos_from_an_embedding_run_or_a_catalog(run_folder, noaa_catalog, tmp_path):
    from experiments.attack_steps.reference_step import reference_photos
    from experiments.run.folder import RunContext

    cat = reference_catalog(tmp_path / "population", noaa_catalog, "pop")
    emb_run = tmp_path / "emb_run"
    emb_run.mkdir()
    cfg = {
        "model": {"class_path": "lightning_modules.embedding.ReIDEmbedding"},
        "data": {"init_args": {"root": str(cat)}},
    }
    (emb_run / "config.yaml").write_text(yaml.safe_dump(cfg))
    with (cat / "metadata.csv").open() as fh:
        photos = list(csv.DictReader(fh))
    with (emb_run / "population_manifest.csv").open("w", newline="") as fh:
        w = csv.DictWriter(fh, ["file", "identity", "encounter", "role", "label"])
        w.writeheader()
        for p in photos:
            role = "reference" if p["whale_id"] in ("pop002", "pop003") else "train"
            w.writerow(
                {"file": p["path"], "identity": p["whale_id"], "encounter": "e", "role": role}
            )
    ctx = RunContext.open(run_folder, "cpu")
    got = reference_photos(ctx, ReferenceSettings(enabled=True, embedding_run=str(emb_run)))
    assert got.root == cat and len(got.files) == 8
    assert set(got.identity) == {"pop002", "pop003"}
    sub = reference_photos(ctx, ReferenceSettings(True, str(cat), max_photos=5, seed=3))
    assert len(sub.files) == 5 and sub.files == sorted(sub.files)  # seeded, file order kept
    again = reference_photos(ctx, ReferenceSettings(True, str(cat), max_photos=5, seed=3))
    assert again.files == sub.files and list(again.identity) == list(sub.identity)
    # a catalog is read with the target's viewpoint (noaa_catalog: photos 0, 7, 14 are lateral)
    ctx.config["data"]["init_args"]["reader"] = {"init_args": {"viewpoint": "top"}}
    assert len(reference_photos(ctx, ReferenceSettings(True, str(cat))).files) == 13


def test_attack_writes_reference_calibrated(run_folder, noaa_catalog):
    from attacks.signals import load_signals
    from cli import main
    from experiments.attack_steps.reference_step import embed_photos
    from experiments.run.folder import RunContext

    cat = reference_catalog(run_folder.parent / "refs", noaa_catalog, "ref")
    ref = ["--reference.enabled", "true", "--reference.root", str(cat)]
    main(["attack", "--run", str(run_folder), *OFF, *ref, "--reference.max_photos", "12"])
    out = run_folder / "attacks" / "reference_calibrated_zscore"
    payload = json.loads((out / "metrics.json").read_text())
    assert payload["info"]["n_reference_photos"] == 12
    assert payload["info"]["fit_on"] == "target attack set"
    m = payload["metrics"]
    assert m["n_members"] == m["n_nonmembers"] > 0 and 0 <= m["auc"] <= 1
    scores = np.load(out / "scores.npz")
    assert len(scores["sample_id"]) == len(scores["score"]) == m["n_members"] * 2
    summary = json.loads((run_folder / "attacks" / "summary.json").read_text())
    assert "reference_calibrated_zscore" in summary["metrics"]
    assert "| reference_calibrated_zscore |" in (run_folder / "attacks" / "report.md").read_text()
    # the references are embedded exactly as the signals' embedding of the target's photos
    ctx = RunContext.open(run_folder, "cpu")
    sig = load_signals(run_folder / "signals" / "final.npz")
    rows = [i for i, r in enumerate(ctx.rows) if not r["aug"]][:5]
    files = [ctx.rows[i]["file"] for i in rows]
    emb = embed_photos(ctx, ctx.roots[ctx.rows[rows[0]]["catalog"]], files)
    assert emb == pytest.approx(sig["embedding"][rows], abs=1e-5)
