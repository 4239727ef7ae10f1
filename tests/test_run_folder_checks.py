"""A run folder is checked before it is trusted: an edited or truncated split manifest, a damaged
``config.yaml``, a damaged ``signals/final.npz`` or ``final_timing.json`` and a checkpoint of
another architecture, each through ``cli.main`` on a tiny run folder built without training
(``attack``, ``discriminate`` and ``export``): one ``error:`` line naming the file, exit 2, and
the run folder unchanged; or, for the signal files, extracted again from the checkpoint. And
``attack`` on a missing or empty folder, a run whose checkpoint is deleted, truncated or holds
unsafe objects, or an output folder that already holds results: refused the same way."""

from __future__ import annotations

import csv
import shutil
from pathlib import Path

import pytest
import torch

import cli
from attacks.signals import load_signals, save_signals
from datamodules.errors import DataError
from datamodules.manifest import read_manifest
from tests.cli_checks import refused, snapshot

#: ``cli.py attack`` that only extracts the final signals (every attack off)
ATTACK_OFF = ["--yeom.enabled", "false", "--salem.enabled", "false"]
ATTACK_OFF += ["--label_only.enabled", "false", "--ensemble.enabled", "false"]
ATTACK_OFF += ["--baselines", "false", "--device", "cpu"]


@pytest.fixture(scope="module")
def base_run(tmp_path_factory, make_run_folder) -> Path:
    """A tiny untrained run folder (resnet18, 24 px) with its final signals extracted once."""
    run = make_run_folder(tmp_path_factory.mktemp("checks"), n_individuals=9, photos=2, size=24)
    cli.main(["attack", "--run", str(run), *ATTACK_OFF])
    assert (run / "signals" / "final.npz").is_file()
    return run


@pytest.fixture
def run(base_run, tmp_path) -> Path:
    """A private copy of :func:`base_run` (its catalog stays shared, read-only)."""
    copy = tmp_path / "run"
    shutil.copytree(base_run, copy, ignore=shutil.ignore_patterns("attacks*"))
    return copy


@pytest.fixture(scope="module")
def photos(base_run, tmp_path_factory) -> Path:
    """Four catalog photos in one encounter folder: new photos for ``discriminate``."""
    out = tmp_path_factory.mktemp("photos")
    (out / "enc").mkdir()
    for i, p in enumerate(sorted((base_run.parent / "cat").rglob("*.jpg"))[:4]):
        shutil.copy(p, out / "enc" / f"p{i}.jpg")
    return out


def commands(run: Path, photos: Path, tmp: Path) -> dict[str, list[str]]:
    """The three commands that open a run folder, their outputs outside the run."""
    return {
        "attack": ["attack", "--run", str(run), *ATTACK_OFF],
        "discriminate": ["discriminate", "--run", str(run), "--images", str(photos)]
        + ["--engine", "torch", "--n_boot", "50", "--quiet", "--output", str(tmp / "disc")],
        "export": ["export", "--run", str(run), "--check_photos", "2"],
    }


