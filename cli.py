"""Command line of the suite: one entry point, subcommands dispatched to :mod:`experiments`.

    python cli.py fit --config demo.yaml                 # a bare name resolves against configs/
    python cli.py attack --run lightning_logs/demo/version_0 --config attack.yaml
    python cli.py --help                                 # every subcommand, one line each
    whale-mia attack --help                              # the same entry point, installed

This module only dispatches (the failure boundary is :mod:`experiments.run.failures`): it imports no
heavy library, and nothing imports it.
"""

from __future__ import annotations

import sys

#: subcommand -> (module implementing it, one-line description)
COMMANDS: dict[str, tuple[str, str]] = {
    "fit": (
        "experiments.commands.fit",
        "train a model (LightningCLI); the leakage monitor runs per epoch",
    ),
    "validate": (
        "experiments.commands.fit",
        "evaluate a model on the validation loaders (LightningCLI)",
    ),
    "test": ("experiments.commands.fit", "evaluate a model on the test loaders (LightningCLI)"),
    "predict": ("experiments.commands.fit", "predict with a model (LightningCLI)"),
    "attack": (
        "experiments.commands.attack",
        "run every membership attack on a finished run folder",
    ),
    "discriminate": (
        "experiments.commands.discriminate",
        "decide known or new for a folder of new photos",
    ),
    "reid": (
        "experiments.commands.reid",
        "re-identify and decide known/new with a population embedding",
    ),
    "export": (
        "experiments.commands.export",
        "write a run's target as ONNX: discriminate without torch",
    ),
    "defend": (
        "experiments.commands.defend",
        "train defended variants and tabulate utility vs leakage",
    ),
    "study": ("experiments.commands.study", "compare the split protocols on one fit config"),
    "audit": ("experiments.commands.audit", "train target and shadow detectors and attack them"),
    "openset_table": (
        "experiments.commands.openset_table",
        "train targets on a NOAA catalog and tabulate known/new per encounter",
    ),
    "openset_trend": (
        "experiments.commands.openset_trend",
        "vary the catalog, image size or epochs one at a time: the known/new trend",
    ),
}
LIGHTNING = ("fit", "validate", "test", "predict")


def usage() -> str:
    width = max(map(len, COMMANDS))
    lines = [f"  {name:<{width}}  {desc}" for name, (_, desc) in COMMANDS.items()]
    return (
        "usage: python cli.py SUBCOMMAND [options] [--debug]   (or: whale-mia SUBCOMMAND ...)\n"
        "       python cli.py SUBCOMMAND --help  |  python cli.py --version\n\n"
        "subcommands:\n" + "\n".join(lines) + "\n\nConfigs named without a path are looked up "
        "in configs/ (e.g. --config demo.yaml). --debug shows the traceback of an internal error.\n"
        "Exit status: 0 done, 1 internal error, 2 bad input, 128+N ended by signal N."
    )


def main(argv: list[str] | None = None) -> None:
    """Run the subcommand in ``argv`` (``sys.argv[1:]`` when None).

    Exit status: 0 done; 2 bad input (one line naming the file or key and the fix; a full disk
    or a read-only place too); 1 an internal error (one line; the traceback goes to a log file,
    or to stderr with ``--debug``); 128 + N when signal N ended it (SIGINT 130, SIGTERM 143,
    SIGHUP 129). A command that fails or is interrupted removes the outputs it created.
    """
    from_sys = argv is None
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv
    argv = [a for a in argv if a != "--debug"]
    if argv[:1] == ["--version"]:
        print(f"whale-mia {version()}")
        raise SystemExit(0)
    if not argv or argv[0] in ("-h", "--help"):
        print(usage())
        raise SystemExit(0 if argv else 2)
    if argv[0] not in COMMANDS:
        print(f"error: unknown subcommand {argv[0]!r}\n\n{usage()}", file=sys.stderr)
        raise SystemExit(2)
    from experiments.run import failures

    failures.run_command(
        argv, from_sys=from_sys, debug=debug, commands=COMMANDS, lightning=LIGHTNING
    )


def version() -> str:
    """The installed package's version (the source tree's ``pyproject.toml`` when not installed)."""
    from importlib import metadata

    try:
        return metadata.version("whale-mia")
    except metadata.PackageNotFoundError:
        import re
        from pathlib import Path

        text = (Path(__file__).resolve().parent / "pyproject.toml").read_text()
        return re.search(r'^version = "([^"]+)"', text, re.M).group(1)


if __name__ == "__main__":
    main()
