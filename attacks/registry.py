"""A small registry of attacks, refusing duplicate names (after Opacus' accountant registry).

An attack is a class with ``fit(attack_signals) -> self`` and ``score(signals) -> np.ndarray``
(higher = more likely a member). Register it with ``@register("name")``.
"""

from __future__ import annotations

from collections.abc import Callable

_ATTACKS: dict[str, type] = {}


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


def available() -> list[str]:
    _load_builtin()
    return sorted(_ATTACKS)


def _load_builtin() -> None:
    # importing the modules registers their attacks
    import attacks.detection.canvas_cnn  # noqa: F401
    import attacks.detection.xgb  # noqa: F401
    import attacks.label_only  # noqa: F401
    import attacks.salem  # noqa: F401
    import attacks.threshold  # noqa: F401
