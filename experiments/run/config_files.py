"""Command-line conventions shared by the commands: ``--config NAME`` is looked up in
``configs/``, and each command's parser is described by its module's first paragraph.

Kept free of heavy imports: ``cli.py`` resolves names before any command module loads.
"""

from __future__ import annotations

import re
from pathlib import Path

from datamodules.errors import DataError

CONFIG_DIR = Path(__file__).resolve().parents[2] / "configs"
#: the folders of ``configs/`` by kind of config (``parts/`` holds pieces the fit configs include)
CONFIG_KINDS = ("fit", "detection", "attack", "commands")


def config_by_name(value: str) -> Path | None:
    """The config file a bare name means: ``configs/<kind>/NAME`` or ``configs/<kind>/NAME.yaml``
    (kinds: ``fit``, ``detection``, ``attack``, ``commands``; a path under ``configs/`` also
    works), or None when there is none. Names are unique across the kinds (a test keeps it so)."""
    for name in (value, f"{value}.yaml"):
        direct = CONFIG_DIR / name
        if direct.is_file():
            return direct
        found = sorted(p for p in CONFIG_DIR.glob(f"*/{name}") if p.parent.name in CONFIG_KINDS)
        if found:
            return found[0]
    return None


def resolve_config_args(argv: list[str]) -> list[str]:
    """Rewrite ``--config NAME`` to its file under ``configs/`` when NAME is not a path that
    exists (:func:`config_by_name`)."""
    out = list(argv)
    for i, arg in enumerate(out):
        value, prefix = None, None
        if arg == "--config" and i + 1 < len(out):
            value, prefix, j = out[i + 1], "", i + 1
        elif arg.startswith("--config="):
            value, prefix, j = arg.split("=", 1)[1], "--config=", i
        if value is None or Path(value).exists():
            continue
        found = config_by_name(value)
        if found is None:
            known = ", ".join(sorted(p.name for p in known_configs()))
            raise DataError(
                f"--config {value}: no such file here or in {CONFIG_DIR}. Known: {known}"
            )
        out[j] = prefix + str(found)
    return out


def known_configs() -> list[Path]:
    """Every config a bare name can name, kind by kind."""
    return sorted(p for kind in CONFIG_KINDS for p in (CONFIG_DIR / kind).glob("*.yaml"))


def config_stem(argv: list[str]) -> str:
    """Name of the first ``--config`` file, used as the run-folder name."""
    for i, arg in enumerate(argv):
        if arg == "--config" and i + 1 < len(argv):
            return Path(argv[i + 1]).stem
        if arg.startswith("--config="):
            return Path(arg.split("=", 1)[1]).stem
    return "default"


def command_parser(name: str, doc: str | None, note: str = ""):
    """A jsonargparse parser for ``cli.py <name>``, described by the first paragraph of ``doc``
    (on one line) plus ``note``."""
    from jsonargparse import ArgumentParser

    first = " ".join((doc or "").split("\n\n")[0].split())
    return ArgumentParser(prog=f"cli.py {name}", description=f"{first} {note}".strip())


def add_flag(parser, name: str, help: str, default: bool = False) -> None:
    """A boolean option that works bare (``--overwrite``), with a value (``--overwrite true``,
    ``--overwrite=false``) and negated (``--no_overwrite``): the commands' one flag convention.

    Choices are given as ``typing.Literal[...]`` types, so ``--help`` lists them and a wrong
    value is refused while parsing, before any slow work.
    """
    from jsonargparse import ActionYesNo

    parser.add_argument(
        f"--{name}",
        action=ActionYesNo(yes_prefix="", no_prefix="no_"),
        nargs="?",
        default=default,
        help=help,
    )


def parse_options(parser, argv: list[str]):
    """``parser.parse_args(argv)`` with a bad option as one DataError line (exit 2): a wrong
    choice reads ``--KEY VALUE: choose one of ...``; ``--help`` still prints and exits 0."""
    from argparse import ArgumentError

    parser.exit_on_error = False
    try:
        return parser.parse_args(bare_flags(parser, argv))
    except ArgumentError as err:
        msg = " ".join(str(err).split())
        key = re.match(r'Parser key "(\w+)"', msg)
        choices = re.search(r"Literal\[(.*?)\]", msg)
        got = re.search(r"(?:Got|Given) value: (.*)$", msg)
        if key and choices and got:
            names = choices.group(1).replace("'", "")
            raise DataError(f"--{key.group(1)} {got.group(1)}: choose one of {names}") from None
        raise DataError(msg) from None


def bare_flags(parser, argv: list[str]) -> list[str]:
    """``argv`` with ``true`` after each boolean option given bare (``--overwrite`` followed by
    another option or by nothing), for the boolean fields of settings dataclasses, which
    jsonargparse otherwise reads only with a value."""
    flags = {
        opt
        for action in parser._actions
        if getattr(action, "_typehint", None) is bool
        for opt in action.option_strings
    }
    out = []
    for i, arg in enumerate(argv):
        out.append(arg)
        if arg in flags and (i + 1 == len(argv) or argv[i + 1].startswith("--")):
            out.append("true")
    return out
