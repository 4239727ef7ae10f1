"""The rules of docs/architecture.md, checked on the syntax tree of every project module (imports
at any depth count): import rules, layers, no cycles, file length, and the page's module table.
Each rule also catches a planted break. ``python tests/test_architecture.py`` prints the import map.
"""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PROJECT = ("attacks", "datamodules", "lightning_modules", "experiments", "cli", "benchmarks")
#: third-party packages attacks/ may use (plus the standard library)
ATTACKS_THIRD_PARTY = set(
    "numpy torch torchvision torchmetrics scipy sklearn xgboost art matplotlib tabulate".split()
)
#: the modules of attacks/ that lightning_modules/ may import: the signal-file seam, and the pure
#: retrieval metrics that an embedding's validation step logs
SEAM = ("attacks.signals", "attacks.reid_benchmark")
#: the layers, lowest first: a module imports its own package (wing, in experiments/) or a lower
#: layer, never a higher one nor another wing of its own layer
LAYERS = (
    ("attacks", "datamodules"),
    ("lightning_modules",),
    ("experiments", "experiments.run", "experiments.settings"),
    ("experiments.side_models", "experiments.target"),
    ("experiments.callbacks",),
    ("experiments.attack_steps", "experiments.known_new"),
    ("experiments.fitting",),
    ("experiments.detector_audit",),
    ("experiments.commands",),
    ("cli",),
    ("benchmarks",),
)
LAYER = {wing: level for level, wings in enumerate(LAYERS) for wing in wings}
#: besides cli.py, who may import experiments.commands: importer path (prefix) -> what it may import
COMMANDS_ALLOWED = {"benchmarks/": "experiments.commands"}
MAX_FILE_LINES = 400


def sources() -> dict[str, str]:
    """``{path relative to the repo: source}`` of every project module outside tests/."""
    out = {}
    for pkg in PROJECT:
        paths = [ROOT / "cli.py"] if pkg == "cli" else sorted((ROOT / pkg).rglob("*.py"))
        for p in paths:
            out[p.relative_to(ROOT).as_posix()] = p.read_text()
    return out


def module_of(path: str) -> str:
    """``experiments/run/folder.py`` -> ``experiments.run.folder`` (a package: its ``__init__``)."""
    return path.removesuffix(".py").replace("/", ".").removesuffix(".__init__")


def wing(module: str) -> str:
    """The layer unit of ``module``: its top package, or ``experiments.<wing>`` inside experiments/."""
    parts = module.split(".")
    return ".".join(parts[:2]) if parts[0] == "experiments" and len(parts) > 1 else parts[0]


def _is_type_checking(node: ast.AST) -> bool:
    return isinstance(node, ast.If) and ast.unparse(node.test).endswith("TYPE_CHECKING")


