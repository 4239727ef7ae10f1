"""``python cli.py fit|validate|test|predict --config NAME``: the suite's LightningCLI.

Models and datamodules are chosen with ``class_path``/``init_args`` (subclass mode); runs land in
``<default_root_dir>/<config name>/version_N/`` (:mod:`experiments.fitting.suite_cli`); a fit
that fails leaves no half-made run folder (:mod:`experiments.fitting.run_fit`).
"""

from __future__ import annotations

from experiments.fitting.run_fit import run_fit


def main(argv: list[str], from_sys: bool = False) -> None:
    """Entry point of ``python cli.py fit`` (and ``validate``, ``test``, ``predict``); with
    ``from_sys`` LightningCLI reads ``sys.argv`` (the DDP launcher re-runs that argv)."""
    run_fit(argv, from_sys=from_sys)
