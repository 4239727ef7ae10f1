"""The command line: every subcommand is listed and documented, and --help exits 0."""

from __future__ import annotations

import importlib
import subprocess
import sys
from pathlib import Path

import pytest

import cli

REPO = Path(__file__).resolve().parents[1]


def test_top_level_help_lists_every_subcommand(repo):
    proc = subprocess.run(
        [sys.executable, "cli.py", "--help"], cwd=repo, capture_output=True, text=True
    )
    assert proc.returncode == 0, proc.stderr
    for name, (_, description) in cli.COMMANDS.items():
        assert f"  {name}" in proc.stdout and description in proc.stdout


def test_no_subcommand_and_unknown_subcommand_exit_2(capsys):
    for argv in ([], ["nosuch"]):
        with pytest.raises(SystemExit) as exc:
            cli.main(argv)
        assert exc.value.code == 2


@pytest.mark.parametrize("name", sorted(cli.COMMANDS))
def test_every_subcommand_help_exits_0(name, capsys):
    with pytest.raises(SystemExit) as exc:
        cli.main([name, "--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    assert "usage" in out.lower() and len(out) > 200


@pytest.mark.parametrize(
    "name", [n for n, (m, _) in cli.COMMANDS.items() if m != "experiments.commands.fit"]
)
def test_every_option_of_the_suite_commands_has_help(name):
    """The suite's own commands document each option (LightningCLI documents its own)."""
    parser = importlib.import_module(cli.COMMANDS[name][0]).parser()
    undocumented = [
        a.dest
        for a in parser._actions
        if a.option_strings and a.dest not in ("help", "config", "print_config") and not a.help
    ]
    assert undocumented == []


def test_attack_help_has_no_dataclass_repr(capsys):
    with pytest.raises(SystemExit):
        cli.main(["attack", "--help"])
    out = capsys.readouterr().out
    assert "Settings(" not in out and "HopSkipJump boundary-distance attack" in out


@pytest.mark.parametrize("section", ["rows: [nosuch]", "colour: red"])
def test_a_bad_audit_section_is_one_line_and_exit_2(tmp_path, capsys, section):
    cfg = tmp_path / "bad.yaml"
    cfg.write_text(f"audit:\n  {section}\n")
    with pytest.raises(SystemExit) as exc:
        cli.main(["audit", "--config", str(cfg)])
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"error: {cfg}: bad audit section") and "\n" not in err
    assert not (tmp_path / "lightning_logs").exists()


@pytest.mark.parametrize(
    "argv, names",
    [
        (["attack", "--run", "{tmp}/no_run"], "--run"),
        (["discriminate", "--run", "{tmp}/no_run", "--images", "{tmp}"], "--run"),
        (["fit", "--config", "no_such_config.yaml"], "--config no_such_config.yaml"),
    ],
)
def test_a_missing_run_or_config_is_one_line_and_exit_2(tmp_path, capsys, argv, names):
    with pytest.raises(SystemExit) as exc:
        cli.main([a.replace("{tmp}", str(tmp_path)) for a in argv])
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and names in err and "\n" not in err
    assert "Traceback" not in err and list(tmp_path.iterdir()) == []
