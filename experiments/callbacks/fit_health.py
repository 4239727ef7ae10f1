"""Training health: a fit whose loss stops being finite ends in one line, and a fit that ends at
chance level on its own training data says so.

* A non-finite training loss (``nan``, ``inf``) stops the fit at that step with
  :class:`NonFiniteLoss` (a :class:`DataError`: one line, exit status 2) before any checkpoint
  holds the broken weights; ``last.ckpt`` stays the last good one.
* At the end of a classifier's fit, ``<run>/fit_health.json`` records its training accuracy
  (``leak/train_acc`` of the leakage monitor, else ``train/acc``), the chance level (1 / number
  of classes) and ``at_chance``: the accuracy is within three binomial standard deviations of
  chance over the training photos. The reports made from the run (``attack``,
  ``discriminate``) read it with :func:`read_health` and put that warning at their top.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

from datamodules.errors import DataError
from experiments.run.outputs import write_json

HEALTH_FILE = "fit_health.json"


class NonFiniteLoss(DataError):
    """The training loss became nan or inf."""


def at_chance(accuracy: float, n_classes: int, n_train: int) -> bool:
    """True when ``accuracy`` over ``n_train`` photos is within 3 binomial standard deviations of
    the chance level ``1 / n_classes`` (or below it)."""
    chance = 1.0 / max(n_classes, 1)
    sd = math.sqrt(chance * (1 - chance) / max(n_train, 1))
    return accuracy <= chance + 3 * sd


def read_health(run_dir: str | Path) -> dict | None:
    """``fit_health.json`` of a run folder: None when there is none (a run from before it, or
    not a classifier); ``{"unreadable": reason}`` when it cannot be read."""
    path = Path(run_dir) / HEALTH_FILE
    if not path.is_file():
        return None
    try:
        health = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        return {"unreadable": f"{path} could not be read ({exc})"}
    return health if isinstance(health, dict) else {"unreadable": f"{path} is not a JSON object"}


def _n_classes(pl_module) -> int | None:
    hparams = getattr(pl_module, "hparams", None) or {}
    return hparams.get("num_classes") if hasattr(hparams, "get") else None


def _n_train(trainer) -> int:
    rows = getattr(trainer.datamodule, "rows", None)
    try:
        return max(len(rows("train")), 1) if callable(rows) else 1
    except Exception:  # a datamodule without a manifest: the bound is then loose, never wrong
        return 1


def check_loss(trainer, outputs) -> None:
    """Raise :class:`NonFiniteLoss` when the step's loss is nan or inf."""
    import torch

    loss = outputs.get("loss") if isinstance(outputs, dict) else outputs
    if isinstance(loss, torch.Tensor) and not torch.isfinite(loss.detach()).all():
        folder = getattr(trainer.checkpoint_callback, "dirpath", None)  # no DDP collective here
        ckpt = Path(folder or ".") / "last.ckpt"
        kept = f"the last good checkpoint is {ckpt}" if ckpt.is_file() else "no checkpoint"
        raise NonFiniteLoss(
            f"training loss became {float(loss.detach().float().mean())} at step "
            f"{max(trainer.global_step - 1, 0)} (epoch {trainer.current_epoch}); {kept}. Lower the "
            "learning rate (the model's optimizer lr in the config)."
        )


def health_of(trainer, pl_module) -> dict | None:
    """The fit's health record (None for models without classes or accuracy)."""
    n_classes = _n_classes(pl_module)
    metrics = trainer.callback_metrics
    key = "leak/train_acc" if "leak/train_acc" in metrics else "train/acc"
    if not n_classes or key not in metrics:
        return None
    accuracy, n_train = float(metrics[key]), _n_train(trainer)
    return {
        "train_accuracy": accuracy,
        "accuracy_source": key,
        "chance_accuracy": 1.0 / n_classes,
        "n_train": n_train,
        "epochs": trainer.current_epoch,
        "at_chance": at_chance(accuracy, n_classes, n_train),
    }


def training_health():
    """A Lightning callback: stop on a non-finite loss (before any checkpoint holds it); write
    ``fit_health.json`` when a classifier's fit ends."""
    import pytorch_lightning as pl

    class TrainingHealth(pl.Callback):
        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
            check_loss(trainer, outputs)

        def on_train_end(self, trainer, pl_module) -> None:
            log_dir = trainer.log_dir  # a collective under DDP: every rank asks
            health = health_of(trainer, pl_module)
            if health is None or not trainer.is_global_zero or trainer.fast_dev_run:
                return
            if log_dir:
                write_json(Path(log_dir) / HEALTH_FILE, health)
            if health["at_chance"]:
                print(chance_warning_text(health))

    return TrainingHealth()


def chance_warning_text(health: dict) -> str:
    return (
        f"WARNING: the fit ended at chance level on its own training data (training accuracy "
        f"{health['train_accuracy']:.3f}, chance {health['chance_accuracy']:.3f}); attacks and "
        "discriminate on this run will say so."
    )