def imports(source: str, module_level: bool = False) -> list[tuple[str, list[str], int]]:
    """``(module, imported names, line)`` for every absolute import statement, at any depth; with
    ``module_level`` only those that run at import (not in functions or ``if TYPE_CHECKING:``)."""
    found, todo = [], [ast.parse(source)]
    while todo:
        node = todo.pop()
        if isinstance(node, ast.Import):
            found += [(a.name, [], node.lineno) for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.append((node.module, [a.name for a in node.names], node.lineno))
        if module_level and isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
            continue
        todo += (
            node.orelse if module_level and _is_type_checking(node) else ast.iter_child_nodes(node)
        )
    return sorted(found, key=lambda found_import: found_import[2])


def targets(module: str, names: list[str], modules: set[str]) -> list[str]:
    """The project modules an import reaches: ``pkg.mod.name`` when that is a module, else ``pkg.mod``."""
    if module.split(".")[0] not in PROJECT:
        return []
    submodules = [f"{module}.{n}" for n in names if f"{module}.{n}" in modules]
    return submodules if names and len(submodules) == len(names) else [module, *submodules]


def import_graph(srcs: dict[str, str], module_level: bool = False) -> dict[str, set[str]]:
    """``{module: project modules it imports}``; cli.py's dispatch strings (``COMMANDS``) count."""
    modules = {module_of(p) for p in srcs}
    graph = {}
    for path, source in srcs.items():
        me = module_of(path)
        graph[me] = {t for m, n, _ in imports(source, module_level) for t in targets(m, n, modules)}
        if path == "cli.py":
            strings = (n.value for n in ast.walk(ast.parse(source)) if isinstance(n, ast.Constant))
            graph[me] |= {s for s in strings if isinstance(s, str) and s in modules}
        graph[me].discard(me)
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The import cycles of ``graph``: its strongly connected parts of more than one module."""
    order, low, stack, found = {}, {}, [], []

    def visit(module: str) -> None:
        order[module] = low[module] = len(order)
        stack.append(module)
        for other in sorted(graph.get(module, ())):
            if other not in order:
                visit(other)
                low[module] = min(low[module], low[other])
            elif other in stack:
                low[module] = min(low[module], order[other])
        if low[module] == order[module]:
            part = stack[stack.index(module) :]
            del stack[stack.index(module) :]
            if len(part) > 1:
                found.append(sorted(part))

    for module in sorted(graph):
        if module not in order:
            visit(module)
    return found


def longest_chain(graph: dict[str, set[str]], prefix: str = "") -> list[str]:
    """The longest import chain among the modules starting with ``prefix`` (importer first); its
    length is the number of import levels. ``graph`` has no cycles."""
    memo: dict[str, list[str]] = {}

    def chain(module: str) -> list[str]:
        if module not in memo:
            below = [chain(m) for m in sorted(graph.get(module, ())) if m.startswith(prefix)]
            memo[module] = [module, *max(below, key=len, default=[])]
        return memo[module]

    return max((chain(m) for m in sorted(graph) if m.startswith(prefix)), key=len, default=[])


def import_map(srcs: dict[str, str]) -> str:
    """The import levels of experiments/ and of the whole tree, and the arrows between wings."""
    graph = import_graph(srcs)
    lines = []
    for what, prefix in (("experiments/", "experiments."), ("the whole tree", "")):
        chain = longest_chain(graph, prefix)
        lines.append(f"{what}: {len(chain)} import levels: {' -> '.join(chain)}")
    arrows: dict[str, set[str]] = {}
    for module, imported in graph.items():
        arrows.setdefault(wing(module), set()).update(wing(m) for m in imported)
    for source_wing in sorted(arrows, key=lambda w: (LAYER.get(w, -1), w)):
        lower = sorted(arrows[source_wing] - {source_wing}, key=lambda w: (-LAYER.get(w, -1), w))
        lines.append(f"  {source_wing} -> {', '.join(lower) or '(nothing)'}")
    return "\n".join(lines)


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
    """Why importing ``module`` (``names`` from it) in ``path`` breaks a package rule (empty if fine)."""
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


def layer_breaks(path: str, imported: list[str]) -> list[str]:
    """Why importing the project modules ``imported`` in ``path`` breaks the commands rule or the
    layers (empty if fine)."""
    mine = wing(module_of(path))
    allowed = [m for p, m in COMMANDS_ALLOWED.items() if path.startswith(p)]
    for module in imported:
        theirs = wing(module)
        if theirs == "experiments.commands" and mine != "cli":
            if not any(f"{module}.".startswith(f"{m}.") for m in allowed):
                return ["only cli.py imports experiments.commands (see the allowed list)"]
        if theirs == mine:
            continue
        if mine not in LAYER or theirs not in LAYER:
            return [f"{mine if mine not in LAYER else theirs} is in no layer"]
        if mine in ("experiments.run", "experiments.settings") and theirs.startswith(
            "experiments."
        ):
            return ["run/ and settings/ import no other experiments wing"]
        if LAYER[theirs] >= LAYER[mine]:
            return [f"{mine} (layer {LAYER[mine]}) may not import {theirs} (layer {LAYER[theirs]})"]
    return []


def violations(srcs: dict[str, str]) -> list[str]:
    """Every broken import rule in ``srcs``, as ``path:line: module: why`` (the first rule broken)."""
    out, modules = [], {module_of(p) for p in srcs}
    for path, source in srcs.items():
        for module, names, line in imports(source):
            reached = targets(module, names, modules)
            whys = rule_breaks(path, module, names) or layer_breaks(path, reached)
            out += [f"{path}:{line}: {module}: {why}" for why in whys]
        if path.startswith("benchmarks/"):
            for attr, line in private_attributes(source, set(PROJECT)):
                out.append(f"{path}:{line}: {attr}: benchmarks use no private names")
    return out


def long_files(srcs: dict[str, str]) -> list[str]:
    """``path (N lines)`` of every module over MAX_FILE_LINES lines."""
    counts = {path: len(source.splitlines()) for path, source in srcs.items()}
    return [f"{path} ({n} lines)" for path, n in counts.items() if n > MAX_FILE_LINES]


def test_the_tree_keeps_the_import_rules():
    srcs = sources()
    assert violations(srcs) == []
    assert sorted({wing(module_of(p)) for p in srcs} - set(LAYER)) == []


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
        ("experiments/known_new/scan.py", "from experiments.commands.discriminate import main"),
        ("experiments/commands/audit.py", "from experiments.commands import fit"),
        ("experiments/run/folder.py", "def f():\n    import experiments.target.torch_engine\n"),
        ("experiments/settings/attack.py", "import experiments.callbacks.fit_health"),
        ("experiments/side_models/shadow.py", "from experiments.callbacks import leakage_monitor"),
        ("experiments/attack_steps/jobs.py", "from experiments.known_new.scan import photo_rows"),
        ("experiments/detector_audit/report.py", "import benchmarks.common"),
        ("lightning_modules/embedding.py", "from experiments.run.folder import RunContext"),
    ],
)
def test_a_planted_forbidden_import_is_caught(path, planted):
    srcs = sources()
    assert path in srcs
    srcs[path] = srcs[path] + "\n" + planted + "\n"
    found = violations(srcs)
    assert len(found) == 1 and found[0].startswith(path), found


def test_no_import_cycles():
    assert cycles(import_graph(sources())) == []


def test_a_planted_import_cycle_is_caught():
    srcs, training = sources(), "experiments.side_models.training"
    assert training in import_graph(srcs)["experiments.side_models.shadow"]
    path = "experiments/side_models/training.py"
    srcs[path] += "\ndef f():\n    from experiments.side_models import shadow\n"
    assert violations(srcs) == []  # the same wing: only the cycle check sees it
    assert cycles(import_graph(srcs)) == [["experiments.side_models.shadow", training]]


def test_no_file_is_over_400_lines():
    assert long_files(sources()) == []


def test_a_planted_long_file_is_caught():
    srcs = {**sources(), "attacks/planted.py": "x = 1\n" * (MAX_FILE_LINES + 1)}
    assert long_files(srcs)[-1:] == [f"attacks/planted.py ({MAX_FILE_LINES + 1} lines)"]


def test_the_architecture_page_lists_every_module_and_only_those():
    """Every module but ``__init__.py`` has one row in the page's module table, and every row
    names a module that exists."""
    table = (ROOT / "docs/architecture.md").read_text().split("\n## Modules\n")[1]
    rows = re.findall(r"^\| `([\w/]+\.py)` \|", table, flags=re.M)
    tree = {p for p in sources() if not p.endswith("__init__.py")}
    assert len(rows) == len(set(rows))
    assert sorted(tree - set(rows)) == [] and sorted(set(rows) - tree) == []


@pytest.mark.parametrize("command", [None, "attack", "discriminate", "reid", "defend", "audit"])
def test_help_imports_no_heavy_library(command):
    """``import cli`` and ``cli.py [COMMAND] --help`` load neither torch nor Lightning (a
    structural check of start-up cost, not a timing). jsonargparse runs a settings module's
    ``if TYPE_CHECKING:`` imports to resolve its annotations: torch must not be named there."""
    argv = ["cli.py", *([command] if command else []), "--help"]
    code = (
        f"import sys, runpy; sys.argv = {argv!r}\n"
        "try:\n    runpy.run_path('cli.py', run_name='__main__')\n"
        "except SystemExit as e:\n    assert e.code == 0, e.code\n"
        "import cli\n"
        "heavy = [m for m in ('torch', 'pytorch_lightning') if m in sys.modules]\n"
        "assert not heavy, heavy\n"
    )
    subprocess.run([sys.executable, "-c", code], cwd=ROOT, check=True, capture_output=True)


#: what ``cli.py discriminate`` imports on the exported engine, and the other torch-free modules
#: (docs/architecture.md lists the same)
TORCH_FREE = (
    "experiments.commands.discriminate", "experiments.target.onnx_engine",
    "experiments.run.folder", "experiments.run.folder_checks", "experiments.run.input_checks",
    "experiments.run.config_files", "experiments.run.outputs", "experiments.run.failures",
    "experiments.run.interrupts", "experiments.run.help_cache", "experiments.callbacks.fit_health",
    "experiments.known_new.scan", "experiments.known_new.classifier_scorer",
    "experiments.known_new.decisions", "experiments.known_new.tables",
    "experiments.known_new.output_folder", "experiments.known_new.contact_sheet",
    "datamodules.decode", "datamodules.hashing", "datamodules.image_check", "datamodules.manifest",
    "datamodules.errors", "datamodules.cells", "datamodules.capture_time", "attacks.signals",
    "attacks.metrics", "attacks.known_new", "attacks.known_new_levels", "attacks.yeom",
    "attacks.baselines", "attacks.open_set", "attacks.knn",
    "attacks.reference_calibrated", "attacks.reid_benchmark", "attacks.group_bootstrap",
    "attacks.registry",
)  # fmt: skip


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


def test_torch_free_holds_what_discriminate_imports_and_the_page_lists_it():
    """Every project module that ``experiments.commands.discriminate`` imports at module level
    (through any chain) is in TORCH_FREE, and the page's torch-free list is TORCH_FREE."""
    graph, reached, todo = import_graph(sources(), module_level=True), set(), [TORCH_FREE[0]]
    while todo:
        module = todo.pop()
        todo += [] if module in reached else sorted(graph[module])
        reached.add(module)
    assert sorted(reached - set(TORCH_FREE)) == []
    page = (ROOT / "docs/architecture.md").read_text()
    listed = page.split("**Torch-free modules.**")[1].split("\n\n")[0]
    assert sorted(re.findall(r"`([\w.]+)`", listed)) == sorted(TORCH_FREE)


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


if __name__ == "__main__":
    print(import_map(sources()))
