"""The attack registry, refusing duplicate names (after Opacus' accountant registry).

Register a class that follows :class:`attacks.base.Attack` with ``@register("name")``; the
contract test (``tests/test_attack_contract.py``) then runs over it like every other entry.
"""

from __future__ import annotations

from collections.abc import Callable

_ATTACKS: dict[str, type] = {}

#: modules whose import registers the built-in attacks
BUILTIN = (
    "attacks.yeom",
    "attacks.salem",
    "attacks.label_only",
    "attacks.lira",
    "attacks.rmia",
    "attacks.baselines",
    "attacks.reference_calibrated",
    "attacks.detection.xgb",
    "attacks.detection.canvas_cnn",
)


def register(name: str) -> Callable[[type], type]:
    """Class decorator adding an attack under ``name``; a second use of a name raises."""

    def deco(cls: type) -> type:
        if name in _ATTACKS:
            raise ValueError(
                f"attack {name!r} is already registered ({_ATTACKS[name].__module__}."
                f"{_ATTACKS[name].__qualname__}); pick another name."
            )
        cls.name = name
        _ATTACKS[name] = cls
        return cls

    return deco


def get(name: str) -> type:
    """The attack class registered under ``name``."""
    _load_builtin()
    if name not in _ATTACKS:
        raise KeyError(f"unknown attack {name!r}; registered: {available()}")
    return _ATTACKS[name]


def available(kind: str | None = None) -> list[str]:
    """Registered names, sorted; only those of ``kind`` (``classifier``/``detector``) if given."""
    _load_builtin()
    return sorted(n for n, c in _ATTACKS.items() if kind is None or c.kind == kind)


def _load_builtin() -> None:
    import importlib

    for module in BUILTIN:
        importlib.import_module(module)
