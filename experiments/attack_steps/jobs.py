"""The jobs of ``cli.py attack``: one attack to fit and evaluate (:class:`Job`), and what the
job builders of :mod:`experiments.attack_steps.pipeline` share (:class:`Inputs`)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING

from attacks.signals import balanced, subset
from experiments.settings.attack import AttackSettings

if TYPE_CHECKING:
    from experiments.run.folder import RunContext


@dataclass
class Job:
    """One attack to fit and evaluate.

    ``fit``/``eval``: signal dicts (attack-set rows with ``role``; evaluation rows).
    ``prep_seconds``: time spent making ``fit`` (a shadow's training, boundary queries) that
    counts as the attack's training time; ``query_seconds``: per-sample cost of producing one
    evaluation signal (forward pass or boundary queries).
    """

    name: str
    attack: str
    args: dict
    fit: dict
    eval: dict
    info: dict
    balanced: bool = True
    prep_seconds: float = 0.0
    query_seconds: float = 0.0


@dataclass
class Inputs:
    """What the job builders share: the run, its signals and the settings."""

    ctx: RunContext
    sig: dict
    settings: AttackSettings
    fwd: float
    out: Path
    common: dict = field(default_factory=dict)
    log: Callable = print
    #: ``{job name: (eval signals, scores, selected rows, threshold, info)}`` of every signal job
    scored: dict = field(default_factory=dict)

    def fit_rows(self, sig: dict) -> dict:
        """Attack-set rows to fit on, balanced when the settings ask for it."""
        return balanced(sig, self.settings.seed) if self.settings.balanced else sig

    @cached_property
    def attack_set(self) -> dict:
        """The target's own attack set, as :meth:`fit_rows`."""
        return self.fit_rows(subset(self.sig, "attack"))


def target_job(inp: Inputs, name: str, attack: str, args: dict, info: dict) -> Job:
    return Job(
        name,
        attack,
        args,
        inp.attack_set,
        subset(inp.sig, "eval"),
        {**inp.common, "fit_on": "target attack set", **info},
        inp.settings.balanced,
        query_seconds=inp.fwd,
    )
