"""The shared output guard (experiments/run/outputs.py): never overwrite, atomic writes, fresh
names and folders, and the commands that write through it (defend, audit, study)."""

from __future__ import annotations

import pytest

from datamodules.errors import DataError
from experiments.run import outputs


def test_claim_refuses_existing_path_unless_overwrite(tmp_path):
    target = tmp_path / "out.csv"
    assert outputs.claim(target) == target
    target.write_text("first")
    with pytest.raises(DataError, match="already exists.*--overwrite"):
        outputs.claim(target)
    assert target.read_text() == "first"
    assert outputs.claim(target, overwrite=True) == target


def test_fresh_name_skips_used_names(tmp_path):
    (tmp_path / "a.csv").write_text("x")
    (tmp_path / "a-1.csv").write_text("x")
    assert outputs.fresh_name(tmp_path, "a", ".csv").name == "a-2.csv"


def test_atomic_write_leaves_old_file_on_failure(tmp_path):
    target = outputs.write_text(tmp_path / "f.txt", "old")
    with pytest.raises(RuntimeError), outputs.atomic_path(target) as tmp:
        tmp.write_text("half")
        raise RuntimeError("killed")
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["f.txt"]


def test_fresh_tag_is_one_suffix_for_a_set_of_files(tmp_path):
    names = [("table", ".csv"), ("plot", ".png")]
    assert outputs.fresh_tag(tmp_path, names) == ""
    (tmp_path / "plot.png").write_text("x")  # one file of the set is enough to move on
    assert outputs.fresh_tag(tmp_path, names) == "-1"


def test_claim_folder_takes_absent_or_empty_and_refuses_results(tmp_path):
    assert outputs.claim_folder(tmp_path / "new") == tmp_path / "new"
    assert not (tmp_path / "new").exists()  # nothing created before the caller's checks
    (tmp_path / "empty").mkdir()
    assert outputs.claim_folder(tmp_path / "empty") == tmp_path / "empty"
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "report.md").write_text("first")
    with pytest.raises(DataError, match="holds results.*--overwrite to write"):
        outputs.claim_folder(tmp_path / "full")
    assert outputs.claim_folder(tmp_path / "full", overwrite=True) == tmp_path / "full"
    (tmp_path / "file").write_text("x")
    with pytest.raises(DataError, match="is a file"):
        outputs.claim_folder(tmp_path / "file", overwrite=True)


def _one_line_exit_2(capsys, argv: list[str]) -> str:
    import cli

    with pytest.raises(SystemExit) as exc:
        cli.main(argv)
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "\n" not in err and "Traceback" not in err
    return err


def test_defend_refuses_a_variant_that_already_ran(tmp_path, capsys):
    out = tmp_path / "sweep"
    earlier = out / "base" / "version_0" / "events.out.tfevents.1"
    earlier.parent.mkdir(parents=True)
    earlier.write_text("first")
    argv = ["defend", "--config", "defense_sweep.yaml", "--output", str(out), "--only", "[base]"]
    err = _one_line_exit_2(capsys, argv)
    assert str(out / "base") in err and "--overwrite to train" in err
    assert earlier.read_text() == "first"
    assert sorted(p.name for p in out.iterdir()) == ["base"]  # nothing trained, no table


def test_defend_sweeps_sharing_a_folder_keep_every_table(tmp_path, monkeypatch):
    from experiments.commands import defend

    trained = []
    monkeypatch.setattr(defend, "fit_main", lambda args: trained.append(args))
    monkeypatch.setattr(
        defend,
        "summarize",
        lambda name, run, epochs: {c: 0.5 for c in defend.COLUMNS} | {"variant": name},
    )
    variants = {"base": defend.Variant(), "dropout": defend.Variant()}
    defend.run_sweep(variants, 1, tmp_path, only=["base"])
    first = (tmp_path / "defense_table.csv").read_text()
    (tmp_path / "base").mkdir()  # the fake fit made no folder; a real one does
    defend.run_sweep(variants, 1, tmp_path, only=["dropout"])
    assert (tmp_path / "defense_table.csv").read_text() == first  # the first sweep's table kept
    assert "dropout" in (tmp_path / "defense_table-1.csv").read_text()
    assert (tmp_path / "privacy_utility-1.png").is_file()
    assert len(trained) == 2
    with pytest.raises(DataError, match="no such variant"):
        defend.run_sweep(variants, 1, tmp_path, only=["dropuot"])


def test_audit_refuses_an_existing_output_folder(tmp_path, capsys):
    out = tmp_path / "audit"
    out.mkdir()
    (out / "report.md").write_text("first")
    err = _one_line_exit_2(
        capsys, ["audit", "--config", "detection_demo.yaml", "--output", str(out)]
    )
    assert str(out) in err and "--overwrite to write" in err
    assert [p.name for p in out.iterdir()] == ["report.md"]
    assert (out / "report.md").read_text() == "first"


def test_study_never_writes_into_an_earlier_study(tmp_path):
    from experiments.commands.study import study_folder

    (tmp_path / "version_0").mkdir()
    (tmp_path / "version_0" / "summary.json").write_text("first")
    assert study_folder(tmp_path) == tmp_path / "version_1"
    assert study_folder(tmp_path) == tmp_path / "version_2"
    assert (tmp_path / "version_0" / "summary.json").read_text() == "first"
