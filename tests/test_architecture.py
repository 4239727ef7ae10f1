"""The import rules of docs/architecture.md, checked on every module's imports (function-level
ones included) by walking the syntax tree; a planted forbidden import must be caught."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PROJECT = ("attacks", "datamodules", "lightning_modules", "experiments", "cli", "benchmarks")
#: third-party packages attacks/ may use (plus the standard library)
ATTACKS_THIRD_PARTY = {
    "numpy",
    "torch",
    "torchvision",
    "torchmetrics",
    "scipy",
    "sklearn",
    "xgboost",
    "art",
    "matplotlib",
    "tabulate",
}
#: the modules of attacks/ that lightning_modules/ may import: the signal-file seam, and the pure
#: retrieval metrics that an embedding's validation step logs
SEAM = ("attacks.signals", "attacks.reid_benchmark")


def sources() -> dict[str, str]:
    """``{path relative to the repo: source}`` of every project module outside tests/."""
    out = {}
    for pkg in PROJECT:
        paths = [ROOT / "cli.py"] if pkg == "cli" else sorted((ROOT / pkg).rglob("*.py"))
        for p in paths:
            out[p.relative_to(ROOT).as_posix()] = p.read_text()
    return out


def imports(source: str) -> list[tuple[str, list[str], int]]:
    """``(module, imported names, line)`` for every import statement, at any depth."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found += [(a.name, [], node.lineno) for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.append((node.module, [a.name for a in node.names], node.lineno))
    return found


def private_attributes(source: str, modules: set[str]) -> list[tuple[str, int]]:
    """``module._name`` attribute uses on imported project modules."""
    out = []
    for node in ast.walk(ast.parse(source)):
        if (
            isinstance(node, ast.Attribute)
            and node.attr.startswith("_")
            and not node.attr.startswith("__")
            and isinstance(node.value, ast.Name)
            and node.value.id in modules
        ):
            out.append((f"{node.value.id}.{node.attr}", node.lineno))
    return out


def rule_breaks(path: str, module: str, names: list[str]) -> list[str]:
    """Why importing ``module`` (``names`` from it) in ``path`` breaks a rule (empty if fine)."""
    package, top = path.split("/")[0].removesuffix(".py"), module.split(".")[0]
    project = top in PROJECT
    if top == "cli":
        return ["nothing imports cli.py"]
    if package == "attacks":
        if project and top != "attacks":
            return ["attacks/ imports only attacks/ of the project"]
        if not project and top not in ATTACKS_THIRD_PARTY and top not in sys.stdlib_module_names:
            return [f"attacks/ may not use {top}"]
    if package == "datamodules" and project and top != "datamodules":
        return ["datamodules/ imports no other project package"]
    if package == "lightning_modules" and project:
        if top == "attacks" and module not in SEAM:
            return [f"lightning_modules/ reaches attacks/ only through {' or '.join(SEAM)}"]
        if top not in ("lightning_modules", "attacks"):
            return [f"lightning_modules/ may not import {top}"]
    if package == "benchmarks" and project and any(n.startswith("_") for n in names):
        return ["benchmarks use no private names"]
    return []


def violations(srcs: dict[str, str]) -> list[str]:
    """Every broken rule in ``srcs``, as ``path:line: module: why``."""
    out = []
    for path, source in srcs.items():
        for module, names, line in imports(source):
            out += [f"{path}:{line}: {module}: {why}" for why in rule_breaks(path, module, names)]
        if path.startswith("benchmarks/"):
            for attr, line in private_attributes(source, set(PROJECT)):
                out.append(f"{path}:{line}: {attr}: benchmarks use no private names")
    return out


def test_the_tree_keeps_the_import_rules():
    assert violations(sources()) == []


@pytest.mark.parametrize(
    "path, planted",
    [
        ("attacks/yeom.py", "import cli"),
        ("attacks/yeom.py", "from experiments.run.folder import RunContext"),
        ("attacks/metrics.py", "def f():\n    from lightning_modules import extraction\n"),
        ("attacks/salem.py", "import pytorch_lightning"),
        ("datamodules/whale.py", "from attacks.signals import save_signals"),
        ("lightning_modules/extraction.py", "from attacks.metrics import auc"),
        ("lightning_modules/classifier.py", "import experiments.commands.fit"),
        ("experiments/commands/fit.py", "from cli import main"),
        ("benchmarks/common.py", "from attacks.signals import _private"),
    ],
)
def test_a_planted_forbidden_import_is_caught(path, planted):
    srcs = sources()
    assert path in srcs
    srcs[path] = srcs[path] + "\n" + planted + "\n"
    found = violations(srcs)
    assert len(found) == 1 and found[0].startswith(path), found


def test_cli_help_imports_no_heavy_library():
    """``import cli`` and ``cli.py --help`` load neither torch nor Lightning (a structural
    check of start-up cost, not a timing)."""
    code = (
        "import sys, runpy; sys.argv = ['cli.py', '--help']\n"
        "try:\n    runpy.run_path('cli.py', run_name='__main__')\n"
        "except SystemExit as e:\n    assert e.code == 0, e.code\n"
        "import cli\n"
        "heavy = [m for m in ('torch', 'pytorch_lightning') if m in sys.modules]\n"
        "assert not heavy, heavy\n"
    )
    subprocess.run([sys.executable, "-c", code], cwd=ROOT, check=True, capture_output=True)


#: what ``cli.py discriminate`` imports on the exported engine (docs/architecture.md)
TORCH_FREE = (
    "experiments.commands.discriminate",
    "experiments.target.onnx_engine",
    "experiments.run.folder",
    "datamodules.decode",
    "datamodules.hashing",
    "datamodules.image_check",
    "attacks.yeom",
    "attacks.baselines",
    "attacks.open_set",
    "attacks.reference_calibrated",
    "attacks.reid_benchmark",
    "attacks.group_bootstrap",
    "experiments.known_new.contact_sheet",
    "experiments.run.failures",
    "experiments.run.interrupts",
    "experiments.callbacks.fit_health",
    "experiments.run.help_cache",
    "datamodules.capture_time",
    "experiments.known_new.scan",
    "experiments.known_new.classifier_scorer",
    "experiments.known_new.decisions",
    "experiments.known_new.tables",
    "experiments.known_new.output_folder",
    "experiments.run.folder_checks",
    "attacks.knn",
)


def test_the_exported_engine_s_modules_import_no_torch():
    """The modules of ``discriminate``'s exported engine load neither torch, torchvision nor
    Lightning at import time (structural; tests/test_export.py runs the command itself)."""
    code = (
        "import importlib, sys\n"
        f"for m in {TORCH_FREE!r}:\n    importlib.import_module(m)\n"
        "heavy = [m for m in ('torch', 'torchvision', 'pytorch_lightning') if m in sys.modules]\n"
        "assert not heavy, heavy\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-1500:]


def test_functions_are_short():
    """No function or method longer than 80 lines outside tests and benchmarks."""
    long = []
    for path, source in sources().items():
        if path.startswith("benchmarks/"):
            continue
        for node in ast.walk(ast.parse(source)):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                n = node.end_lineno - node.lineno + 1
                if n > 80:
                    long.append(f"{path}:{node.lineno} {node.name} ({n} lines)")
    assert long == []
