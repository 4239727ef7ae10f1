"""Run every benchmark, then print the figures against their goals.

    python benchmarks/run_all.py [--full | --smoke] [--only fit_throughput ... | --gpu-checks]
        [--device cuda] [--threads N] [--out-dir benchmarks/results] [--omp-wait-policy passive]

Each script of :data:`BENCHMARKS` runs in its own process (this Python), with ``--full`` passed
through when given (real sizes; hours on a CPU) and ``--out`` pointing into ``--out-dir``. The
default sizes take a few minutes on 2 CPU cores. After each script the time it took is printed;
at the end a table ``name | value | unit | goal | met?`` is read back from the result files, and
``run_all.json`` records the per-script times (its ``value``: the total, goal < 900 s) and
``summary.md`` the same table in markdown (plus the scale benchmark's stage x size table).
``--smoke`` runs every script at a tiny size (each :class:`Benchmark`'s ``smoke`` arguments) to
check that it runs; ``--gpu-checks`` selects the GPU figures (:data:`GPU_CHECKS`, what
``benchmarks/gpu_checks.sh`` runs with ``--device cuda``).

``OMP_WAIT_POLICY`` is set to ``PASSIVE`` for the children unless already set (or
``--omp-wait-policy keep``): with the default active spinning, 2 OpenMP threads on 2 cores that
another process also uses run about 10x slower than 1 thread, which blows up every figure's time
(both sides alike) on a shared machine; on an idle machine passive waiting costs little.

The exit status is non-zero only when a script crashed (or timed out), not when a goal is missed.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
HERE = ROOT / "benchmarks"
sys.path.insert(0, str(ROOT))  # run as a script: the repository root is importable

from benchmarks.common import RESULTS, goal_met, write_result  # noqa: E402


@dataclass(frozen=True)
class Benchmark:
    """One script (in ``benchmarks/``): its result file, any further result files it writes next
    to it, its extra arguments and the arguments of a tiny smoke run (``--smoke``)."""

    script: str
    result: str
    args: tuple[str, ...] = field(default_factory=tuple)
    smoke: tuple[str, ...] = field(default_factory=tuple)
    extra: tuple[str, ...] = field(default_factory=tuple)

    @property
    def key(self) -> str:
        return Path(self.script).stem

    @property
    def results(self) -> tuple[str, ...]:
        return (self.result, *self.extra)


#: Every benchmark, in the order run_all runs them (the one list to extend).
BENCHMARKS: tuple[Benchmark, ...] = (
    Benchmark(
        "startup.py",
        "startup_cli_help.json",
        smoke=("--reps", "1"),
        extra=("startup_discriminate.json",),
    ),
    Benchmark("fit_throughput.py", "fit_throughput_vs_raw_loop.json", smoke=("--epochs", "1")),
    Benchmark(
        "embedding_throughput.py",
        "embedding_throughput.json",
        smoke=("--individuals", "6", "--height", "64", "--width", "32", "--batch-size", "8"),
    ),
    Benchmark(
        "monitor_overhead.py",
        "leakage_monitor_overhead.json",
        smoke=("--scales", "demo", "--runs", "1", "--pairs", "1"),
    ),
    Benchmark(
        "attack_discrimination.py",
        "attack_discrimination_vs_forward.json",
        smoke=("--n", "8", "--repeats", "1", "--train-epochs", "1"),
    ),
    Benchmark(
        "label_only_vs_art.py",
        "label_only_vs_art.json",
        smoke=("--n", "8", "--n_cal", "4", "--reps", "1", "--max_iter", "1", "--init_eval", "4"),
        extra=("label_only_vs_floor.json",),
    ),
    Benchmark("canvas_render.py", "canvas_render.json", smoke=("--n", "4", "--repeats", "1")),
    Benchmark(
        "dp_throughput.py",
        "dp_throughput.json",
        smoke=("--n", "32", "--epochs", "1", "--image-size", "32", "--repeats", "1"),
    ),
    Benchmark(
        "gpu_resnet50.py",
        "resnet50_train_throughput.json",
        smoke=("--steps", "1", "--warmup", "1", "--image-size", "32", "--batch-size", "2"),
    ),
    Benchmark(
        "gpu_embedding_b5.py",
        "b5_embedding_train_throughput.json",
        smoke=("--steps", "1", "--warmup", "1", "--batch-size", "2"),
    ),
    Benchmark("scale.py", "scale.json", smoke=("--sizes", "12", "24")),
    Benchmark(
        "knn_gallery.py",
        "knn_gallery.json",
        smoke=("--gallery", "2000", "--queries", "100", "--dim", "32"),
    ),
)

#: the GPU figures (``--gpu-checks``; benchmarks/gpu_checks.sh runs them on CUDA)
GPU_CHECKS = (
    "gpu_resnet50",
    "gpu_embedding_b5",
    "label_only_vs_art",
    "canvas_render",
    "dp_throughput",
    "monitor_overhead",
)


def accepts(script: Path, flag: str) -> bool:
    """Whether the script's argument parser knows ``flag`` (read from its source)."""
    return f'"{flag}"' in script.read_text()


