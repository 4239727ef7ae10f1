"""The engines behind `cli.py discriminate` on a classifier run: the torch target equals the
LightningModule, an embedding-head run is scored by similarity, photos are resized as the run
was trained, the progress bar, and the calibration scale keeps every ranking."""

from __future__ import annotations

import csv
import json
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest


@pytest.fixture(scope="module")
def run_folder(tmp_path_factory, make_run_folder) -> Path:
    return make_run_folder(tmp_path_factory.mktemp("disc_engine_run"))


@pytest.fixture(scope="module")
def photos(run_folder, tmp_path_factory) -> Path:
    """Two encounter subfolders of 3 photos."""
    src = sorted((run_folder.parent / "cat").rglob("*.jpg"))
    imgs = tmp_path_factory.mktemp("new")
    for i, p in enumerate(src[:6]):
        (imgs / f"enc_{i // 3}").mkdir(exist_ok=True)
        (imgs / f"enc_{i // 3}" / f"f{i}.jpg").write_bytes(p.read_bytes())
    return imgs


def run(run_folder: Path, imgs: Path, out: Path, *extra: str) -> tuple[dict, dict]:
    from cli import main

    main(
        ["discriminate", "--run", str(run_folder), "--images", str(imgs), "--output", str(out)]
        + ["--n_boot", "50", "--quiet", *extra]
    )
    tables = {
        k: list(csv.DictReader((out / f"{k}.csv").open()))
        for k in ("photos", "encounters", "candidates")
    }
    return tables, json.loads((out / "operating_point.json").read_text())


def test_an_embedding_head_run_is_scored_by_similarity(run_folder, photos, tmp_path, monkeypatch):
    """A run whose classifier has an embedding head (``model.init_args.head``) goes through its
    LightningModule (here a stand-in with the same ``embed``) and defaults to similarity scoring:
    nearest training photo's cosine, mean embedding per encounter, cosine candidates."""
    import yaml

    from experiments.run import folder as runs
    from experiments.target.torch_engine import PlainTarget, load_target

    emb_run = tmp_path / "emb_run"
    shutil.copytree(run_folder, emb_run, ignore=shutil.ignore_patterns("discriminate"))
    cfg = yaml.safe_load((emb_run / "config.yaml").read_text())
    cfg["model"]["init_args"]["head"] = "arcface"
    (emb_run / "config.yaml").write_text(yaml.safe_dump(cfg))
    plain = {}

    def lightning_model(self):  # what RunContext.model returns, without the ArcFace module
        if "m" not in plain:
            ctx = runs.RunContext.open(run_folder, "cpu")
            plain["m"] = load_target(ctx)
        return plain["m"]

    monkeypatch.setattr(runs.RunContext, "model", lightning_model)
    tables, s = run(emb_run, photos, tmp_path / "emb")
    assert isinstance(plain["m"], PlainTarget)
    assert s["attack"] == "cosine" and s["aggregate"] == "mean_embedding"
    assert {r["encounter"] for r in tables["encounters"]} == {"enc_0", "enc_1"}
    top = [r for r in tables["candidates"] if r["rank"] == "1"]
    assert len(top) == 2 and {r["score_kind"] for r in top} == {"cosine"}
    assert all(Path(r["catalog_photo"]).is_file() for r in top)


@pytest.mark.parametrize("extra", [{}, {"dropout_defense": True, "preset": "regularized"}])
def test_the_plain_target_equals_the_lightning_module(tmp_path, make_run_folder, extra):
    import torch

    from experiments.run.folder import RunContext, load_classifier
    from experiments.target.torch_engine import PlainTarget, load_target

    run_folder = make_run_folder(tmp_path, n_individuals=9, model_args=extra)
    ctx = RunContext.open(run_folder, "cpu")
    plain = load_target(ctx)
    ref = load_classifier(ctx.checkpoint, ctx.model_args, len(ctx.class_names)).eval()
    assert isinstance(plain, PlainTarget)
    x = torch.randn(3, 3, 32, 32)
    with torch.no_grad():
        logits, emb = plain.logits_and_embedding(x)
        torch.testing.assert_close(logits, ref(x))
        torch.testing.assert_close(emb, ref.embed(x))


def test_progress_bar_only_on_a_terminal_and_not_when_quiet(monkeypatch):
    import io

    from experiments.commands.discriminate import _progress

    class Tty(io.StringIO):
        def isatty(self) -> bool:
            return True

    batches = [(np.zeros((4, 1)),), (np.zeros((2, 1)),)]
    for tty, quiet, shown in ((True, False, True), (True, True, False), (False, False, False)):
        err = Tty() if tty else io.StringIO()
        monkeypatch.setattr(sys, "stderr", err)
        assert len(list(_progress(batches, 6, quiet))) == 2
        assert ("6/6" in err.getvalue()) == shown


def test_the_calibration_scale_keeps_every_ranking():
    from attacks.known_new import feature

    loss = np.array([3.0, 1.0, 0.5, 1e-3, 0.0])
    for name, score in (
        ("yeom", -loss),
        ("baseline_msp", np.exp(-loss)),
        ("salem", np.array([0.01, 0.3, 0.5, 0.9, 1.0])),
        ("cosine", np.array([-0.5, 0.0, 0.2, 0.9, 1.0])),
    ):
        f = feature(name, score)
        assert np.all(np.isfinite(f)) and np.all(np.diff(f) > 0), name


def test_new_photos_are_resized_as_the_run_was_trained(run_folder, photos, tmp_path, monkeypatch):
    """A letterbox run scores new photos letterboxed: the photos go through the run's transform."""
    from datamodules.images import eval_transform
    from experiments.run.folder import RunContext
    from experiments.target import torch_engine as torch_target

    made, given = [], []

    def letterbox(self):
        made.append(eval_transform(self.image_size, "letterbox", 0))
        return made[-1]

    class Photos(torch_target.PhotoFiles):
        def __init__(self, paths, transform):
            given.append(transform)
            super().__init__(paths, transform)

    monkeypatch.setattr(RunContext, "transform", letterbox)
    monkeypatch.setattr(torch_target, "PhotoFiles", Photos)
    tables, _ = run(run_folder, photos, tmp_path / "lb")
    assert tables["photos"] and given and all(any(t is m for m in made) for t in given)


def test_the_python_api_takes_the_command_s_options(run_folder, photos, tmp_path):
    from experiments.commands.discriminate import discriminate

    lines = []
    op = discriminate(
        run_folder,
        photos,
        output=tmp_path / "api",
        n_boot=50,
        quiet=True,
        log=lambda m, **k: lines.append(m),
    )
    assert (tmp_path / "api" / "photos.csv").is_file() and op["counts"]["photos_scored"] == 6
    assert any(line.startswith("-> ") for line in lines)
    with pytest.raises(TypeError, match="unknown options"):
        discriminate(run_folder, photos, outptu=tmp_path / "typo")
