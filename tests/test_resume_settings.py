"""A resume is the same run, and an evaluation leaves the run as it was.

``fit --ckpt_path <run>/checkpoints/last.ckpt`` with a setting that changes what the run is
(image size, architecture, seed, split) is refused in one line naming the setting, before
anything is written; with ``--resume_changes true`` a data change is accepted, recorded in
``config_resume_K.yaml``, and read by the later commands. ``validate`` and ``test`` write into
``<run>/evaluations/<subcommand>_N/`` only: never into the current folder, never a
``config_resume_K.yaml``. Real tiny fits (32 px, one step)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import yaml

import cli
from tests.cli_checks import refused as refuse
from tests.cli_checks import snapshot

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def fitted(tmp_path_factory, tiny_args, one_step) -> tuple[Path, list[str]]:
    """``(run folder, its fit arguments)`` of a one-step resnet18 fit at 32 px."""
    tmp = tmp_path_factory.mktemp("resume")
    args = [*tiny_args(tmp, epochs=1), *one_step]
    cli.main(args)
    return tmp / "logs" / "run" / "version_0", args


@pytest.fixture
def run(fitted, tmp_path) -> tuple[Path, list[str]]:
    """A private copy of the fitted run (under a ``logs/run/version_0`` of its own) and the fit
    arguments that resume it."""
    src, args = fitted
    dest = tmp_path / "logs" / "run" / "version_0"
    shutil.copytree(src, dest)
    return dest, [*args, "--ckpt_path", str(dest / "checkpoints" / "last.ckpt")]


def refused(capsys, argv: list[str], run: Path, *names: str) -> str:
    """Exit 2, one ``error:`` line naming each of ``names``, the run folder unchanged and no
    new run beside it."""
    line = refuse(capsys, argv, run, *names)
    assert not (run.parent / "version_1").exists()
    return line


@pytest.mark.parametrize(
    "change,names",
    [
        (["--data.init_args.loader.image_size", "48"], ["loader.image_size", "32", "48"]),
        (["--seed_everything", "7"], ["seed_everything", "0", "7"]),
        (["--data.init_args.split.seed", "3"], ["data.init_args.split.seed from 0"]),
        (
            ["--data.init_args.reader.init_args.n_individuals", "12"],
            ["data.init_args.reader.init_args.n_individuals from 9"],
        ),
        (["--model.init_args.arch", "shufflenet_v2_x0_5"], ["model.init_args.arch", "resnet18"]),
    ],
)
def test_a_resume_that_changes_the_run_is_refused(run, capsys, change, names):
    folder, resume = run
    line = refused(capsys, [*resume, *change], folder, str(folder / "checkpoints"), *names)
    assert "--resume_changes" in line and "a resume continues the same run" in line


def test_a_model_change_is_refused_even_with_the_override(run, capsys):
    folder, resume = run
    argv = [*resume, "--model.init_args.arch", "shufflenet_v2_x0_5", "--resume_changes", "true"]
    line = refused(capsys, argv, folder, "model.init_args.arch", "shufflenet_v2_x0_5")
    assert "not even --resume_changes" in line


def test_settings_that_do_not_change_the_run_are_free(run):
    folder, resume = run
    cli.main([*resume, "--trainer.max_epochs", "2", "--data.init_args.loader.num_workers", "0"])
    saved = yaml.safe_load((folder / "config_resume_1.yaml").read_text())
    assert saved["trainer"]["max_epochs"] == 2
    assert saved["data"]["init_args"]["loader"]["image_size"] == 32


def test_the_override_records_the_change_and_attack_reads_it(run, capsys):
    from experiments.run.folder import RunContext

    folder, resume = run
    cli.main([*resume, "--trainer.max_epochs", "2", "--data.init_args.loader.image_size", "48"]
             + ["--resume_changes", "true"])  # fmt: skip
    saved = yaml.safe_load((folder / "config_resume_1.yaml").read_text())
    assert saved["data"]["init_args"]["loader"]["image_size"] == 48
    assert (
        yaml.safe_load((folder / "config.yaml").read_text())["data"]["init_args"]["loader"][
            "image_size"
        ]
        == 32
    )
    ctx = RunContext.open(folder)
    assert ctx.image_size == 48 and ctx.config_file.name == "config_resume_1.yaml"
    off = ["--yeom.enabled", "false", "--salem.enabled", "false", "--label_only.enabled", "false"]
    off += ["--ensemble.enabled", "false", "--baselines", "false", "--device", "cpu"]
    cli.main(["attack", "--run", str(folder), *off])
    assert tuple(ctx.images(ctx.rows[:2]).shape) == (2, 3, 48, 48)
    assert (folder / "signals" / "final.npz").is_file()
    # the next resume compares with the recorded 48 px: going back to 32 is a change again
    refused(capsys, [*resume, "--trainer.max_epochs", "3"], folder, "image_size from 48")


@pytest.mark.parametrize("sub,extra", [("validate", []), ("test", ["--trainer.logger", "false"])])
def test_validate_and_test_write_only_an_evaluations_folder(run, tmp_path, monkeypatch, sub, extra):
    folder, resume = run
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    before = snapshot(folder)
    argv = [sub, *resume[1:], *extra, "--trainer.limit_test_batches", "1"]
    cli.main(argv)
    after = snapshot(folder)
    added = sorted(set(after) - set(before))
    assert {k: after[k] for k in before} == before  # nothing of the run changed
    assert added and all(k.startswith(f"evaluations/{sub}_0") or k == "evaluations" for k in added)
    assert not any((cwd / n).exists() for n in ("config.yaml", "environment.json"))
    assert not list(cwd.rglob("split_manifest.*")) and not list(folder.glob("config_resume_*"))


@pytest.mark.parametrize("damage", ["manifest", "config"])
def test_a_resume_from_a_damaged_run_folder_is_refused(run, capsys, damage):
    folder, resume = run
    if damage == "manifest":
        path = folder / "split_manifest.csv"
        path.write_text(path.read_text().replace("nonmember", "member", 2))
        refused(capsys, resume, folder, "split_manifest.csv", "changed after the fit")
    else:
        path = folder / "config.yaml"
        path.write_text(path.read_text()[:200])
        refused(capsys, resume, folder, "config.yaml")


def test_an_override_that_changes_the_split_is_refused_and_leaves_the_run_as_it_was(run, capsys):
    """Accepted by the settings check (a data change, with the override), refused once the new
    split differs from the run's manifest; the event file and config_resume_K.yaml the attempt
    had written are gone again."""
    folder, resume = run
    argv = [*resume, "--data.init_args.split.seed", "3", "--resume_changes", "true"]
    refused(capsys, argv, folder, "split_manifest.csv", "different split")
