"""`cli.py discriminate` on a tiny run folder (untrained, no fit): the output folder's exact
schema, candidates for every encounter, the operating point's rates on planted signals, --fpr
against --threshold, `undecided` when the run's own evaluation cannot separate known from new
(and known/new when it can), corrupt files keeping their encounter, options refused before any
scanning, bare flags, similarity scoring and no Lightning import."""

from __future__ import annotations

import csv
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from attacks.signals import save_signals

ROOT = Path(__file__).resolve().parents[1]
PHOTOS = ["photo", "encounter", "p_known", "rank", "decision", "flag", "note"]
ENCOUNTERS = ["encounter", "n_photos", "n_known_photos", "p_known", "rank", "decision", "rule"]
ENCOUNTERS += ["margin", "flag", "note"]
CANDIDATES = ["encounter", "rank", "individual", "score", "score_kind", "catalog_photo"]
CANDIDATES += ["query_photo"]
LEVEL_KEYS = {"threshold_p", "fpr_target", "separable"} | {
    f"eval_{m}{s}" for m in ("tpr", "fpr", "auroc") for s in ("", "_ci95")
}


@pytest.fixture(scope="module")
def run_folder(tmp_path_factory, make_run_folder) -> Path:
    return make_run_folder(tmp_path_factory.mktemp("disc_run"))


@pytest.fixture(scope="module")
def photos(run_folder, tmp_path_factory) -> Path:
    """Two encounter subfolders of 3 photos (a broken JPEG in the first), a lone photo and a
    text file."""
    src = sorted((run_folder.parent / "cat").rglob("*.jpg"))
    imgs = tmp_path_factory.mktemp("new")
    for i, p in enumerate(src[:6]):
        (imgs / f"enc_{i // 3}").mkdir(exist_ok=True)
        (imgs / f"enc_{i // 3}" / f"f{i}.jpg").write_bytes(p.read_bytes())
    (imgs / "lone.jpg").write_bytes(src[10].read_bytes())
    (imgs / "enc_0" / "broken.jpg").write_bytes(src[11].read_bytes()[:200])  # truncated JPEG
    (imgs / "notes.txt").write_text("not a photo")
    return imgs


def run(run_folder: Path, imgs: Path, out: Path, *extra: str) -> tuple[dict, dict]:
    """``({table: rows}, operating_point.json)`` of one discriminate into folder ``out``."""
    from cli import main

    main(
        ["discriminate", "--run", str(run_folder), "--images", str(imgs), "--output", str(out)]
        + ["--n_boot", "100", "--quiet", *extra]
    )
    return read(out)


def read(out: Path) -> tuple[dict, dict]:
    tables = {
        k: list(csv.DictReader((out / f"{k}.csv").open()))
        for k in ("photos", "encounters", "candidates")
    }
    return tables, json.loads((out / "operating_point.json").read_text())


def plant(run_folder: Path, eval_member, eval_new, attack_member=None, attack_new=None) -> dict:
    """Replace the run's final signals' losses (8 photos per set and role): by default attack-set
    members at 0.3-1.05 nats and new whales at 1.0-1.7."""
    from experiments.run.folder import RunContext, final_signals
    from experiments.target.torch_engine import load_target

    ctx = RunContext.open(run_folder, "cpu")
    load_target(ctx)
    sig, _ = final_signals(ctx)
    loss = np.zeros(len(sig["index"]))
    for set_name, role, vals in (
        ("attack", "member", np.linspace(0.3, 1.05, 8) if attack_member is None else attack_member),
        ("attack", "nonmember", np.linspace(1.0, 1.7, 8) if attack_new is None else attack_new),
        ("eval", "member", eval_member),
        ("eval", "nonmember", eval_new),
    ):
        m = (sig["set"] == set_name) & (sig["role"] == role)
        assert m.sum() == len(vals)
        loss[m] = vals
    sig["loss_pred"] = loss.astype(np.float32)
    save_signals(run_folder / "signals" / "final.npz", sig)
    return sig


EVAL_MEMBER = [0.2, 0.4, 0.6, 0.8, 1.25, 1.45, 1.65, 1.85]
EVAL_NEW = [0.9, 1.3, 1.5, 1.6, 1.75, 1.8, 1.9, 2.0]


