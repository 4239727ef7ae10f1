"""Command line of the suite: one entry point, subcommands dispatched to :mod:`experiments`.

    python cli.py fit --config demo.yaml                 # a bare name resolves against configs/
    python cli.py attack --run lightning_logs/demo/version_0 --config attack.yaml
    python cli.py --help                                 # every subcommand, one line each

This module only dispatches: it imports no heavy library, and nothing imports it.
"""

from __future__ import annotations

import importlib
import sys

#: subcommand -> (module implementing it, one-line description)
COMMANDS: dict[str, tuple[str, str]] = {
    "fit": ("experiments.fit", "train a model (LightningCLI); the leakage monitor runs per epoch"),
    "validate": ("experiments.fit", "evaluate a model on the validation loaders (LightningCLI)"),
    "test": ("experiments.fit", "evaluate a model on the test loaders (LightningCLI)"),
    "predict": ("experiments.fit", "predict with a model (LightningCLI)"),
    "attack": ("experiments.attack", "run every membership attack on a finished run folder"),
    "discriminate": ("experiments.discriminate", "decide known or new for a folder of new photos"),
    "reid": ("experiments.reid", "re-identify and decide known/new with a population embedding"),
    "export": ("experiments.export", "write a run's target as ONNX: discriminate without torch"),
    "defend": ("experiments.defend", "train defended variants and tabulate utility vs leakage"),
    "study": ("experiments.study", "compare the split protocols on one fit config"),
    "audit": ("experiments.audit", "train target and shadow detectors and attack them"),
}
LIGHTNING = ("fit", "validate", "test", "predict")


def usage() -> str:
    width = max(map(len, COMMANDS))
    lines = [f"  {name:<{width}}  {desc}" for name, (_, desc) in COMMANDS.items()]
    return (
        "usage: python cli.py SUBCOMMAND [options]   (python cli.py SUBCOMMAND --help)\n\n"
        "subcommands:\n" + "\n".join(lines) + "\n\nConfigs named without a path are looked up "
        "in configs/ (e.g. --config demo.yaml)."
    )


def main(argv: list[str] | None = None) -> None:
    """Run the subcommand in ``argv`` (``sys.argv[1:]`` when None); user errors exit 2."""
    from_sys = argv is None
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(usage())
        raise SystemExit(0 if argv else 2)
    if argv[0] not in COMMANDS:
        print(f"error: unknown subcommand {argv[0]!r}\n\n{usage()}", file=sys.stderr)
        raise SystemExit(2)
    from datamodules.errors import DataError

    module = importlib.import_module(COMMANDS[argv[0]][0])
    try:
        if argv[0] in LIGHTNING:
            module.main(argv, from_sys=from_sys)
        else:
            module.main(module_args(argv[1:]))
    except DataError as exc:
        print(f"error: {exc}", file=sys.stderr)
        raise SystemExit(2) from None


def module_args(argv: list[str]) -> list[str]:
    """``--config NAME`` resolved against configs/ (the commands' shared convention)."""
    from experiments.config_files import resolve_config_args

    return resolve_config_args(argv)


if __name__ == "__main__":
    main()
