"""A callback the fault-injection tests add to a fit they kill: it writes a flag file and stops
the process at the start of a chosen training step, so the kill lands at a known place."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytorch_lightning as pl


class PauseAtStep(pl.Callback):
    """At the start of the batch that makes ``global_step == step``, write the process id to
    ``flag`` and sleep until the process is told to stop."""

    def __init__(self, step: int, flag: str):
        self.step, self.flag = step, flag

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if trainer.global_step == self.step:
            Path(self.flag).write_text(str(os.getpid()))
            # a SIGTERM only marks the trainer as told to stop (the batch then finishes)
            while not trainer.received_sigterm:
                time.sleep(0.05)


class StopAtEpoch(pl.Callback):
    """Raise at the start of training epoch ``epoch`` (after the previous epoch's checkpoint):
    an in-process stand-in for a job killed between epochs."""

    def __init__(self, epoch: int):
        self.epoch = epoch

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        if trainer.current_epoch == self.epoch:
            raise RuntimeError(f"stopped at the start of epoch {self.epoch}")


class PoisonAtStep(pl.Callback):
    """At the start of the batch that makes ``global_step == step``, fill the model's first
    weight with nan: the loss of that step is not finite (a diverging fit, made certain)."""

    def __init__(self, step: int):
        self.step = step

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if trainer.global_step == self.step:
            import torch

            with torch.no_grad():
                next(pl_module.parameters()).fill_(float("nan"))


class FailAtEpoch(pl.Callback):
    """Raise an unexpected error (not bad input) at the start of training epoch ``epoch``."""

    def __init__(self, epoch: int):
        self.epoch = epoch

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        if trainer.current_epoch == self.epoch:
            raise ZeroDivisionError("a planted internal error")
