"""``cli.py attack --help`` stays fast: experiments/commands/attack.py loads no torch, Lightning, xgboost
or ART at import time (they load when an attack runs)."""

from __future__ import annotations

import subprocess
import sys
import time

HEAVY = ("torch", "pytorch_lightning", "lightning", "xgboost", "art", "matplotlib", "sklearn")


def test_attack_module_imports_nothing_heavy(repo):
    code = (
        "import sys, experiments.commands.attack, experiments.attack_steps.pipeline as a\n"
        f"print(sorted(m for m in {HEAVY!r} if m in sys.modules))\n"
        "assert callable(a.write_summary) and a.STEPS\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=repo, capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == "[]"


def test_attack_help_is_quick(repo):
    t0 = time.perf_counter()
    out = subprocess.run(
        [sys.executable, "cli.py", "attack", "--help"], cwd=repo, capture_output=True, text=True
    )
    assert out.returncode == 0 and "--run" in out.stdout
    assert time.perf_counter() - t0 < 3.0  # about 0.6 s alone; slack for a loaded machine
