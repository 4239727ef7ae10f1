"""`cli.py discriminate` on an embedding run: known/new per photo and encounter against a catalog
of known whales, the self-calibrated operating point, its outputs, the ``undecided`` rule and bad
input as one line and exit 2. The hand-sized math of the calibration samples runs without a fit."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from experiments.known_new import embedding_engine as reid_discriminate
from experiments.known_new.operating_point import (
    Photos,
    leave_encounter_out,
    operating_point,
    samples,
)


def photo(path: Path, seed: int) -> Path:
    """A 24x24 random JPEG."""
    arr = np.random.default_rng(seed).integers(0, 255, (24, 24, 3), dtype=np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr).save(path, quality=90)
    return path


def cli(*argv: str) -> None:
    from cli import main

    main(["discriminate", *argv])


# ---- the calibration samples by hand -----------------------------------------------------------
def unit(*angles: float) -> np.ndarray:
    return np.stack([np.cos(angles), np.sin(angles)], 1)


def test_leave_encounter_out_uses_the_whales_other_encounters():
    gallery = Photos(unit(0.0, 0.3, 1.0), np.array(["A", "A", "B"]), np.array(["a1", "a2", "b1"]))
    queries = Photos(unit(0.0), np.array(["A"]), np.array(["a1"]))
    names, sims = leave_encounter_out(queries, gallery)
    assert list(names) == ["A", "B"]
    np.testing.assert_allclose(sims[0], [np.cos(0.3), np.cos(1.0)])  # not its own photo (1.0)
    alone = Photos(unit(1.0), np.array(["B"]), np.array(["b1"]))
    assert leave_encounter_out(alone, gallery)[1][0, 1] == -np.inf


def test_samples_known_leave_the_encounter_out_and_new_leave_the_whale_out():
    catalog = Photos(unit(0.0, 0.2, 1.5), np.array(["A", "A", "B"]), np.array(["a1", "a2", "b1"]))
    ref = Photos(unit(0.1, 1.0), np.array(["R1", "R2"]), np.array(["r1", "r2"]))
    s = samples(catalog, ref, "difference", "photo")
    # known: A's two photos (B has one encounter); best = the other A photo minus the best reference
    want_known = [np.cos(0.2) - np.cos(0.1), np.cos(0.2) - np.cos(0.1)]
    # new: R1 against the catalog (best cos 0.1 to a1) minus R2 only, and the reverse
    want_new = [np.cos(0.1) - np.cos(0.9), np.cos(0.5) - np.cos(0.9)]
    np.testing.assert_allclose(s["score"], want_known + want_new)
    assert list(s["known"]) == [1, 1, 0, 0]
    assert list(s["individual"]) == ["catalog:A", "catalog:A", "reference:R1", "reference:R2"]
    enc = samples(catalog, ref, "raw", "encounter")
    assert len(enc["score"]) == 4 and list(enc["known"]) == [1, 1, 0, 0]


def test_operating_point_separates_only_when_the_tpr_interval_is_above_the_fpr():
    ident = np.array(["k1", "k2", "k3", "n1", "n2", "n3"])
    known = np.array([1, 1, 1, 0, 0, 0])
    good = operating_point(
        {"score": np.array([3.0, 4, 5, 0, 1, 2]), "known": known, "individual": ident},
        0.05,
        None,
        100,
    )
    assert good["separable"] and good["tpr"][0] == 1.0 and good["fpr"][0] == 0.0
    assert 2.0 < good["threshold"] <= 3.0 and good["auroc"][0] == 1.0
    assert good["counts"] == {
        "known_samples": 3,
        "new_samples": 3,
        "known_individuals": 3,
        "new_individuals": 3,
    }
    bad = operating_point(
        {"score": np.array([0.0, 1, 2, 3, 4, 5]), "known": known, "individual": ident},
        0.05,
        None,
        100,
    )
    assert not bad["separable"] and bad["tpr"][2] == 0.0
    fixed = operating_point(
        {"score": np.array([0.0, 1, 2, 3, 4, 5]), "known": known, "individual": ident},
        0.05,
        -1.0,
        100,
    )
    assert fixed["chosen_by"] == "--threshold" and fixed["fpr"][0] == 1.0
    assert not fixed["separable"]  # TPR 1 does not exceed FPR 1


# ---- bad input: one line, exit 2 (no fit needed) -------------------------------------------
@pytest.fixture
def fake_run(tmp_path) -> Path:
    """A folder that looks like an embedding run up to its weights."""
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.yaml").write_text(
        "model:\n  class_path: lightning_modules.embedding.ReIDEmbedding\n  init_args: {}\n"
        f"data:\n  init_args:\n    root: {tmp_path / 'pop'}\n"
    )
    rows = "".join(f"images/r{i}.jpg,ref{i},ref{i}/e0,reference,-1\n" for i in range(2))
    (run / "population_manifest.csv").write_text("file,identity,encounter,role,label\n" + rows)
    return run


@pytest.mark.parametrize("case", ["no_catalog", "no_metadata", "empty_images", "classifier"])
def test_bad_input_is_one_line_and_exit_2(case, fake_run, tmp_path, capsys):
    images, catalog = tmp_path / "images", tmp_path / "catalog"
    images.mkdir()
    catalog.mkdir()
    photo(images / "enc" / "a.jpg", 1)
    argv = ["--run", str(fake_run), "--images", str(images), "--catalog", str(catalog)]
    if case == "no_catalog":
        argv = argv[:4]
    if case != "no_metadata":
        (catalog / "metadata.csv").write_text("image_id,path,viewpoint,whale_id,encounter_id\n")
    if case == "empty_images":
        shutil.rmtree(images / "enc")
        (images / "notes.txt").write_text("not a photo")
    if case == "classifier":
        (fake_run / "config.yaml").write_text("model:\n  class_path: x.WhaleClassifier\n")
    with pytest.raises(SystemExit) as exc:
        cli(*argv, "--output", str(tmp_path / "out"))
    err = capsys.readouterr().err.strip().splitlines()
    assert exc.value.code == 2 and err[-1].startswith("error: ")
    want = {
        "no_catalog": "--catalog: --run",
        "no_metadata": "no metadata.csv",
        "empty_images": "no readable photos",
        "classifier": "only for embedding runs",
    }
    assert want[case] in err[-1] and not (tmp_path / "out").exists()


# ---- a tiny embedding run ------------------------------------------------------------------
@pytest.fixture(scope="module")
def tiny(tmp_path_factory, noaa_catalog, reid_fit_args) -> dict:
    """The run, a catalog of 6 whales (photos unlike the population's) and a query folder: an
    encounter of catalog whale000, an encounter of a new whale, a lone photo, two bad files."""
    from cli import main

    tmp = tmp_path_factory.mktemp("reid_disc")
    main(reid_fit_args(noaa_catalog(tmp / "pop", n_ind=10, n_enc=2, per_enc=2), tmp))
    dev = noaa_catalog(tmp / "dev", n_ind=6, n_enc=3, per_enc=2)
    for i, p in enumerate(sorted((dev / "images").glob("*.jpg"))):
        photo(p, 5000 + i)
    q = tmp / "new"
    for name in ("train0002.jpg", "train0003.jpg"):  # whale000, encounter 1, top view
        (q / "known_enc").mkdir(parents=True, exist_ok=True)
        shutil.copy(dev / "images" / name, q / "known_enc" / name)
    for i in range(3):
        photo(q / "new_enc" / f"n{i}.jpg", 9000 + i)
    photo(q / "lone.jpg", 9100)
    (q / "broken.jpg").write_bytes((dev / "images" / "train0001.jpg").read_bytes()[:200])
    (q / "notes.txt").write_text("not a photo")
    return {"run": tmp / "runs" / "beluga_reid_cpu" / "version_0", "catalog": dev, "images": q}


def discriminate(tiny: dict, out: Path | None, *extra: str) -> tuple[list, list, list, dict]:
    argv = ["--run", str(tiny["run"]), "--catalog", str(tiny["catalog"])]
    argv += ["--images", str(tiny["images"]), "--n_boot", "50", *extra]
    cli(*argv, *(["--output", str(out)] if out else []))
    out = out or sorted((tiny["run"] / "discriminate").iterdir())[-1]
    photos, encs, cands = (
        list(csv.DictReader((out / f).open()))
        for f in ("photos.csv", "encounters.csv", "candidates.csv")
    )
    return photos, encs, cands, json.loads((out / "operating_point.json").read_text())


def catalog_whale_of(catalog: Path) -> dict[str, str]:
    with (catalog / "metadata.csv").open() as fh:
        return {str((catalog / r["path"]).resolve()): r["whale_id"] for r in csv.DictReader(fh)}


@pytest.mark.slow
def test_photos_encounters_candidates_and_operating_point(tiny, tmp_path):
    from experiments.known_new.output_folder import COLUMNS

    photos, encs, cands, op = discriminate(tiny, tmp_path / "out")
    assert list(photos[0]) == COLUMNS["photos"] and list(encs[0]) == COLUMNS["encounters"]
    assert list(cands[0]) == COLUMNS["candidates"]
    got = {r["photo"]: (r["encounter"], r["decision"] == "skipped", r["flag"]) for r in photos}
    assert {k: v[:2] for k, v in got.items()} == {
        "known_enc/train0002.jpg": ("known_enc", False), "known_enc/train0003.jpg": ("known_enc", False),
        "new_enc/n0.jpg": ("new_enc", False), "new_enc/n1.jpg": ("new_enc", False),
        "new_enc/n2.jpg": ("new_enc", False), "lone.jpg": ("lone.jpg", False),
        "broken.jpg": ("broken.jpg", True), "notes.txt": ("", True),
    }  # fmt: skip
    assert got["broken.jpg"][2] == "unreadable" and got["notes.txt"][2] == "not_image"
    assert {r["encounter"]: int(r["n_photos"]) for r in encs} == {
        "known_enc": 2, "new_enc": 3, "lone.jpg": 1, "broken.jpg": 0,
    }  # fmt: skip
    whale_of = catalog_whale_of(tiny["catalog"])
    for r in [r for r in photos if r["decision"] != "skipped"] + encs[:3]:
        assert (
            r["decision"] in ("known", "new", "undecided") and len(r["p_known"].split(".")[1]) == 3
        )
    for e in ("known_enc", "new_enc", "lone.jpg"):
        rows = [r for r in cands if r["encounter"] == e]
        assert [int(r["rank"]) for r in rows] == [1, 2, 3, 4, 5]
        cos = [float(r["score"]) for r in rows]
        assert cos == sorted(cos, reverse=True) and {r["score_kind"] for r in rows} == {"cosine"}
        for r in rows:
            assert whale_of[r["catalog_photo"]] == r["individual"]  # an existing catalog photo
            assert r["query_photo"].startswith(e)
    copy = next(r for r in cands if r["encounter"] == "known_enc" and r["rank"] == "1")
    assert copy["individual"] == "whale000"  # its photos are copies of catalog photos:
    assert Path(copy["catalog_photo"]).name == Path(copy["query_photo"]).name  # matched to one
    assert op["statistic"] == "zscore" and op["photo"]["fpr_target"] == 0.05
    assert op["run"] == str(tiny["run"]) and op["catalog"] == str(tiny["catalog"])
    assert op["skipped"] == {"broken.jpg": "corrupt", "notes.txt": "not_an_image"}
    assert op["counts"]["photos_scored"] == 6 and sum(op["counts"]["encounter"].values()) == 3
    for lvl in ("photo", "encounter"):
        point = op["levels"][lvl]
        assert {"threshold", "threshold_p", "tpr", "fpr", "auroc", "separable"} <= set(point)
        assert all(len(point[m]) == 3 for m in ("tpr", "fpr", "auroc"))
        assert point["counts"]["new_individuals"] == 3  # the run's reference whales
        assert point["counts"]["known_individuals"] == 6  # catalog whales with 2+ encounters
        assert op[lvl]["threshold_p"] == point["threshold_p"] and len(op[lvl]["eval_tpr_ci95"]) == 2
    with pytest.raises(SystemExit) as exc:  # a folder with results is kept
        discriminate(tiny, tmp_path / "out")
    assert exc.value.code == 2


@pytest.mark.slow
def test_undecided_unless_the_point_separates_or_decisions_are_forced(tiny, monkeypatch, capsys):
    real = reid_discriminate.operating_point

    def planted(separable: bool):
        return lambda *a, **k: {**real(*a, **k), "separable": separable, "why_not": "planted"}

    monkeypatch.setattr(reid_discriminate, "operating_point", planted(False))
    photos, encs, _, op = discriminate(tiny, None)
    assert {r["decision"] for r in photos if r["decision"] != "skipped"} == {"undecided"}
    assert {r["decision"] for r in encs if r["n_photos"] != "0"} == {"undecided"}
    assert len(op["warnings"]) == 2 and op["warning"] in capsys.readouterr().err
    photos, _, _, op = discriminate(tiny, None, "--force_decisions")
    assert {r["decision"] for r in photos if not r["flag"]} <= {"known", "new"}
    assert "deciding anyway" in op["warnings"][0] and op["forced"] is True
    monkeypatch.setattr(reid_discriminate, "operating_point", planted(True))
    photos, encs, _, op = discriminate(tiny, None, "--threshold", "1.5")
    assert op["warning"] is None and op["levels"]["photo"]["threshold"] == 1.5
    tau = op["photo"]["threshold_p"]
    for r in [r for r in photos if r["decision"] != "skipped" and not r["flag"]]:
        if abs(float(r["p_known"]) - tau) > 1e-3:  # the CSV rounds to 3 decimals
            assert r["decision"] == ("known" if float(r["p_known"]) > tau else "new")
    outs = sorted(p.name for p in (tiny["run"] / "discriminate").iterdir())
    assert outs == ["new", "new-1", "new-2"]  # fresh folders, nothing overwritten


# ---- the flags ---------------------------------------------------------------------------------
def test_viewpoint_and_out_of_distribution_flags(tmp_path):
    """A query of a viewpoint the compared catalog lacks is flagged ``viewpoint``; one farther
    from every catalog photo than 99% of the reference whales' photos ``out_of_distribution``."""
    from types import SimpleNamespace

    from experiments.known_new.embedding_engine import photo_flags

    (tmp_path / "metadata.csv").write_text(
        "image_id,path,viewpoint,whale_id,encounter_id\n"
        "a,images/a.jpg,top,w1,e1\nb,images/b.jpg,left,w2,e2\n"
    )
    catalog = Photos(unit(0.0, 0.1), np.array(["w1", "w2"]), np.array(["e1", "e2"]))
    ref = Photos(unit(0.2, 0.3, 0.4), np.array(["r1", "r2", "r3"]), np.array(["x", "y", "z"]))
    queries = Photos(unit(0.05, 0.05, 2.5), np.array(["", "", ""]), np.array(["q", "q", "q"]))
    a = SimpleNamespace(catalog=str(tmp_path), viewpoint="top")
    flag, note, floor = photo_flags(a, queries, catalog, ref, ["top", "left", ""])
    assert list(flag) == ["", "viewpoint", "out_of_distribution"]
    assert "viewpoint left" in note[1] and "top" in note[1]
    assert floor == pytest.approx(np.quantile(np.cos([0.1, 0.2, 0.3]), 0.01))
    a = SimpleNamespace(catalog=str(tmp_path), viewpoint=None)  # every viewpoint compared
    assert list(photo_flags(a, queries, catalog, ref, ["top", "left", ""])[0])[:2] == ["", ""]
    (tmp_path / "metadata.csv").write_text("image_id,path,whale_id,encounter_id\n")
    a = SimpleNamespace(catalog=str(tmp_path), viewpoint="top")  # no viewpoint column: no check
    assert photo_flags(a, queries, catalog, ref, ["left"] * 3)[0][1] == ""