def test_the_output_folder_has_exactly_the_schema(run_folder, photos, tmp_path):
    tables, op = run(run_folder, photos, tmp_path / "out")
    assert sorted(p.name for p in (tmp_path / "out").iterdir() if p.is_file()) == [
        "candidates.csv", "contact_sheet.html", "encounters.csv", "operating_point.json",
        "photos.csv",
    ]  # fmt: skip
    for name, cols in (("photos", PHOTOS), ("encounters", ENCOUNTERS), ("candidates", CANDIDATES)):
        with (tmp_path / "out" / f"{name}.csv").open() as fh:
            assert next(csv.reader(fh)) == cols
    assert {"run", "engine", "attack", "aggregate", "rule", "photo", "encounter", "warning"} <= set(
        op
    )
    assert {"forced", "capture_gap_minutes", "counts"} <= set(op)
    for lvl in ("photo", "encounter"):
        assert LEVEL_KEYS <= set(op[lvl]) and op[lvl]["fpr_target"] == 0.05
        assert len(op[lvl]["eval_tpr_ci95"]) == 2
    assert op["counts"]["photos_scored"] == 7 and op["counts"]["skipped"] == 1
    assert op["counts"]["not_images"] == 1 and op["capture_gap_minutes"] is None
    for row in tables["photos"] + tables["encounters"]:  # scores with 3 decimals
        for key in ("p_known", "margin"):
            assert row.get(key, "") == "" or len(row[key].split(".")[1]) == 3


def test_corrupt_files_keep_their_encounter_and_candidates_cover_every_encounter(
    run_folder, photos, tmp_path
):
    tables, op = run(run_folder, photos, tmp_path / "out")
    by = {r["photo"]: r for r in tables["photos"]}
    assert by["enc_0/broken.jpg"]["encounter"] == "enc_0"
    assert by["enc_0/broken.jpg"]["decision"] == "skipped"
    assert (
        by["enc_0/broken.jpg"]["flag"] == "unreadable" and by["enc_0/broken.jpg"]["p_known"] == ""
    )
    assert by["notes.txt"]["flag"] == "not_image" and by["notes.txt"]["decision"] == "skipped"
    assert by["lone.jpg"]["encounter"] == "lone.jpg"  # a loose photo is its own encounter
    ranks = sorted(int(r["rank"]) for r in tables["photos"] if r["rank"])
    assert ranks == list(range(1, 8))
    enc = {r["encounter"]: r for r in tables["encounters"]}
    assert set(enc) == {"enc_0", "enc_1", "lone.jpg"}
    assert enc["enc_0"]["n_photos"] == "3" and enc["enc_0"]["rule"] == "mean"
    n_classes = len(json.loads((run_folder / "split_manifest.json").read_text())["class_names"])
    for e in enc:
        cands = [r for r in tables["candidates"] if r["encounter"] == e]
        assert [int(r["rank"]) for r in cands] == list(range(1, min(5, n_classes) + 1))
        assert [float(r["score"]) for r in cands] == sorted(
            (float(r["score"]) for r in cands), reverse=True
        )
        for r in cands:
            assert r["score_kind"] == "prob" and Path(r["catalog_photo"]).is_absolute()
            assert Path(r["catalog_photo"]).is_file() and r["individual"] in r["catalog_photo"]
            assert (photos / r["query_photo"]).is_file()
            assert by[r["query_photo"]]["encounter"] == e
    # the encounter's probability is the Platt map of its photos' mean score: between theirs
    p = [
        float(r["p_known"]) for r in tables["photos"] if r["encounter"] == "enc_0" and r["p_known"]
    ]
    assert min(p) - 1e-3 <= float(enc["enc_0"]["p_known"]) <= max(p) + 1e-3