# ---- the split manifest ------------------------------------------------------------------------
def edit_manifest(run: Path, how: str) -> None:
    """Flip ``role`` on four evaluation rows, or drop the last rows, of the manifest CSV."""
    path = run / "split_manifest.csv"
    with path.open(newline="") as fh:
        rows = list(csv.DictReader(fh))
    if how == "flip_roles":
        flipped = 0
        for r in rows:
            if r["set"] == "eval" and flipped < 4:
                r["role"] = "member" if r["role"] == "nonmember" else "nonmember"
                flipped += 1
        assert flipped == 4
    else:
        rows = rows[:-5]
    with path.open("w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(rows[0]), lineterminator="\n")
        w.writeheader()
        w.writerows(rows)


@pytest.mark.parametrize("how", ["flip_roles", "drop_rows"])
@pytest.mark.parametrize("command", ["attack", "discriminate", "export"])
def test_an_edited_manifest_is_refused(run, photos, tmp_path, capsys, how, command):
    edit_manifest(run, how)
    line = refused(capsys, commands(run, photos, tmp_path)[command], run, "split_manifest.csv")
    assert "changed after the fit" in line and "re-run the fit" in line
    assert not (tmp_path / "disc").exists()


def test_a_manifest_without_its_json_is_refused(run, photos, tmp_path, capsys):
    (run / "split_manifest.json").unlink()
    line = refused(capsys, commands(run, photos, tmp_path)["attack"], run, "split_manifest.json")
    assert "missing" in line


def test_read_manifest_checks_the_recorded_hash(run):
    rows, header = read_manifest(run)
    assert len(rows) > 0 and len(header["hash"]) == 64
    edit_manifest(run, "flip_roles")
    with pytest.raises(DataError, match="changed after the fit"):
        read_manifest(run)


# ---- config.yaml -------------------------------------------------------------------------------
CONFIGS = {
    "empty": "",
    "truncated": "trainer:\n  max_epochs: 1\nmodel:\n  init_args:\n    arch: res",
    "not_a_mapping": "- model\n- data\n",
    "unparsable": "model: {init_args: [arch\n data: :\n",
}


@pytest.mark.parametrize("case", sorted(CONFIGS))
@pytest.mark.parametrize("command", ["attack", "discriminate", "export"])
def test_a_damaged_config_is_one_line(run, photos, tmp_path, capsys, case, command):
    (run / "config.yaml").write_text(CONFIGS[case])
    refused(capsys, commands(run, photos, tmp_path)[command], run, "config.yaml")


# ---- signals/final.npz and final_timing.json ---------------------------------------------------
@pytest.mark.parametrize("damage", ["truncated_npz", "empty_npz", "truncated_timing", "short_npz"])
def test_damaged_final_signals_are_extracted_again(run, damage):
    sig_path = run / "signals" / "final.npz"
    timing = sig_path.with_name("final_timing.json")
    n = len(load_signals(sig_path)["index"])
    if damage == "truncated_npz":
        sig_path.write_bytes(sig_path.read_bytes()[: sig_path.stat().st_size // 2])
    elif damage == "empty_npz":
        sig_path.write_bytes(b"")
    elif damage == "truncated_timing":
        timing.write_text(timing.read_text()[:20])
    else:  # a whole file of fewer rows than the manifest
        sig = load_signals(sig_path)
        save_signals(sig_path, {k: v[:3] for k, v in sig.items()})
    cli.main(commands(run, Path(), run)["attack"])
    assert len(load_signals(sig_path)["index"]) == n
    assert "seconds_per_sample" in timing.read_text()


def test_damaged_cached_signals_without_a_checkpoint_are_refused(run, capsys):
    sig_path = run / "signals" / "final.npz"
    sig_path.write_bytes(sig_path.read_bytes()[:100])
    (run / "checkpoints" / "last.ckpt").unlink()
    argv = [*commands(run, Path(), run)["attack"], "--cached_signals", "true"]
    before = snapshot(run)
    with pytest.raises(SystemExit) as exc:
        cli.main(argv)
    err = capsys.readouterr().err
    lines = [ln for ln in err.splitlines() if ln.startswith("error:")]
    assert exc.value.code == 2 and len(lines) == 1 and "final.npz" in lines[0], err
    # attack.py makes its output folder before it reads the signals; nothing else changes
    after = {k: v for k, v in snapshot(run).items() if not k.startswith("attacks")}
    assert after == before


# ---- a checkpoint of another architecture ------------------------------------------------------
def other_checkpoint(run: Path, *, hparams: bool) -> None:
    """Replace the run's ``last.ckpt`` (resnet18) by a shufflenet classifier's, with its
    ``hyper_parameters`` as ``cli.py fit`` saves them, or weights only."""
    from lightning_modules.classifier import ImageClassifier

    n = len(read_manifest(run)[1]["class_names"])
    model = ImageClassifier(num_classes=n, arch="shufflenet_v2_x0_5", load_weights=False)
    state = {"state_dict": model.state_dict()}
    if hparams:
        state["hyper_parameters"] = dict(model.hparams)
    torch.save(state, run / "checkpoints" / "last.ckpt")


@pytest.mark.parametrize("command", ["attack", "discriminate", "export"])
def test_another_architecture_s_checkpoint_is_one_line(run, photos, tmp_path, capsys, command):
    other_checkpoint(run, hparams=True)
    line = refused(capsys, commands(run, photos, tmp_path)[command], run, "last.ckpt", "resnet18")
    assert "shufflenet_v2_x0_5" in line
    assert not (tmp_path / "disc").exists()


def test_another_architecture_s_weights_alone_are_one_line(run, photos, tmp_path, capsys):
    """A checkpoint without hyper-parameters is caught when its weights are loaded."""
    other_checkpoint(run, hparams=False)
    refused(capsys, commands(run, photos, tmp_path)["export"], run, "last.ckpt", "resnet18")


def test_a_resumed_split_from_a_moved_catalog_records_where_the_photos_are_now(tmp_path):
    """The same split read from a catalog that moved (a resume allowed to change data.root):
    the CSV and its hash stay, the JSON's roots follow the catalog."""
    from datamodules.manifest import read_manifest, write_manifest

    rows = [{"sample_id": 0, "file": "a/1.jpg", "identity": "a"}]
    cols = ["sample_id", "file", "identity"]
    write_manifest(tmp_path, rows, {"roots": {"main": "/old/catalog"}}, cols)
    before = (tmp_path / "split_manifest.csv").read_bytes()
    write_manifest(tmp_path, rows, {"roots": {"main": "/new/catalog"}}, cols)
    _, header = read_manifest(tmp_path)
    assert header["roots"] == {"main": "/new/catalog"}
    assert header["roots_before"] == {"main": "/old/catalog"}
    assert (tmp_path / "split_manifest.csv").read_bytes() == before


# ---- a missing, empty or damaged run folder given to attack ------------------------------------
@pytest.fixture
def new_run(tmp_path, make_run_folder) -> Path:
    """A tiny untrained run folder of its own, without extracted signals."""
    return make_run_folder(tmp_path, n_individuals=9, encounters=2, photos=2, size=24)


def test_attack_missing_run(tmp_path, capsys):
    refused(capsys, ["attack", "--run", str(tmp_path / "nope")], tmp_path, "nope")


def test_attack_not_a_run_folder(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    refused(capsys, ["attack", "--run", str(tmp_path / "empty")], tmp_path, "empty")


def test_attack_checkpoint_deleted(new_run, capsys):
    (new_run / "signals").mkdir()
    (new_run / "signals" / "final.npz").write_bytes(b"cached")
    (new_run / "checkpoints" / "last.ckpt").unlink()
    line = refused(capsys, ["attack", "--run", str(new_run)], new_run.parent, "last.ckpt")
    assert "label-only" in line or "cached_signals" in line
    assert not (new_run / "attacks").exists()


def test_attack_truncated_checkpoint(new_run, capsys):
    ckpt = new_run / "checkpoints" / "last.ckpt"
    ckpt.write_bytes(ckpt.read_bytes()[:1000])
    refused(capsys, ["attack", "--run", str(new_run)], new_run.parent, "last.ckpt")


def test_attack_unsafe_checkpoint(new_run, capsys):
    torch.save({"state_dict": {}, "obj": Path("x")}, new_run / "checkpoints" / "last.ckpt")
    refused(capsys, ["attack", "--run", str(new_run)], new_run.parent, "last.ckpt")


def test_attack_existing_output(new_run, capsys):
    (new_run / "mine").mkdir()
    (new_run / "mine" / "keep.txt").write_text("keep")
    refused(capsys, ["attack", "--run", str(new_run), "--output", "mine"], new_run.parent, "mine")
