"""Interruptions end every command with a non-zero status, after saving what can be saved.

``cli.py`` installs :func:`install` before it runs a command. SIGTERM, SIGHUP and SIGINT then
raise :class:`Interrupted` (a ``BaseException``, so no ``except Exception`` swallows it), and the
command line exits ``128 + signal`` as shells do: 143, 129, 130.

A fit does not stop in the middle of an optimizer step: while :class:`GracefulStop` is one of its
callbacks, SIGTERM and SIGHUP (a scheduler's pre-emption, a closed terminal) only mark the trainer
as told to stop; Lightning stops after the current batch, and :class:`GracefulStop` writes a
resumable ``last.ckpt`` before the fit exits. A second signal, SIGINT (Ctrl-C), or a signal after
the training loop ended stops at once; the run then resumes from its last periodic checkpoint.

Kept free of heavy imports: ``cli.py`` loads it before any command.
"""

from __future__ import annotations

import signal

#: the signals that end a command, with the names the messages use
SIGNALS = {signal.SIGTERM: "SIGTERM", signal.SIGHUP: "SIGHUP", signal.SIGINT: "SIGINT"}


class Interrupted(BaseException):
    """A command ended by a signal; ``exit_code`` is ``128 + signum``."""

    def __init__(self, signum: int, detail: str = ""):
        self.signum, self.detail = int(signum), detail
        super().__init__(f"interrupted by {SIGNALS.get(signum, signum)}")

    @property
    def exit_code(self) -> int:
        return 128 + self.signum


class _State:
    #: the trainer that stops at its next batch boundary instead of at once (a fit)
    trainer = None
    #: the signal a deferring fit received
    received: int | None = None


def _handler(signum, frame) -> None:
    trainer = _State.trainer
    if trainer is not None and signum != signal.SIGINT and _State.received is None:
        _State.received = signum
        trainer._signal_connector.received_sigterm = True  # Lightning's own stop point
        return
    raise Interrupted(signum)  # SIGINT, a second signal, or no fit waiting for a batch to end


def install() -> None:
    """Route SIGTERM, SIGHUP and SIGINT to :class:`Interrupted` (main thread only)."""
    for signum in SIGNALS:
        signal.signal(signum, _handler)


def received() -> int | None:
    """The signal a fit deferred (None when it ran to its end)."""
    return _State.received


def graceful_stop():
    """A Lightning callback: the fit it joins stops at a batch boundary on SIGTERM or SIGHUP and
    saves a resumable ``last.ckpt`` (through the run's :class:`RunCheckpoint`) before it exits."""
    import pytorch_lightning as pl
    from pytorch_lightning.trainer.states import RunningStage

    class GracefulStop(pl.Callback):
        def on_fit_start(self, trainer, pl_module) -> None:
            _State.trainer, _State.received = trainer, None

        def on_train_end(self, trainer, pl_module) -> None:
            _State.trainer = None  # no batch boundary left to wait for: a signal stops at once

        def on_exception(self, trainer, pl_module, exception: BaseException) -> None:
            _State.trainer = None
            if _State.received is None or trainer.state.stage != RunningStage.TRAINING:
                return  # a stop inside validation keeps the last epoch-end checkpoint
            for cb in trainer.checkpoint_callbacks:
                if getattr(cb, "save_last", False) and cb.dirpath:
                    if getattr(cb, "_last_global_step_saved", -1) != trainer.global_step:
                        cb._save_last_checkpoint(trainer, cb._monitor_candidates(trainer))

    return GracefulStop()