def command(b: Benchmark, a: argparse.Namespace, out_dir: Path) -> list[str]:
    script = HERE / b.script
    cmd = [sys.executable, str(script), *b.args, "--output", str(out_dir / b.result)]
    if getattr(a, "smoke", False):
        cmd += list(b.smoke)
    if a.full:
        if accepts(script, "--full"):
            cmd.append("--full")
        else:
            print(f"note: {b.script} has no --full; running its default sizes", flush=True)
    for flag, value in (("--threads", a.threads), ("--device", a.device)):
        if value is not None:
            cmd += [flag, str(value)]
    return cmd


def fmt(value) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def met(record: dict) -> str:
    goal = str(record.get("goal", ""))
    gpu_goal = "GPU" in goal or "H100" in goal or "H200" in goal
    if gpu_goal and not str(record.get("device", "")).startswith("cuda"):
        return "n/a (CPU run)"
    ok = goal_met(float(record["value"]), goal)
    return "?" if ok is None else ("yes" if ok else "NO")


def table(rows: list[tuple[str, ...]]) -> str:
    head = ("name", "value", "unit", "goal", "met?")
    widths = [max(len(r[i]) for r in [head, *rows]) for i in range(len(head))]
    widths[2] = min(widths[2], 60)
    lines = []
    for r in [head, tuple("-" * w for w in widths), *rows]:
        cells = [c if len(c) <= w else c[: w - 1] + "~" for c, w in zip(r, widths)]
        lines.append(" | ".join(c.ljust(w) for c, w in zip(cells, widths)).rstrip())
    return "\n".join(lines)


