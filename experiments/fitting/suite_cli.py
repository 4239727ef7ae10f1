"""Training runs: the suite's LightningCLI (``fit``, ``validate``, ``test``, ``predict``), its run
folders, and the one way the other commands start a fit.

Models and datamodules are chosen with ``class_path``/``init_args`` (subclass mode). The number of
identities is linked from ``data.num_classes`` to ``model.init_args.num_classes``. Runs land in
``<default_root_dir>/<config name>/version_N/`` (``default_root_dir`` defaults to
``lightning_logs``); resuming from a checkpoint inside a run folder keeps writing to that folder.
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import pytorch_lightning as pl
import yaml
from pytorch_lightning.callbacks import RichProgressBar
from pytorch_lightning.cli import LightningCLI, SaveConfigCallback
from pytorch_lightning.loggers import TensorBoardLogger

from attacks.report import split_note
from datamodules.machine import environment_versions
from experiments.attack_steps.pipeline import attack_main
from experiments.callbacks.checkpoints import ResumePoint, RunCheckpoint
from experiments.callbacks.leakage_monitor import LeakageMonitor, PredictionSignals
from experiments.fitting.resume import EVALUATIONS, check_resume, place_evaluation
from experiments.run.config_files import add_flag, resolve_config_args
from experiments.run.input_checks import check_fit_config
from experiments.run.outputs import write_json
from experiments.settings.audit import AuditSettings

TENSORBOARD = "pytorch_lightning.loggers.TensorBoardLogger"


#: where runs land unless ``--trainer.default_root_dir`` (or the logger's ``save_dir``) says
DEFAULT_ROOT = "lightning_logs"


#: ``--data[.init_args].<settings group>.<field> null``: jsonargparse 4.53 turns such a null into
#: the string "None" for a field of a dataclass inside subclass-mode init_args; the dict form
#: ``--data.<group> '{<field>: null}'`` sets None and keeps the group's other values
NESTED_NULL = re.compile(r"^(--data(?:\.init_args)?\.(?:split|loader))\.(\w+)$")


def nested_nulls(argv: list[str]) -> list[str]:
    """``argv`` with each ``--data.split.X null`` (or ``loader``) in the dict form that works."""
    out, i = [], 0
    while i < len(argv):
        m = NESTED_NULL.match(argv[i])
        if m and i + 1 < len(argv) and argv[i + 1] in ("null", "None"):
            out += [m.group(1), f"{{{m.group(2)}: null}}"]
            i += 2
            continue
        out.append(argv[i])
        i += 1
    return out


def next_version(base: Path, prefix: str = "version_") -> Path:
    """``base/<prefix>N`` for the smallest N not taken (the folder is not created)."""
    n = 0
    while (base / f"{prefix}{n}").exists():
        n += 1
    return base / f"{prefix}{n}"


def logger_into(run_dir: Path) -> dict:
    """A TensorBoard logger config that writes into exactly ``run_dir``."""
    init = {"save_dir": str(run_dir.parent), "name": "", "version": run_dir.name}
    return {"class_path": TENSORBOARD, "init_args": {**init, "default_hp_metric": False}}


def fit_argv(config: str, run_dir: Path, args: list[str]) -> list[str]:
    """LightningCLI arguments (no subcommand) that train ``config`` plus ``args`` into ``run_dir``."""
    return [
        "--config",
        resolve_config_args(["--config", config])[1],
        *args,
        f"--trainer.logger={json.dumps(logger_into(run_dir))}",
    ]


class RunFolderConfigCallback(SaveConfigCallback):
    """Save ``config.yaml`` and ``environment.json`` in the run folder, never clobbering.

    A resumed run keeps the original ``config.yaml`` and ``environment.json`` and writes
    ``config_resume_K.yaml`` and ``environment-resume-K.json`` beside them. Only ``fit`` saves:
    ``validate``, ``test`` and ``predict`` leave the run as it is
    (:mod:`experiments.fitting.resume`).
    """

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        if self.already_saved or stage != "fit":
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
            env = {
                "versions": environment_versions(),
                "argv": sys.argv,
                "seed": self.config.get("seed_everything"),
            }
            env_name = "environment.json" if k == 0 else f"environment-resume-{k}.json"
            write_json(log_dir / env_name, env)
        self.already_saved = True
        self.already_saved = trainer.strategy.broadcast(self.already_saved)


class SuiteCLI(LightningCLI):
    """LightningCLI with the leakage monitor, checkpointing, the audit section and run folders."""

    def add_arguments_to_parser(self, parser) -> None:
        parser.add_lightning_class_args(LeakageMonitor, "leakage")
        parser.add_lightning_class_args(RunCheckpoint, "checkpoint")
        parser.set_defaults(
            {
                "checkpoint.save_last": True,
                "checkpoint.save_top_k": 0,
                "checkpoint.save_on_train_epoch_end": True,
                "checkpoint.enable_version_counter": False,
            }
        )
        parser.add_class_arguments(AuditSettings, "audit", help="detector audit (cli.py audit)")
        parser.add_argument(
            "--attack_after_fit",
            type=str | None,
            default=None,
            help="attack settings YAML (e.g. attack_demo.yaml): run `cli.py attack` on the run "
            "folder when fit ends",
        )
        add_flag(
            parser,
            "resume_changes",
            "with --ckpt_path of a run: accept data, image-size and seed settings that differ from "
            "the run's config (saved in config_resume_K.yaml, which later commands read); without "
            "it such a resume is refused",
        )
        parser.link_arguments(
            "data.num_classes", "model.init_args.num_classes", apply_on="instantiate"
        )

    #: the run folder this process is about to create (removed again if the fit fails before
    #: it wrote a checkpoint); None when it existed before (a resume) or is unknown
    new_run_dir: Path | None = None

    def _parse_ckpt_path(self) -> None:
        # the first thing after parsing (LightningCLI reads the checkpoint's hparams here): check
        # the whole config, the checkpoint included, before anything is loaded or built
        sub = self.config.get("subcommand")
        cfg = self.config.get(sub, self.config) if sub else self.config
        check_fit_config(cfg, sub or "fit")
        if sub == "fit" and cfg.get("ckpt_path"):
            # before the checkpoint's hyper-parameters replace the model's: what the user asked
            requested = yaml.safe_load(self._parser(sub).dump(cfg, skip_none=False))
            check_resume(requested, cfg.get("ckpt_path"), bool(cfg.get("resume_changes")))
        super()._parse_ckpt_path()

    def before_instantiate_classes(self) -> None:
        cfg = self.config.get(self.subcommand, self.config) if self.subcommand else self.config
        self.place_loggers(cfg)
        if self.subcommand in EVALUATIONS:
            place_evaluation(cfg, self.subcommand, DEFAULT_ROOT)

    def place_loggers(self, cfg) -> None:
        """Drop the rich progress bar when asked; put TensorBoard in the run folder."""
        trainer_cfg = cfg.get("trainer", {})
        if trainer_cfg.get("enable_progress_bar") is False:
            self.trainer_defaults["callbacks"] = [
                c
                for c in self.trainer_defaults.get("callbacks", [])
                if not isinstance(c, RichProgressBar)
            ]
        logger = trainer_cfg.get("logger")
        if not logger or isinstance(logger, bool):
            return
        for lg in logger if isinstance(logger, list) else [logger]:
            if TENSORBOARD.rsplit(".", 1)[1] in str(lg.get("class_path", "")):
                place_logger(
                    lg.init_args, trainer_cfg.get("default_root_dir"), cfg.get("ckpt_path")
                )

    def before_fit(self) -> None:
        log_dir = self.trainer.log_dir
        if self.trainer.is_global_zero and log_dir and not Path(log_dir).exists():
            SuiteCLI.new_run_dir = Path(log_dir)
        ckpt = self.config.get(self.subcommand, self.config).get("ckpt_path")
        if ckpt:
            purge_after_checkpoint(self.trainer, ckpt)

    def after_fit(self) -> None:
        log_dir = self.trainer.log_dir
        if self.trainer.is_global_zero and log_dir:
            print(
                f"\nRun folder: {log_dir}\n  TensorBoard: tensorboard --logdir {Path(log_dir).parent}"
            )
            settings = getattr(self.datamodule, "settings", None)
            if settings is not None and hasattr(settings, "split_protocol"):
                print(split_note(settings.split_protocol, settings.group_by))
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
            attack_main(resolve_config_args(["--run", log_dir, "--config", attack_cfg]))


def purge_after_checkpoint(trainer: pl.Trainer, ckpt_path: str) -> None:
    """On a resume, have TensorBoard drop the events the interrupted part logged after its
    checkpoint (its writer's ``purge_step``): the resumed part logs those steps again."""
    import torch

    step = torch.load(ckpt_path, map_location="cpu", weights_only=True, mmap=True)["global_step"]
    for lg in trainer.loggers:
        if isinstance(lg, TensorBoardLogger) and lg._experiment is None:
            lg._kwargs["purge_step"] = int(step)


def place_logger(init_args, default_root_dir: str | None, ckpt_path: str | None) -> None:
    """Point the TensorBoard logger at the run folder: under ``default_root_dir`` when the
    logger keeps the default ``save_dir``, and back into the run folder a checkpoint came from."""
    if default_root_dir and init_args.get("save_dir") == DEFAULT_ROOT:
        init_args["save_dir"] = default_root_dir
    if not ckpt_path:
        return
    ckpt = Path(ckpt_path).resolve()
    if ckpt.parent.name == "checkpoints":
        run = ckpt.parent.parent
        init_args["save_dir"], init_args["name"] = str(run.parent.parent), run.parent.name
        init_args["version"] = run.name


def suite_cli(args: list[str] | None, *, run: bool = True, logger: dict | None = None) -> SuiteCLI:
    """The suite's LightningCLI (subclass mode, run-folder config saving, rich progress bar).

    ``args=None`` reads ``sys.argv``; ``run=False`` only instantiates (``cli.trainer``, ...).
    """
    from experiments.callbacks.fit_health import training_health
    from experiments.run.interrupts import graceful_stop

    callbacks = [RichProgressBar(), PredictionSignals(), ResumePoint(), training_health()]
    defaults: dict = {"callbacks": [*callbacks, graceful_stop()]}
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
        parser_kwargs={"exit_on_error": False},
        args=args,
        run=run,
    )
