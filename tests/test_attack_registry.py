"""An attack is declared once, on its class: registering one (a class and one ``register`` call)
puts it in ``cli.py attack``'s settings, the leakage monitor's choices and ``cli.py
discriminate``'s choices; names and aliases are unique and lookups stay torch-free."""

from __future__ import annotations

import subprocess
import sys
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
import pytest

from attacks import registry
from attacks.base import ThresholdAttack


@dataclass
class ThrowawaySettings:
    """A throwaway attack's block.

    Args:
        enabled: run it.
        scale: multiplies the score.
    """

    enabled: bool = False
    scale: float = 1.0


class Throwaway(ThresholdAttack):
    """Score = ``scale`` x maximum softmax probability."""

    requires = ("max_prob",)

    def __init__(self, scale: float = 1.0):
        self.scale = scale

    def raw_score(self, signals: dict) -> np.ndarray:
        return self.scale * np.asarray(signals["max_prob"], dtype=np.float64)


DECLARATION = dict(
    aliases=("throw",), settings=ThrowawaySettings, cheap="identity", discriminate=True
)


@contextmanager
def registered():
    """The throwaway attack registered for the ``with`` block."""
    registry.register("throwaway_attack", **DECLARATION)(Throwaway)
    try:
        yield "throwaway_attack"
    finally:
        registry.unregister("throwaway_attack")


def test_a_registered_attack_joins_every_command():
    from attacks.epoch_leakage import cheap_attacks
    from experiments.attack_steps.pipeline import attack_steps, parser, settings_class

    steps_before = len(attack_steps())
    with registered() as name:
        cfg = parser().parse_args(["--run", "r", f"--{name}.enabled", "true"])
        assert cfg[name].enabled is True and cfg[name].scale == 1.0
        settings = settings_class()(**{name: ThrowawaySettings(enabled=True)})
        assert getattr(settings, name).enabled
        assert cheap_attacks()["throw"] == (name, "identity")  # the monitor's stem: its alias
        assert len(attack_steps()) == steps_before + 1  # its target step
        assert registry.get("throw") is Throwaway
    assert "throw" not in cheap_attacks() and len(attack_steps()) == steps_before


def test_the_monitor_accepts_a_registered_cheap_attack():
    from experiments.callbacks.leakage_monitor import LeakageMonitor

    with registered():
        assert "throw" in LeakageMonitor(attacks=["throw"]).attacks
    with pytest.raises(ValueError, match="leakage.attacks: unknown"):
        LeakageMonitor(attacks=["throw"])


def test_discriminate_offers_a_registered_attack(repo):
    """discriminate's choices are read when its module is imported: register first (as a
    plugin module listed in BUILTIN would), in a fresh interpreter."""
    code = (
        "from dataclasses import dataclass\n"
        "from attacks.registry import register\n"
        "from attacks.baselines import MaxSoftmaxBaseline\n"
        "register('throwaway_attack', aliases=('throw',), discriminate=True)("
        "type('Throwaway', (MaxSoftmaxBaseline,), {}))\n"
        "from experiments.commands.discriminate import parser\n"
        "from experiments.known_new.classifier_scorer import ATTACK_CHOICES\n"
        "assert {'throwaway_attack', 'throw'} <= set(ATTACK_CHOICES), ATTACK_CHOICES\n"
        "a = parser().parse_args(['--run', 'r', '--images', 'i', '--attack', 'throw'])\n"
        "print(a.attack)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=repo, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr[-1500:]
    assert out.stdout.strip() == "throw"


def test_a_name_or_alias_is_registered_once():
    with pytest.raises(ValueError, match="'cosine' is already registered"):
        registry.register("new_cosine", aliases=("cosine",))(type("Again", (), {}))
    with pytest.raises(ValueError, match="'msp' is already registered"):
        registry.register("msp")(type("Again", (), {}))
    with pytest.raises(ValueError, match="needs an `enabled` field"):
        registry.register("x", settings=dataclass(type("Block", (), {"__annotations__": {}})))
    with pytest.raises(ValueError, match="steps="):
        registry.register("x", steps=("target",))  # a target step needs its switch
    assert "new_cosine" not in registry.available() and "x" not in registry.available()


def test_every_alias_resolves_to_one_attack():
    owners: dict[str, str] = {}
    for e in registry.entries():
        for n in e.names:
            assert owners.setdefault(n, e.name) == e.name, f"{n} names two attacks"
            assert registry.get(n) is e.cls and registry.entry(n) is e
    nn = registry.entry("cosine")
    assert nn.name == "baseline_nn_cosine" and set(nn.names) >= {"nn_cosine", "cosine"}


def test_lookups_import_no_heavy_library(repo):
    code = (
        "import sys, attacks.registry as r\n"
        "r.available(); r.get('cosine'); [e.settings for e in r.entries()]\n"
        "import attacks.epoch_leakage as el; el.cheap_attacks()\n"
        "print([m for m in ('torch', 'xgboost', 'art', 'pytorch_lightning') if m in sys.modules])"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=repo, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr[-1500:]
    assert out.stdout.strip() == "[]"