def parse(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--full", action="store_true", help="real sizes (slow on a CPU)")
    ap.add_argument(
        "--only", nargs="+", default=None, help=f"run only these: {[b.key for b in BENCHMARKS]}"
    )
    ap.add_argument("--gpu-checks", action="store_true", help=f"run only {list(GPU_CHECKS)}")
    ap.add_argument(
        "--smoke", action="store_true", help="tiny sizes: checks that every script runs, no figure"
    )
    ap.add_argument("--device", default=None, help="passed to every script (default: theirs)")
    ap.add_argument("--threads", type=int, default=None, help="passed to every script")
    ap.add_argument("--out-dir", default=str(RESULTS), help="where the result files go")
    ap.add_argument(
        "--omp-wait-policy",
        default="passive",
        choices=["passive", "active", "keep"],
        help="OMP_WAIT_POLICY of the children (default passive, unless already set; keep: inherit)",
    )
    ap.add_argument("--timeout", type=float, default=None, help="seconds per script")
    a = ap.parse_args(argv)
    known = {b.key for b in BENCHMARKS}
    if a.gpu_checks:
        a.only = list(GPU_CHECKS) if not a.only else a.only
    if a.only:
        unknown = [k for k in a.only if k.removesuffix(".py") not in known]
        if unknown:
            ap.error(f"--only {unknown}: choose from {sorted(known)}")
    return a


def run_scripts(todo: list[Benchmark], a: argparse.Namespace, out_dir: Path, env: dict):
    """Run each script in its own process; returns ``[{script, seconds, returncode}]``."""
    log: list[dict] = []
    for i, b in enumerate(todo, 1):
        cmd = command(b, a, out_dir)
        shown = " ".join(["python", f"benchmarks/{b.script}", *cmd[2:]])
        print(f"\n[{i}/{len(todo)}] {shown}", flush=True)
        t0 = time.perf_counter()
        try:
            rc = subprocess.run(cmd, cwd=ROOT, env=env, timeout=a.timeout).returncode
        except subprocess.TimeoutExpired:
            rc = "timeout"
        dt = time.perf_counter() - t0
        log.append({"script": b.script, "seconds": round(dt, 1), "returncode": rc})
        status = "ok" if rc == 0 else f"FAILED ({rc})"
        print(f"[{i}/{len(todo)}] {b.script}: {status} in {dt:.1f} s", flush=True)
    return log


def collect(todo: list[Benchmark], log: list[dict], out_dir: Path):
    """Table rows from the result files, the records, and the scripts that crashed."""
    rows, records, crashed = [], [], []
    for b, entry in zip(todo, log):
        if entry["returncode"] != 0:
            crashed.append(b.script)
            rows.append((b.key, "CRASHED", "", "", ""))
            continue
        for name in b.results:
            try:
                rec = json.loads((out_dir / name).read_text())
                rows.append((rec["name"], fmt(rec["value"]), rec["unit"], rec["goal"], met(rec)))
                records.append(rec)
            except (OSError, ValueError, KeyError) as exc:
                crashed.append(b.script)
                rows.append((b.key, f"no result ({exc.__class__.__name__})", "", "", ""))
    return rows, records, crashed


def markdown(rows: list[tuple[str, ...]], records: list[dict], total: float) -> str:
    """The results page's table: figure, measured, unit, goal, met, plus the scale table."""
    lines = ["| figure | measured | unit | goal | met |", "|---|---|---|---|---|"]
    lines += ["| " + " | ".join(c.replace("|", "/") for c in r) + " |" for r in rows]
    lines.append(f"\nAll scripts: {total:.0f} s.")
    for rec in records:
        details = rec.get("details") if isinstance(rec, dict) else None
        table = details.get("markdown") if isinstance(details, dict) else None
        if table:
            lines += ["", f"### {rec['name']}", "", table]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    a = parse(argv)
    wanted = {k.removesuffix(".py") for k in a.only or []}
    todo = [b for b in BENCHMARKS if not wanted or b.key in wanted]
    out_dir = Path(a.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ)
    if a.omp_wait_policy != "keep" and "OMP_WAIT_POLICY" not in os.environ:
        env["OMP_WAIT_POLICY"] = a.omp_wait_policy.upper()
    t_all = time.perf_counter()
    log = run_scripts(todo, a, out_dir, env)
    total = time.perf_counter() - t_all
    rows, records, crashed = collect(todo, log, out_dir)
    print("\nper-script time:")
    for entry in log:
        print(f"  {entry['script']:28s} {entry['seconds']:7.1f} s  rc={entry['returncode']}")
    print(f"  {'total':28s} {total:7.1f} s")
    print()
    print(table(rows))
    page = out_dir / "summary.md"
    page.write_text(markdown(rows, records, total))
    print(f"wrote {page}")
    write_result(
        "run_all",
        round(total, 1),
        "s (wall time of all benchmarks, default sizes unless --full)",
        "< 900 (2 CPU cores)",
        {
            "scripts": log,
            "omp_wait_policy": env.get("OMP_WAIT_POLICY"),
            "full": a.full,
            "smoke": a.smoke,
        },
        argv,
        out_dir / "run_all.json",
        device=a.device or "cpu",
    )
    if crashed:
        print(f"\ncrashed: {', '.join(crashed)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
