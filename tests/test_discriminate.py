"""`cli.py discriminate` on a tiny run folder (untrained, no fit): candidates for every photo and
encounter, encounter consensus, the operating point's TPR and FPR on planted signals, --fpr
against --threshold, similarity scoring (the embedding-target path), no overwrite, bad input as
one line and exit 2, and no Lightning import."""

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


@pytest.fixture(scope="module")
def run_folder(tmp_path_factory, make_run_folder) -> Path:
    return make_run_folder(tmp_path_factory.mktemp("disc_run"))


@pytest.fixture(scope="module")
def photos(run_folder, tmp_path_factory) -> Path:
    """Two encounter subfolders of 3 photos, a lone photo, a broken JPEG and a text file."""
    src = sorted((run_folder.parent / "cat").rglob("*.jpg"))
    imgs = tmp_path_factory.mktemp("new")
    for i, p in enumerate(src[:6]):
        (imgs / f"enc_{i // 3}").mkdir(exist_ok=True)
        (imgs / f"enc_{i // 3}" / f"f{i}.jpg").write_bytes(p.read_bytes())
    (imgs / "lone.jpg").write_bytes(src[10].read_bytes())
    (imgs / "broken.jpg").write_bytes(src[11].read_bytes()[:200])  # truncated JPEG
    (imgs / "notes.txt").write_text("not a photo")
    return imgs


def run(run_folder: Path, imgs: Path, out: Path, *extra: str) -> tuple[list[dict], dict]:
    from cli import main

    main(
        ["discriminate", "--run", str(run_folder), "--images", str(imgs), "--output", str(out)]
        + ["--n_boot", "200", *extra]
    )
    return list(csv.DictReader(out.open())), json.loads(out.with_suffix(".json").read_text())


def test_candidates_for_every_photo_and_encounter_and_the_consensus(run_folder, photos, tmp_path):
    rows, summary = run(run_folder, photos, tmp_path / "out.csv")
    n_classes = len(json.loads((run_folder / "split_manifest.json").read_text())["class_names"])
    k = min(5, n_classes)
    by = {(r["level"], r["image"] or r["encounter"]): r for r in rows}
    assert by[("photo", "broken.jpg")]["status"] == "corrupt"
    assert by[("photo", "notes.txt")]["status"] == "not_an_image"
    ok = [r for r in rows if r["status"] == "ok"]
    assert len([r for r in ok if r["level"] == "photo"]) == 7
    assert {r["encounter"] for r in ok if r["level"] == "encounter"} == {"enc_0", "enc_1"}
    for r in ok:  # candidates whatever the decision
        assert r["decision"] in ("known", "new")
        assert all(r[f"cand{j}"] for j in range(1, k + 1)), r
        assert 0.0 <= float(r["p_known"]) <= 1.0
        assert float(r["eval_tpr_lo"]) <= float(r["eval_tpr"]) <= float(r["eval_tpr_hi"])
    # the encounter's consensus is the mean of its photos' class probabilities
    for e in ("enc_0", "enc_1"):
        members = [r for r in ok if r["level"] == "photo" and r["encounter"] == e]
        probs = [
            {r[f"cand{j}"]: float(r[f"cand{j}_prob"]) for j in range(1, k + 1)} for r in members
        ]
        mean = {c: np.mean([p.get(c, 0.0) for p in probs]) for c in probs[0]}
        enc = by[("encounter", e)]
        assert enc["n_photos"] == "3" and len(members) == 3
        if k == n_classes:  # every probability is in the CSV
            best = sorted(mean, key=lambda c: -mean[c])
            assert [enc[f"cand{j}"] for j in range(1, k + 1)] == best
            assert float(enc["cand1_prob"]) == pytest.approx(mean[best[0]], abs=2e-4)
        assert {r["encounter_decision"] for r in members} == {enc["decision"]}
        assert {r["encounter_p_known"] for r in members} == {enc["p_known"]}
    assert by[("photo", "lone.jpg")]["encounter"] == "" and summary["counts"]["encounters"] == 2
    assert summary["aggregate"] == "mean" and summary["attack"] == "yeom"


