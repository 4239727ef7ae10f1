"""Every command example that the README and the config headers show is accepted as written:
each is parsed and validated by its command's own parser (LightningCLI's with
``--print_config`` for fit, which checks every key against the models and datamodules without
building them), and a planted unknown flag fails the same check."""

from __future__ import annotations

import importlib
import re
import shlex
from pathlib import Path

import pytest

import cli
from experiments.run.config_files import resolve_config_args

REPO = Path(__file__).resolve().parents[1]


def joined_lines(lines: list[str]) -> list[str]:
    """Lines with ``\\`` continuations joined."""
    out, current = [], ""
    for line in lines:
        if line.rstrip().endswith("\\"):
            current += line.rstrip()[:-1] + " "
            continue
        out.append(current + line)
        current = ""
    return out


def examples_in(path: Path) -> list[str]:
    """``python cli.py ...`` commands shown in a config's comments, or in a README's code blocks
    and inline code spans (without ``python cli.py``)."""
    text = path.read_text()
    if path.suffix == ".yaml":
        lines = [re.sub(r"^#\s?", "", ln) for ln in text.splitlines() if ln.startswith("#")]
    else:
        lines = text.splitlines()
    found = []
    for line in joined_lines(lines):
        m = re.match(r"\s*(?:\$ )?(?:python cli\.py|whale-mia) (\w+.*)", line)
        if m and m.group(1).split()[0] in cli.COMMANDS:
            found.append(re.split(r"\s{2,}#|\s+->|\s+#\s", m.group(1))[0].strip())
    if path.suffix == ".md":
        spans = re.findall(r"`(?:python )?cli\.py (\w[^`]*)`", " ".join(text.split()))
        found += [span.strip() for span in spans if span.split()[0] in cli.COMMANDS]
    return found


def all_examples() -> list[tuple[str, str]]:
    paths = [REPO / "README.md", *sorted((REPO / "configs").glob("[!p]*/*.yaml"))]
    return [(p.name, ex) for p in paths for ex in examples_in(p)]


def check_example(command: str, capsys) -> None:
    """Parse ``command`` (without ``python cli.py``) as its command would; raise on refusal."""
    argv = shlex.split(re.sub(r"<[^>]+>", "PLACEHOLDER", command))  # <run folder> -> one word
    name, args = argv[0], argv[1:]
    assert name in cli.COMMANDS, f"unknown subcommand {name!r}"
    if name in cli.LIGHTNING:
        fit_parse(name, args, capsys)
        return
    module = importlib.import_module(cli.COMMANDS[name][0])
    args = resolve_config_args(args)
    if name == "audit":
        own, rest = module._split_argv(args)
        config = module.parser().parse_args(own).config
        fit_parse("fit", ["--config", config, *rest], capsys)
        return
    module.parser().parse_args(args)


def fit_parse(name: str, args: list[str], capsys) -> None:
    with pytest.raises(SystemExit) as exit_info:
        cli.main([name, *args, "--print_config"])
    err = capsys.readouterr().err
    assert exit_info.value.code in (0, None), err


EXAMPLES = all_examples()


def test_the_readme_and_the_configs_show_examples():
    assert len(EXAMPLES) >= 40
    assert ("README.md", "fit --config demo.yaml") in EXAMPLES
    assert {ex.split()[0] for _, ex in EXAMPLES} >= {"fit", "attack", "discriminate", "audit"}


@pytest.mark.parametrize("where, command", EXAMPLES, ids=[f"{w}:{c[:50]}" for w, c in EXAMPLES])
def test_example_is_accepted(where, command, capsys):
    check_example(command, capsys)


@pytest.mark.parametrize(
    "command",
    [
        "fit --config demo.yaml --data.no_such_key 3",
        "attack --run somewhere --config attack.yaml --no_such_flag 1",
        "discriminate --run somewhere --input photos",
        "audit --config detection_demo.yaml --trainer.no_such_key 1",
    ],
)
def test_an_unknown_flag_fails_the_check(command, capsys):
    with pytest.raises((SystemExit, Exception)) as info:
        check_example(command, capsys)
    code = getattr(info.value, "code", 2)
    assert code not in (0, None)
