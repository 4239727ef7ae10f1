"""The commands' conventions: booleans work bare, choices are refused in one line while parsing,
and the output option is ``--output`` everywhere."""

from __future__ import annotations

import importlib

import pytest

import cli
from datamodules.errors import DataError
from experiments.run.config_files import parse_options

COMMANDS = [n for n in cli.COMMANDS if n not in cli.LIGHTNING]


@pytest.mark.parametrize(
    "argv, expected",
    [
        (["--run", "r", "--overwrite"], True),
        (["--run", "r", "--overwrite", "--cached_signals"], True),
        (["--run", "r", "--overwrite", "false"], False),
        (["--run", "r", "--overwrite=true"], True),
        (["--run", "r"], False),
    ],
)
def test_attack_booleans_work_bare(argv, expected):
    from experiments.commands.attack import parser

    assert parse_options(parser(), argv).overwrite is expected


@pytest.mark.parametrize("flag", ["--overwrite", "--quiet", "--force_decisions"])
def test_discriminate_booleans_work_bare(flag):
    from experiments.commands.discriminate import parser

    a = parse_options(parser(), ["--run", "r", "--images", "i", flag])
    assert getattr(a, flag[2:]) is True


def test_a_wrong_choice_is_one_line_naming_the_choices():
    from experiments.commands.discriminate import parser

    with pytest.raises(DataError, match=r"^--engine gpu: choose one of auto, onnx, torch$"):
        parse_options(parser(), ["--run", "r", "--images", "i", "--engine", "gpu"])


@pytest.mark.parametrize("name", COMMANDS)
def test_the_output_option_is_called_output(name):
    """``--out`` survives only as an alias of ``--output`` (older scripts keep working)."""
    parser = importlib.import_module(cli.COMMANDS[name][0]).parser()
    for action in parser._actions:
        if "--out" in action.option_strings:
            assert action.option_strings[0] == "--output", action.option_strings