def plant(run_folder: Path) -> dict:
    """Replace the run's final signals' losses: attack-set new whales at 1.0-1.7 nats, eval
    members and non-members at the values below (members of the attack set at 0.3-1.05)."""
    from experiments.runs import RunContext, final_signals
    from experiments.torch_target import load_target

    ctx = RunContext.open(run_folder, "cpu")
    load_target(ctx)
    sig, _ = final_signals(ctx)
    loss = np.zeros(len(sig["index"]))
    for set_name, role, vals in (
        ("attack", "member", np.linspace(0.3, 1.05, 8)),
        ("attack", "nonmember", np.linspace(1.0, 1.7, 8)),
        ("eval", "member", [0.2, 0.4, 0.6, 0.8, 1.25, 1.45, 1.65, 1.85]),
        ("eval", "nonmember", [0.9, 1.3, 1.5, 1.6, 1.75, 1.8, 1.9, 2.0]),
    ):
        m = (sig["set"] == set_name) & (sig["role"] == role)
        assert m.sum() == len(vals)
        loss[m] = vals
    sig["loss_pred"] = loss.astype(np.float32)
    save_signals(run_folder / "signals" / "final.npz", sig)
    return sig


def expected_rates(sig: dict, fpr: float) -> tuple[float, float]:
    """By hand: allow floor(fpr * n) of the attack set's new photos above the threshold, then
    count the eval photos strictly less lossy than the next one."""
    att_new = np.sort(sig["loss_pred"][(sig["set"] == "attack") & (sig["role"] == "nonmember")])
    cut = att_new[int(np.floor(fpr * len(att_new)))]
    ev = sig["set"] == "eval"
    accept = sig["loss_pred"] < cut
    return accept[ev & (sig["role"] == "member")].mean(), accept[
        ev & (sig["role"] != "member")
    ].mean()


def test_operating_point_rates_on_planted_signals_and_fpr_vs_threshold(
    tmp_path, photos, make_run_folder
):
    run_folder = make_run_folder(tmp_path)
    sig = plant(run_folder)
    for fpr, tpr_fpr in ((0.05, (0.5, 0.125)), (0.25, (0.5, 0.125)), (0.5, (0.625, 0.25))):
        assert expected_rates(sig, fpr) == pytest.approx(tpr_fpr)
        rows, s = run(run_folder, photos, tmp_path / f"fpr{fpr}.csv", "--fpr", str(fpr))
        op = s["operating_point"]["photo"]
        assert op["eval"]["tpr"][0] == pytest.approx(tpr_fpr[0])
        assert op["eval"]["fpr"][0] == pytest.approx(tpr_fpr[1])
        assert op["attack_set"]["fpr"] <= fpr
        assert op["chosen_by"] == f"FPR {fpr} on the attack set"
        photo = [r for r in rows if r["level"] == "photo" and r["status"] == "ok"]
        assert {r["eval_tpr"] for r in photo} == {f"{tpr_fpr[0]:.4f}"}
        assert {r["eval_fpr"] for r in photo} == {f"{tpr_fpr[1]:.4f}"}
        for r in photo:
            assert (r["decision"] == "known") == (float(r["p_known"]) >= op["threshold_p"])
    rows, s = run(run_folder, photos, tmp_path / "t.csv", "--threshold", "0.5")
    op = s["operating_point"]["photo"]
    assert op["threshold_p"] == 0.5 and op["chosen_by"] == "--threshold"
    for r in rows:
        if r["status"] == "ok":
            assert r["threshold_p"] == "0.5000"
            assert (r["decision"] == "known") == (float(r["p_known"]) >= 0.5)
    # the 50/50-prior probability: about 0.5 where the two planted attack-set classes overlap
    assert 0.2 < op["eval"]["tpr"][0] <= 1.0


def test_similarity_scoring_for_embedding_targets(run_folder, photos, tmp_path):
    from experiments.runs import is_embedding_target

    assert is_embedding_target({"head": "arcface"}) and not is_embedding_target({"arch": "x"})
    rows, s = run(run_folder, photos, tmp_path / "cos.csv", "--attack", "cosine")
    assert s["aggregate"] == "mean_embedding" and "cosine" in s["candidates"]
    ok = [r for r in rows if r["status"] == "ok"]
    assert "cand1_cosine" in rows[0] and "cand1_prob" not in rows[0]
    for r in ok:  # the best identity's nearest photo is the nearest training photo
        assert float(r["cand1_cosine"]) == pytest.approx(float(r["nearest_cosine"]), abs=2e-4)
        assert -1.0 <= float(r["nearest_cosine"]) <= 1.0


