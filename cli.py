"""Command line: LightningCLI (fit/validate/test/predict) plus the suite's own subcommands.

    python cli.py fit --config demo.yaml                 # a bare name resolves against configs/
    python cli.py fit --config noaa_resnet50_overfit.yaml --data.root /data/noaa
    python cli.py fit --config demo.yaml --ckpt_path lightning_logs/demo/version_0/checkpoints/last.ckpt

Models and datamodules are chosen with ``class_path``/``init_args`` (subclass mode). The number of
identities is linked from ``data.num_classes`` to ``model.init_args.num_classes``. Runs land in
``lightning_logs/<config name>/version_N/``; resuming from a checkpoint inside a run folder keeps
writing to that same folder.
"""

from __future__ import annotations

import importlib
import json
import sys
from pathlib import Path

import pytorch_lightning as pl
from pytorch_lightning.callbacks import ModelCheckpoint, RichProgressBar
from pytorch_lightning.cli import LightningCLI, SaveConfigCallback

from datamodules.errors import DataError
from lightning_modules.callbacks import LeakageMonitor

CONFIG_DIR = Path(__file__).resolve().parent / "configs"

#: Subcommands beside LightningCLI's: name -> "module:function" taking argv (list[str]).
EXTRA_COMMANDS: dict[str, str] = {
    "audit": "attacks.detection.audit:main",
    "attack": "attacks.run:main",
    "discriminate": "attacks.discriminate:main",
    "defend": "attacks.defend:main",
    "study": "attacks.protocol_study:main",
}


def resolve_config_args(argv: list[str]) -> list[str]:
    """Rewrite ``--config NAME`` to ``configs/NAME`` when NAME is not a path that exists."""
    out = list(argv)
    for i, arg in enumerate(out):
        value, prefix = None, None
        if arg == "--config" and i + 1 < len(out):
            value, prefix, j = out[i + 1], "", i + 1
        elif arg.startswith("--config="):
            value, prefix, j = arg.split("=", 1)[1], "--config=", i
        if value is None or Path(value).exists():
            continue
        for candidate in (CONFIG_DIR / value, CONFIG_DIR / f"{value}.yaml"):
            if candidate.is_file():
                out[j] = prefix + str(candidate)
                break
        else:
            known = ", ".join(sorted(p.name for p in CONFIG_DIR.glob("*.yaml")))
            raise DataError(
                f"--config {value}: no such file here or in {CONFIG_DIR}. Known: {known}"
            )
    return out


def config_stem(argv: list[str]) -> str:
    """Name of the first ``--config`` file, used as the run-folder name."""
    for i, arg in enumerate(argv):
        if arg == "--config" and i + 1 < len(argv):
            return Path(argv[i + 1]).stem
        if arg.startswith("--config="):
            return Path(arg.split("=", 1)[1]).stem
    return "default"


class RunFolderConfigCallback(SaveConfigCallback):
    """Save ``config.yaml`` and ``environment.json`` in the run folder, never clobbering.

    A resumed run keeps the original ``config.yaml`` and writes ``config_resume_K.yaml``.
    """

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        if self.already_saved:
            return
        log_dir = trainer.log_dir  # a collective under DDP: every rank asks, once
        if not log_dir:
            return
        log_dir = Path(log_dir)
        if trainer.is_global_zero:
            log_dir.mkdir(parents=True, exist_ok=True)
            name = self.config_filename
            k = 0
            while (log_dir / name).exists():
                k += 1
                name = f"config_resume_{k}.yaml"
            self.parser.save(
                self.config,
                log_dir / name,
                skip_none=False,
                overwrite=True,
                multifile=self.multifile,
            )
            from datamodules.environment import environment_versions

            env = {
                "versions": environment_versions(),
                "argv": sys.argv,
                "seed": self.config.get("seed_everything"),
            }
            (log_dir / "environment.json").write_text(json.dumps(env, indent=2, default=str))
        self.already_saved = True
        self.already_saved = trainer.strategy.broadcast(self.already_saved)