def test_undecided_when_the_run_cannot_separate_and_said_everywhere(
    tmp_path, photos, make_run_folder, capsys
):
    """(a) known and new eval whales with the same losses: AUROC 0.5, so every decision is
    undecided, the warning is on stderr, first in the printed summary and in the JSON;
    --force_decisions decides anyway and still warns."""
    run_folder = make_run_folder(tmp_path)
    same = np.linspace(0.5, 1.5, 8)
    plant(run_folder, same, same)
    tables, op = run(run_folder, photos, tmp_path / "out")
    io = capsys.readouterr()
    assert op["warning"].startswith("WARNING: ") and "cannot separate" in op["warning"]
    assert not op["photo"]["separable"] and not op["encounter"]["separable"]
    assert op["photo"]["eval_auroc"] == 0.5 and op["forced"] is False
    assert io.out.splitlines()[0] == op["warning"] and op["warning"] in io.err
    scored = [r for r in tables["photos"] if r["decision"] != "skipped"]
    assert scored and {r["decision"] for r in scored} == {"undecided"}
    assert {r["decision"] for r in tables["encounters"]} == {"undecided"}
    assert op["counts"]["photo"] == {"known": 0, "new": 0, "undecided": 7}
    tables, op = run(run_folder, photos, tmp_path / "forced", "--force_decisions")
    assert op["forced"] is True and "deciding anyway" in op["warning"]
    decided = {r["decision"] for r in tables["photos"] if r["decision"] != "skipped"}
    assert decided <= {"known", "new", "undecided"} and decided & {"known", "new"}


def test_known_or_new_when_the_run_can_separate(tmp_path, photos, make_run_folder, capsys):
    """(b) eval members far less lossy than new whales: both levels separate and decide."""
    run_folder = make_run_folder(tmp_path)
    low, high = np.linspace(0.1, 0.5, 8), np.linspace(1.5, 2.0, 8)
    plant(run_folder, low, high, low, high)
    tables, op = run(run_folder, photos, tmp_path / "out")
    assert op["photo"]["separable"] and op["encounter"]["separable"]
    assert op["warning"] is None and op["photo"]["eval_tpr"] == 1.0
    assert "WARNING" not in capsys.readouterr().err
    unflagged = [r for r in tables["photos"] if r["decision"] != "skipped" and not r["flag"]]
    assert unflagged and {r["decision"] for r in unflagged} <= {"known", "new"}
    for r in unflagged:
        assert (r["decision"] == "known") == (float(r["p_known"]) >= op["photo"]["threshold_p"])
    for r in tables["encounters"]:
        if not r["flag"]:
            assert r["decision"] in ("known", "new")
            margin = float(r["p_known"]) - op["encounter"]["threshold_p"]
            assert float(r["margin"]) == pytest.approx(margin, abs=2e-3)
    # --aggregate vote: an encounter is known iff more than half of its photos are
    votes, op_v = run(run_folder, photos, tmp_path / "vote", "--aggregate", "vote")
    assert op_v["aggregate"] == "vote" and "more than half" in op_v["rule"]
    assert op_v["encounter"]["chosen_by"] == "the majority of its photos' decisions"
    for r in votes["encounters"]:
        n, k = int(r["n_photos"]), int(r["n_known_photos"])
        assert r["rule"] == "vote" and float(r["p_known"]) == pytest.approx(k / n, abs=1e-3)
        if not r["flag"] and op_v["encounter"]["separable"]:
            assert r["decision"] == ("known" if 2 * k > n else "new") and r["note"] == ""
    # a fit that ended at chance on its own data puts its warning on top, decisions unchanged
    (run_folder / "fit_health.json").write_text(json.dumps({"at_chance": True}))
    tables2, op = run(run_folder, photos, tmp_path / "health")
    assert "chance level on its own training data" in op["warning"]
    assert [r["decision"] for r in tables2["photos"]] == [r["decision"] for r in tables["photos"]]


def test_out_of_distribution_photos_are_undecided(run_folder, photos, tmp_path, monkeypatch):
    from experiments.commands import discriminate

    monkeypatch.setattr(discriminate, "ood_floor", lambda nearest: 2.0)  # above every cosine
    tables, op = run(run_folder, photos, tmp_path / "out")
    scored = [r for r in tables["photos"] if r["decision"] != "skipped"]
    assert {(r["decision"], r["flag"]) for r in scored} == {("undecided", "out_of_distribution")}
    assert all("nearest training photo cosine" in r["note"] for r in scored)
    assert {r["flag"] for r in tables["encounters"]} == {"out_of_distribution"}
    assert "1% quantile" in op["out_of_distribution_rule"]