def test_no_result_is_overwritten(run_folder, photos, tmp_path, capsys):
    from cli import main

    out = tmp_path / "keep.csv"
    run(run_folder, photos, out)
    before = out.read_bytes()
    with pytest.raises(SystemExit) as exc:
        main(["discriminate", "--run", str(run_folder), "--images", str(photos), "--out", str(out)])
    assert exc.value.code == 2 and "already exists" in capsys.readouterr().err
    assert out.read_bytes() == before
    run(run_folder, photos, out, "--overwrite", "true", "--threshold", "0.99")
    assert out.read_bytes() != before
    # without --output each run gets a fresh name in <run>/discriminate/
    made = []
    for _ in range(2):
        main(["discriminate", "--run", str(run_folder), "--images", str(photos), "--quiet", "true"])
        made.append(sorted((run_folder / "discriminate").glob("*.csv")))
    assert len(made[1]) == len(made[0]) + 1


@pytest.mark.parametrize("case", ["no_folder", "empty", "unreadable", "no_checkpoint"])
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
    else:
        run_arg = tmp_path / "run_copy"
        shutil.copytree(run_folder, run_arg, ignore=shutil.ignore_patterns("checkpoints"))
    out = tmp_path / "o.csv"
    argv = ["discriminate", "--run", str(run_arg), "--images", str(imgs), "--out", str(out)]
    with pytest.raises(SystemExit) as exc:
        main(argv + extra)
    err = capsys.readouterr().err.strip().splitlines()
    assert exc.value.code == 2 and err[-1].startswith("error: ") and not out.exists()
    want = {"no_folder": "not a folder", "empty": "no readable photos", "unreadable": "broken.jpg"}
    assert want.get(case, "no checkpoint") in err[-1]


def test_discriminate_does_not_import_lightning(run_folder, photos, tmp_path):
    code = (
        "import sys; from cli import main; "
        f"main(['discriminate', '--run', {str(run_folder)!r}, '--images', {str(photos)!r}, "
        f"'--output', {str(tmp_path / 'x.csv')!r}, '--n_boot', '50']); "
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
    gcsv.write_text("image,group\nlone.jpg,g\nenc_0/f0.jpg,g\n")
    rows, s = run(
        run_folder,
        photos,
        tmp_path / "g.csv",
        "--groups",
        str(gcsv),
        "--attack",
        "baseline_nn_cosine",
        "--aggregate",
        "max",
    )
    enc = {r["encounter"]: r for r in rows if r["level"] == "encounter"}
    assert set(enc) == {"g"} and enc["g"]["n_photos"] == "2"
    assert s["attack"] == "cosine" and s["aggregate"] == "max"


def test_an_embedding_head_run_is_scored_by_similarity(run_folder, photos, tmp_path, monkeypatch):
    """A run whose classifier has an embedding head (``model.init_args.head``) goes through its
    LightningModule (here a stand-in with the same ``embed``) and defaults to similarity scoring:
    nearest training photo's cosine, mean embedding per encounter, cosine candidates."""
    import yaml

    from experiments import runs
    from experiments.torch_target import PlainTarget, load_target

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
    rows, s = run(emb_run, photos, tmp_path / "emb.csv")
    assert isinstance(plain["m"], PlainTarget)
    assert s["attack"] == "cosine" and s["aggregate"] == "mean_embedding"
    enc = [r for r in rows if r["level"] == "encounter"]
    assert len(enc) == 2 and all(r["cand1"] and r["cand1_cosine"] for r in enc)
    for r in enc:  # the encounter's best identity holds its mean embedding's nearest photo
        assert float(r["cand1_cosine"]) == pytest.approx(float(r["nearest_cosine"]), abs=2e-4)


@pytest.mark.parametrize("extra", [{}, {"dropout_defense": True, "preset": "regularized"}])
def test_the_plain_target_equals_the_lightning_module(tmp_path, make_run_folder, extra):
    import torch

    from experiments.runs import RunContext, load_classifier
    from experiments.torch_target import PlainTarget, load_target

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

    from experiments.discriminate import _progress

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
    from experiments.discriminate import feature

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
    from experiments import torch_target
    from experiments.runs import RunContext

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
    rows, _ = run(run_folder, photos, tmp_path / "lb.csv")
    assert rows and given and all(any(t is m for m in made) for t in given)
