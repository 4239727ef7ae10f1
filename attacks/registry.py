"""The attack registry: each attack is declared once, on its class (after timm's model registry).

``@register(name, aliases=..., settings=..., cheap=..., discriminate=..., steps=...)`` on a
class that follows :class:`attacks.base.Attack` declares everything the commands derive:

* ``aliases``: other names it answers to (:func:`get`, ``cli.py discriminate --attack``); the
  first alias is its short name, the stem of the leakage monitor's ``leak/<stem>_*`` metrics;
* ``settings``: the plain dataclass of its ``cli.py attack`` block (``--<name>.enabled``, the
  ``<name>:`` key of ``configs/attack/*.yaml``), with an ``enabled`` field; None: no block;
* ``cheap``: the audit level (``identity`` or ``sample``) at which the leakage monitor scores it
  every monitored epoch (no training, no model query); None: not monitored;
* ``discriminate``: True (or the one of its names to report it under) when ``cli.py
  discriminate`` may fit it on a classifier run;
* ``steps``: how ``cli.py attack`` gets its signals (:data:`STEP_KINDS`); default ``("target",)``
  when it has a settings block, else none.

A name or alias used twice is refused. Lookups import the modules of :data:`BUILTIN` (each entry
remembers its module, :attr:`Entry.module`); those import no torch, Lightning, xgboost or ART at
module level, so listing names and choices stays quick. The contract test
(``tests/test_attack_contract.py``) runs over every entry.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass

#: how ``cli.py attack`` gets an attack's signals: ``target`` (the target's attack set, switched
#: by its settings block), ``baseline`` (the target's attack set, switched on with the open-set
#: baselines by ``baselines``, when the signals carry what it reads); the special steps, whose
#: builders are in :mod:`experiments.attack_steps`: ``shadow`` (a shadow model's attack set),
#: ``boundary`` (boundary distances from model queries), ``calibrated`` (reference models),
#: ``reference`` (reference whales)
STEP_KINDS = ("target", "baseline", "shadow", "boundary", "calibrated", "reference")
#: audit levels of the leakage monitor (:mod:`attacks.epoch_leakage`)
LEVELS = ("identity", "sample")

#: modules whose import registers the built-in attacks, in the registry's order (whatever order
#: they are imported in)
BUILTIN = (
    "attacks.yeom",
    "attacks.salem",
    "attacks.baselines",
    "attacks.label_only",
    "attacks.lira",
    "attacks.rmia",
    "attacks.reference_calibrated",
    "attacks.detection.xgb",
    "attacks.detection.canvas_cnn",
)


@dataclass(frozen=True)
class Entry:
    """One registered attack and its declarations (see the module docstring)."""

    name: str
    cls: type
    aliases: tuple[str, ...] = ()
    settings: type | None = None
    cheap: str | None = None
    discriminate: str | None = None
    steps: tuple[str, ...] = ()

    @property
    def names(self) -> tuple[str, ...]:
        return (self.name, *self.aliases)

    @property
    def short(self) -> str:
        """The first alias, else the name: the leakage monitor's metric stem."""
        return self.aliases[0] if self.aliases else self.name

    @property
    def module(self) -> str:
        """The module that declares it."""
        return self.cls.__module__


_ENTRIES: dict[str, Entry] = {}
_NAMES: dict[str, str] = {}  # name or alias -> registered name


def register(
    name: str,
    *,
    aliases: tuple[str, ...] = (),
    settings: type | None = None,
    cheap: str | None = None,
    discriminate: bool | str = False,
    steps: tuple[str, ...] | None = None,
) -> Callable[[type], type]:
    """Class decorator adding an attack under ``name`` with its declarations; a name or alias
    already taken raises ValueError."""
    aliases = tuple(aliases)
    steps = (("target",) if settings is not None else ()) if steps is None else tuple(steps)
    shown = (name if discriminate is True else discriminate) or None
    _check(name, aliases, settings, cheap, shown, steps)

    def deco(cls: type) -> type:
        for n in (name, *aliases):
            if n in _NAMES:
                owner = _ENTRIES[_NAMES[n]].cls
                raise ValueError(
                    f"attack {n!r} is already registered ({owner.__module__}."
                    f"{owner.__qualname__}); pick another name."
                )
        cls.name = name
        _ENTRIES[name] = Entry(name, cls, aliases, settings, cheap, shown, steps)
        _NAMES.update(dict.fromkeys((name, *aliases), name))
        return cls

    return deco


def _check(name, aliases, settings, cheap, shown, steps) -> None:
    """ValueError for a declaration that cannot work (see :func:`register`)."""
    if len(set((name, *aliases))) != 1 + len(aliases):
        raise ValueError(f"attack {name!r}: aliases {aliases} repeat a name")
    if settings is not None and "enabled" not in {f.name for f in dataclasses.fields(settings)}:
        raise ValueError(f"attack {name!r}: its settings block needs an `enabled` field")
    if cheap not in (None, *LEVELS):
        raise ValueError(f"attack {name!r}: cheap={cheap!r}, give one of {LEVELS} or None")
    if shown not in (None, name, *aliases):
        raise ValueError(f"attack {name!r}: discriminate={shown!r} is none of its names")
    bad = [s for s in steps if s not in STEP_KINDS]
    if bad or ("target" in steps and settings is None):
        raise ValueError(
            f"attack {name!r}: steps={steps}: each one of {STEP_KINDS}; `target` needs a "
            "settings block (its enabled switch)"
        )


def unregister(name: str) -> None:
    """Remove the attack ``name`` and its aliases (a test's throwaway attack)."""
    entry = _ENTRIES.pop(name)
    for n in entry.names:
        del _NAMES[n]


def entry(name: str) -> Entry:
    """The declarations of the attack registered under ``name`` (or one of its aliases)."""
    _load_builtin()
    if name not in _NAMES:
        raise KeyError(f"unknown attack {name!r}; registered: {available()}")
    return _ENTRIES[_NAMES[name]]


def get(name: str) -> type:
    """The attack class registered under ``name`` (or one of its aliases)."""
    return entry(name).cls


def entries(kind: str | None = None) -> list[Entry]:
    """Every entry in registry order (:data:`BUILTIN`'s, then others as registered; within a
    module, as declared); only those of ``kind`` (``classifier``/``detector``) if given."""
    _load_builtin()
    rank = {m: i for i, m in enumerate(BUILTIN)}
    ordered = sorted(_ENTRIES.values(), key=lambda e: rank.get(e.module, len(BUILTIN)))
    return [e for e in ordered if kind is None or e.cls.kind == kind]


def available(kind: str | None = None) -> list[str]:
    """Registered names (no aliases), sorted; only those of ``kind`` if given."""
    return sorted(e.name for e in entries(kind))


def _load_builtin() -> None:
    import importlib

    for module in BUILTIN:
        importlib.import_module(module)
