"""The known/new scorer of ``cli.py discriminate`` on a classifier run: the attacks it may use,
the run's encounters, and :class:`attacks.known_new.KnownNew` fitted on the run's final signals
(the attack set calibrates, the evaluation set says whether it can separate). Torch-free (the
run's signals are numpy arrays)."""

from __future__ import annotations

import importlib

import numpy as np

from attacks import open_set as osm
from attacks.known_new import KnownNew
from attacks.registry import entries
from attacks.signals import balanced, membership, subset
from datamodules.errors import DataError
from datamodules.manifest import encounter_key
from experiments.run.folder import RunContext, is_embedding_target

#: --attack -> (module, class): every attack registered with ``discriminate=`` (under the name
#: it declares there), in registry order (:func:`attacks.registry.register`)
ATTACKS = {e.discriminate: (e.module, e.cls.__name__) for e in entries() if e.discriminate}
#: its other names (registered name and aliases) -> the --attack name above
ALIASES = {
    n: e.discriminate for e in entries() if e.discriminate for n in e.names if n != e.discriminate
}
#: every accepted ``--attack`` (the one list its Literal type and checks derive from)
ATTACK_CHOICES = ("auto", *ATTACKS, *ALIASES)
#: every accepted ``--aggregate``: ``auto`` (mean, or mean_embedding with cosine scores), the
#: score rules of :func:`attacks.open_set.aggregate`, and ``vote`` (the majority of the photos'
#: decisions, see :func:`attacks.known_new_levels.vote_level`)
AGGREGATE_CHOICES = ("auto", *osm.AGGREGATES, "vote")
SIGNAL_ATTACKS = tuple(ATTACKS) + tuple(ALIASES)


def run_encounters(ctx: RunContext, sig: dict) -> np.ndarray:
    """Encounter of each signal row (:func:`datamodules.manifest.encounter_key`:
    ``identity/group``, or ``identity/file`` for runs split without ``group_by``)."""
    return np.asarray([encounter_key(ctx.rows[int(i)]) for i in np.asarray(sig["index"])])


def fit_attack(sig: dict, name: str, seed: int = 0):
    """The attack ``name`` fitted on the balanced attack set of the run's final signals."""
    name = ALIASES.get(name, name)
    if name not in ATTACKS:
        raise DataError(f"--attack {name}: choose one of {', '.join(SIGNAL_ATTACKS)}")
    module, cls = ATTACKS[name]
    attack_cls = getattr(importlib.import_module(module), cls)
    return attack_cls.for_run(sig).fit(balanced(subset(sig, "attack"), seed))


def fit_run(ctx: RunContext, sig: dict, attack: str, aggregate: str, **fit_options) -> KnownNew:
    """:meth:`attacks.known_new.KnownNew.fit` on the run's final signals ``sig`` for ``--attack
    attack`` (``auto``: cosine for embedding targets, else yeom) and ``--aggregate aggregate``
    (``auto``: mean_embedding with cosine scores, else mean; ``vote``); ``fit_options``:
    ``fpr``, ``threshold``, ``n_boot``."""
    embedding_target = is_embedding_target(ctx.model_args)
    if attack == "auto":
        attack = "cosine" if embedding_target else "yeom"
    name = ALIASES.get(attack, attack)
    by_cosine = name == "cosine" or embedding_target
    rule = aggregate if aggregate not in ("auto", "vote") else None
    rule = rule or ("mean_embedding" if by_cosine else "mean")
    if rule not in osm.AGGREGATES:
        raise DataError(f"--aggregate {rule}: choose one of {', '.join(osm.AGGREGATES)}")
    if "embedding" not in sig:
        raise DataError(
            f"--run {ctx.folder}: signals/final.npz has no embeddings; move it aside to re-extract"
        )
    fitted = fit_attack(sig, name)
    for set_name in ("attack", "eval"):
        y = membership(subset(sig, set_name))
        if len(y) == 0 or y.min() == y.max():
            raise DataError("photo level: the run's attack and eval sets need known and new whales")
    return KnownNew.fit(
        fitted,
        sig,
        run_encounters(ctx, sig),
        name=name,
        n_classes=len(ctx.class_names),
        rule=rule,
        by_cosine=by_cosine,
        vote=aggregate == "vote",
        **fit_options,
    )