def test_operating_point_rates_on_planted_signals_and_fpr_vs_threshold(
    tmp_path, photos, make_run_folder
):
    run_folder = make_run_folder(tmp_path)
    sig = plant(run_folder, EVAL_MEMBER, EVAL_NEW)
    att_new = np.sort(sig["loss_pred"][(sig["set"] == "attack") & (sig["role"] == "nonmember")])
    ev = sig["set"] == "eval"
    for fpr, tpr_fpr in ((0.05, (0.5, 0.125)), (0.5, (0.625, 0.25))):
        accept = sig["loss_pred"] < att_new[int(np.floor(fpr * len(att_new)))]  # by hand
        assert accept[ev & (sig["role"] == "member")].mean() == tpr_fpr[0]
        assert accept[ev & (sig["role"] != "member")].mean() == tpr_fpr[1]
        _, op = run(run_folder, photos, tmp_path / f"fpr{fpr}", "--fpr", str(fpr))
        assert (op["photo"]["eval_tpr"], op["photo"]["eval_fpr"]) == pytest.approx(tpr_fpr)
        assert op["photo"]["attack_set"]["fpr"] <= fpr and op["photo"]["fpr_target"] == fpr
    tables, op = run(run_folder, photos, tmp_path / "t", "--threshold", "0.5", "--force_decisions")
    assert op["photo"]["threshold_p"] == 0.5 and op["photo"]["chosen_by"] == "--threshold"
    for r in tables["photos"]:
        if r["decision"] != "skipped" and not r["flag"]:
            assert (r["decision"] == "known") == (float(r["p_known"]) >= 0.5)


def test_similarity_scoring_gives_cosine_candidates(run_folder, photos, tmp_path):
    tables, op = run(run_folder, photos, tmp_path / "cos", "--attack", "cosine")
    assert op["aggregate"] == "mean_embedding" and op["attack"] == "cosine"
    assert {r["score_kind"] for r in tables["candidates"]} == {"cosine"}
    assert {r["rule"] for r in tables["encounters"]} == {"mean_embedding"}
    for r in tables["candidates"]:
        assert -1.0 <= float(r["score"]) <= 1.0
    lone = [r for r in tables["candidates"] if r["encounter"] == "lone.jpg"]
    assert lone[0]["query_photo"] == "lone.jpg"


def test_no_result_is_overwritten_and_a_bare_overwrite_works(run_folder, photos, tmp_path, capsys):
    from cli import main

    out = tmp_path / "keep"
    run(run_folder, photos, out)
    before = (out / "photos.csv").read_bytes()
    argv = ["discriminate", "--run", str(run_folder), "--images", str(photos), "--out", str(out)]
    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == 2 and "already exists" in capsys.readouterr().err
    assert (out / "photos.csv").read_bytes() == before
    run(run_folder, photos, out, "--threshold", "0.99", "--overwrite")  # bare, last
    run(run_folder, photos, out, "--overwrite", "--threshold", "0.98")  # bare, in the middle
    _, op = read(out)
    assert op["photo"]["threshold_p"] == 0.98
    # without --output each run gets a fresh folder <run>/discriminate/<images>[-K]
    for _ in range(2):
        main(["discriminate", "--run", str(run_folder), "--images", str(photos), "--quiet"])
    made = sorted(p.name for p in (run_folder / "discriminate").iterdir())
    assert made == [photos.name, f"{photos.name}-1"]


@pytest.mark.parametrize(
    "option", [("--attack", "foo"), ("--aggregate", "vote!"), ("--engine", "gpu"),
               ("--unreadable", "ignore")],
)  # fmt: skip
def test_bad_choices_are_refused_before_scanning(run_folder, photos, capsys, monkeypatch, option):
    """(e) one line, exit 2, and neither the run nor the image folder was opened."""
    from cli import main
    from experiments.commands import discriminate

    def forbidden(*a, **k):
        raise AssertionError("opened before the options were checked")

    monkeypatch.setattr(discriminate, "scan", forbidden)
    monkeypatch.setattr(discriminate.RunContext, "open", forbidden)
    with pytest.raises(SystemExit) as exc:
        main(["discriminate", "--run", str(run_folder), "--images", str(photos), *option])
    err = capsys.readouterr().err.strip().splitlines()
    assert exc.value.code == 2 and len(err) == 1
    assert err[0].startswith(f"error: {option[0]} {option[1]}: choose one of ")