class SuiteCLI(LightningCLI):
    """LightningCLI with the leakage monitor, checkpointing, links and run-folder resume."""

    def add_arguments_to_parser(self, parser) -> None:
        parser.add_lightning_class_args(LeakageMonitor, "leakage")
        parser.add_lightning_class_args(ModelCheckpoint, "checkpoint")
        parser.set_defaults({"checkpoint.save_last": True, "checkpoint.save_top_k": 0})
        parser.add_argument(
            "--attack_after_fit",
            type=str | None,
            default=None,
            help="attack settings YAML (e.g. attack_demo.yaml): run `cli.py attack` on the run "
            "folder when fit ends",
        )
        parser.link_arguments(
            "data.num_classes", "model.init_args.num_classes", apply_on="instantiate"
        )

    def before_instantiate_classes(self) -> None:
        cfg = self.config.get(self.subcommand, self.config) if self.subcommand else self.config
        trainer_cfg = cfg.get("trainer", {})
        if trainer_cfg.get("enable_progress_bar") is False:
            self.trainer_defaults["callbacks"] = [
                c
                for c in self.trainer_defaults.get("callbacks", [])
                if not isinstance(c, RichProgressBar)
            ]
        ckpt = cfg.get("ckpt_path")
        logger = cfg.get("trainer", {}).get("logger")
        if not ckpt or not logger or isinstance(logger, bool):
            return
        ckpt_path = Path(ckpt).resolve()
        if ckpt_path.parent.name != "checkpoints":
            return
        run = ckpt_path.parent.parent
        for lg in logger if isinstance(logger, list) else [logger]:
            if "TensorBoardLogger" in str(lg.get("class_path", "")):
                lg.init_args.save_dir = str(run.parent.parent)
                lg.init_args.name = run.parent.name
                lg.init_args.version = run.name

    def after_fit(self) -> None:
        log_dir = self.trainer.log_dir
        if self.trainer.is_global_zero and log_dir:
            print(
                f"\nRun folder: {log_dir}\n  TensorBoard: tensorboard --logdir {Path(log_dir).parent}"
            )
        attack_cfg = self.config.get(self.subcommand, self.config).get("attack_after_fit")
        if attack_cfg and self.trainer.world_size > 1:
            # the attacks train models of their own; they must not run inside the DDP group
            if self.trainer.is_global_zero:
                print(
                    f"Multi-process fit: run the attacks as their own job:\n  python cli.py "
                    f"attack --run {log_dir} --config {attack_cfg}"
                )
            return
        if attack_cfg and self.trainer.is_global_zero and log_dir and not self.trainer.fast_dev_run:
            from attacks.run import main as attack_main

            attack_main(resolve_config_args(["--run", log_dir, "--config", attack_cfg]))


def suite_cli(args: list[str] | None, *, run: bool = True, logger: dict | None = None) -> SuiteCLI:
    """The suite's LightningCLI (subclass mode, run-folder config saving, rich progress bar).

    ``args=None`` reads ``sys.argv``; ``run=False`` only instantiates (``cli.trainer``, ...).
    """
    defaults: dict = {"callbacks": [RichProgressBar()]}
    if logger is not None:
        defaults["logger"] = logger
    return SuiteCLI(
        pl.LightningModule,
        pl.LightningDataModule,
        subclass_mode_model=True,
        subclass_mode_data=True,
        save_config_callback=RunFolderConfigCallback,
        seed_everything_default=0,
        trainer_defaults=defaults,
        args=args,
        run=run,
    )


def _close_process_group() -> None:
    """End a DDP run cleanly: a gloo/NCCL group left open at interpreter exit can abort the
    process ("terminate called without an active exception") after all work is written."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()


def main(argv: list[str] | None = None) -> None:
    from_sys = argv is None
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        if argv and argv[0] in EXTRA_COMMANDS:
            module, func = EXTRA_COMMANDS[argv[0]].split(":")
            getattr(importlib.import_module(module), func)(resolve_config_args(argv[1:]))
            return
        argv = resolve_config_args(argv)
        # LightningCLI reads sys.argv when args is None (the DDP launcher re-runs that argv),
        # and warns when given args while sys.argv holds others
        saved_argv = sys.argv
        sys.argv = saved_argv[:1] + argv if from_sys else saved_argv[:1]
        try:
            logger = {
                "class_path": "pytorch_lightning.loggers.TensorBoardLogger",
                "init_args": {"save_dir": "lightning_logs", "name": config_stem(argv)},
            }
            suite_cli(None if from_sys else argv, logger=logger)
            _close_process_group()
        finally:
            sys.argv = saved_argv
    except DataError as exc:
        print(f"error: {exc}", file=sys.stderr)
        raise SystemExit(2) from None


if __name__ == "__main__":
    main()
