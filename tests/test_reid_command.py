"""``cli.py reid``: the known/new draws and every bad input as one line and exit 2, before any
embedding work (the whole command on a tiny fit: tests/test_reid_embedding.py)."""

from __future__ import annotations

import numpy as np
import pytest

import cli
from experiments.commands.reid import draw_roles


def refused(capsys, *argv) -> str:
    with pytest.raises(SystemExit) as exc:
        cli.main(["reid", *argv])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err
    return err


@pytest.fixture
def not_an_embedding_run(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.yaml").write_text(
        "model: {class_path: lightning_modules.classifier.ImageClassifier}\n"
    )
    return run


def test_a_classifier_run_is_refused(capsys, tmp_path, not_an_embedding_run):
    err = refused(capsys, "--run", str(not_an_embedding_run), "--catalog", str(tmp_path),
                  "--output", str(tmp_path / "out"))  # fmt: skip
    assert "not an embedding run" in err and not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    "option, value, message",
    [
        ("--draws", "0", "--draws must be 1-1000"),
        ("--known_fraction", "1.0", "--known_fraction 1.0: give a share between 0 and 1"),
        ("--protocols", "[season]", "--protocols season: choose one of encounter, photo"),
        ("--statistic", "median", "--statistic median: choose one of raw, difference, zscore"),
    ],
)
def test_bad_options_are_one_line(capsys, tmp_path, option, value, message):
    err = refused(capsys, "--run", str(tmp_path), "--catalog", str(tmp_path),
                  "--output", str(tmp_path / "out"), option, value)  # fmt: skip
    assert message in err


def test_a_non_empty_output_is_kept(capsys, tmp_path, not_an_embedding_run):
    out = tmp_path / "out"
    out.mkdir()
    (out / "report.md").write_text("earlier results")
    err = refused(capsys, "--run", str(not_an_embedding_run), "--catalog", str(tmp_path),
                  "--output", str(out))  # fmt: skip
    assert "already exists and holds results" in err
    assert (out / "report.md").read_text() == "earlier results"


def test_draws_keep_encounters_whole_and_are_seeded():
    ident = np.repeat([f"w{i}" for i in range(6)], 4)
    enc = np.asarray([f"{w}/e{j // 2}" for w, j in zip(ident, np.tile(np.arange(4), 6))])
    roles = draw_roles(ident, enc, seed=3, known_fraction=0.5, protocol="encounter")
    assert (roles == draw_roles(ident, enc, 3, 0.5, "encounter")).all()
    for e in np.unique(enc):  # an encounter is catalog or query, never both
        assert len(set(roles[enc == e])) == 1
    known = {w for w, r in zip(ident, roles) if r == "catalog"}
    assert len(known) == 3
    for w in known:  # each known whale keeps one encounter in the catalog, one as its query
        assert set(roles[ident == w]) == {"catalog", "known_query"}
    assert set(roles[~np.isin(ident, list(known))]) == {"new_query"}
    photo = draw_roles(ident, enc, seed=3, known_fraction=0.5, protocol="photo")
    assert (photo == "known_query").sum() == 3  # a third of each known whale's 4 photos