@pytest.mark.parametrize(
    "case", ["no_folder", "empty", "unreadable", "no_checkpoint", "fpr", "capture_gap", "groups"]
)
def test_bad_input_is_one_line_and_exit_2(run_folder, photos, tmp_path, capsys, case):
    from cli import main

    run_arg, imgs, extra = run_folder, photos, []
    if case == "no_folder":
        imgs = tmp_path / "nowhere"
    elif case == "empty":
        imgs = tmp_path / "empty"
        imgs.mkdir()
    elif case == "unreadable":
        extra = ["--unreadable", "error"]
    elif case == "no_checkpoint":
        run_arg = tmp_path / "run_copy"
        shutil.copytree(run_folder, run_arg, ignore=shutil.ignore_patterns("checkpoints"))
    else:
        extra = {"fpr": ["--fpr", "1.5"], "capture_gap": ["--capture_gap", "-3"]}.get(
            case, ["--groups", str(tmp_path / "groups.csv")]
        )
    out = tmp_path / "o"
    argv = ["discriminate", "--run", str(run_arg), "--images", str(imgs), "--out", str(out)]
    with pytest.raises(SystemExit) as exc:
        main(argv + extra)
    err = capsys.readouterr().err.strip().splitlines()
    assert exc.value.code == 2 and err[-1].startswith("error: ") and not out.exists()
    want = {
        "no_folder": "not a folder",
        "empty": "no readable photos",
        "unreadable": "broken.jpg",
        "no_checkpoint": "no checkpoint",
        "fpr": "--fpr 1.5",
        "capture_gap": "--capture_gap -3",
        "groups": "groups.csv: file not found",
    }
    assert want[case] in err[-1]


def test_discriminate_does_not_import_lightning(run_folder, photos, tmp_path):
    code = (
        "import sys; from cli import main; "
        f"main(['discriminate', '--run', {str(run_folder)!r}, '--images', {str(photos)!r}, "
        f"'--output', {str(tmp_path / 'x')!r}, '--n_boot', '50']); "
        "heavy = [m for m in ('pytorch_lightning', 'lightning', 'art', 'xgboost', 'matplotlib', "
        "'sklearn', 'torchmetrics') if m in sys.modules]; print('HEAVY', heavy)"
    )
    res = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=600
    )
    assert res.returncode == 0, res.stderr[-2000:]
    assert "HEAVY []" in res.stdout, res.stdout[-500:]


def test_a_groups_csv_overrides_the_subfolders(run_folder, photos, tmp_path):
    gcsv = tmp_path / "groups.csv"
    gcsv.write_text("image,group\nlone.jpg,g\nenc_0/f0.jpg,g\nenc_0/broken.jpg,g\n")
    tables, op = run(
        run_folder, photos, tmp_path / "g", "--groups", str(gcsv),
        "--attack", "baseline_nn_cosine", "--aggregate", "max",
    )  # fmt: skip
    enc = {r["encounter"]: r for r in tables["encounters"]}
    assert enc["g"]["n_photos"] == "2" and enc["g"]["rule"] == "max"
    assert {r["photo"]: r["encounter"] for r in tables["photos"]}["enc_0/broken.jpg"] == "g"
    assert op["attack"] == "cosine" and op["aggregate"] == "max"


def test_capture_gap_groups_loose_photos(run_folder, photos, tmp_path, monkeypatch):
    """Loose photos go through datamodules.capture_time (here a stand-in), stated in the JSON."""
    from datamodules import capture_time

    def by_time(paths, gap):
        return {p: "t1" for p in paths}, {p: "no capture time" for p in paths}

    monkeypatch.setattr(capture_time, "group_by_capture_time", by_time)
    tables, op = run(run_folder, photos, tmp_path / "gap", "--capture_gap", "30")
    assert op["capture_gap_minutes"] == 30.0
    lone = next(r for r in tables["photos"] if r["photo"] == "lone.jpg")
    assert lone["encounter"] == "t1" and "no capture time" in lone["note"]
    assert {r["photo"]: r["encounter"] for r in tables["photos"]}["enc_1/f3.jpg"] == "enc_1"
