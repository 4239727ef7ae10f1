"""Start-up: ``cli.py --help`` and ``cli.py discriminate`` on 10 photos, next to ``import torch``.

    python benchmarks/startup.py [--reps 5] [--photos 10] [--threads 2]

Builds a tiny finished run folder (an untrained seeded resnet18 at 32 px on generated synthetic
whales, :func:`benchmarks.common.tiny_run_folder`) and a folder of ``--photos`` photos in
encounter sub-folders, runs ``cli.py export`` on the run once (timed and reported apart: it also
extracts the run's final signals), then times, as a user runs them, each in a fresh Python
process:

* ``python -c pass`` (the interpreter alone) and ``python -c "import torch"``;
* ``python cli.py --help`` (goal < 1.5 s) and ``python cli.py SUBCOMMAND --help`` for every
  subcommand (goal < 1 s each; ``fit``, ``validate``, ``test`` and ``predict`` print LightningCLI's
  help from its cache, which the first call of the benchmark fills);
* ``python cli.py discriminate --run RUN --images PHOTOS --output ...`` end to end (goal < 4 s on 2
  CPU cores): the default engine, which runs the exported target with ONNX Runtime (the
  benchmark fails if the summary names another engine);
* the same with ``--engine torch``, for comparison (no goal).

The commands alternate within each repetition, so every figure sees the same machine load; the
medians (with min and max) of the wall time are reported, and of the children's CPU time (user +
system), which on a machine shared with other jobs is close to what the wall time would be idle
(the value stays the wall time). Writes ``startup_cli_help.json``, ``startup_subcommand_help.json``
and ``startup_discriminate.json`` (``--output`` names the first; the others go next to it).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # run as a script: the repository root is importable

from benchmarks.common import (  # noqa: E402
    add_common_args,
    median_spread,
    photo_folder,
    tiny_run_folder,
    write_result,
)

#: the other result files, next to the first
DISCRIMINATE_RESULT = "startup_discriminate.json"
HELP_RESULT = "startup_subcommand_help.json"
#: every subcommand of cli.py (its --help is timed)
SUBCOMMANDS = (
    "fit", "validate", "test", "predict", "attack", "discriminate", "reid", "export", "defend",
    "study", "audit",
)  # fmt: skip


def _children_cpu() -> float:
    ru = resource.getrusage(resource.RUSAGE_CHILDREN)
    return ru.ru_utime + ru.ru_stime


def timed(cmd: list[str], env: dict) -> tuple[float, float]:
    """Wall and CPU (user + system) seconds of ``cmd`` run from the repository root (fails
    loudly on a non-zero exit)."""
    t0, c0 = time.perf_counter(), _children_cpu()
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
    dt, cpu = time.perf_counter() - t0, _children_cpu() - c0
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stderr[-2000:]}")
    return dt, cpu


def commands(run: Path, photos: Path, out_dir: Path) -> dict[str, callable]:
    """The timed command lines, by name (discriminate writes a fresh CSV each call)."""
    py = sys.executable
    counter = iter(range(10**6))

    def discriminate(*extra: str) -> list[str]:
        out = out_dir / f"discriminate_{next(counter)}"
        args = ["--run", str(run), "--images", str(photos), "--output", str(out), *extra]
        return [py, "cli.py", "discriminate", *args, "--quiet"]

    helps = {f"help_{name}": (lambda n=name: [py, "cli.py", n, "--help"]) for name in SUBCOMMANDS}
    return {
        "python_pass": lambda: [py, "-c", "pass"],
        "import_torch": lambda: [py, "-c", "import torch"],
        "cli_help": lambda: [py, "cli.py", "--help"],
        **helps,
        "discriminate": discriminate,
        "discriminate_torch": lambda: discriminate("--engine", "torch", "--device", "cpu"),
    }


def engines(out_dir: Path) -> set[str]:
    """The ``engine`` of every discriminate summary written under ``out_dir``."""
    found = out_dir.glob("discriminate_*/operating_point.json")
    return {json.loads(p.read_text())["engine"] for p in found}


def measure(reps: int, n_photos: int, env: dict) -> dict:
    """Timings (seconds) of every command, ``reps`` alternations, in a temporary folder."""
    with tempfile.TemporaryDirectory(prefix="startup_bench_") as tmp:
        tmp = Path(tmp)
        run = tiny_run_folder(tmp, n_individuals=12, encounters=2, photos=3, size=32)
        photos = photo_folder(tmp / "cat", tmp / "photos", n_photos)
        cmds = commands(run, photos, tmp)
        export = timed([sys.executable, "cli.py", "export", "--run", str(run)], env)
        times: dict[str, list[tuple[float, float]]] = {k: [] for k in cmds}
        for _ in range(reps):
            for name, make in cmds.items():
                times[name].append(timed(make(), env))
        used = engines(tmp)
    if used != {"onnxruntime", "torch"}:
        raise SystemExit(
            f"discriminate ran on {sorted(used)}, not on the exported target and torch"
        )
    out = {name: median_spread([w for w, _ in v]) for name, v in times.items()}
    for name, v in times.items():
        out[name]["cpu"] = median_spread([c for _, c in v])
    out["export"] = {
        "seconds": export[0],
        "cpu_seconds": export[1],
        "note": "once per checkpoint: cli.py export (ONNX graph, its check, the final signals)",
    }
    out["photos"] = n_photos
    return out


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--reps", type=int, default=5, help="alternations of the commands")
    ap.add_argument("--photos", type=int, default=10, help="photos given to discriminate")
    add_common_args(ap)
    a = ap.parse_args(argv)
    env = dict(os.environ)
    if a.threads > 0:
        env["OMP_NUM_THREADS"] = str(a.threads)
    r = measure(a.reps, a.photos, env)
    for name in ("python_pass", "import_torch", "cli_help", "discriminate", "discriminate_torch"):
        m = r[name]
        print(
            f"{name:14s} median {m['median']:.3f} s  (min {m['min']:.3f}, max {m['max']:.3f}); "
            f"CPU {m['cpu']['median']:.3f} s"
        )
    print(f"export, once (graph, check, final signals): {r['export']['seconds']:.2f} s")
    slowest = max((r[f"help_{n}"]["median"], n) for n in SUBCOMMANDS)
    print(f"slowest subcommand --help: {slowest[1]} {slowest[0]:.3f} s (goal < 1 s)")
    out = Path(a.out) if a.out else ROOT / "benchmarks" / "results" / "startup_cli_help.json"
    kw = {"threads": a.threads, "device": "cpu"}
    write_result(
        "startup_subcommand_help",
        slowest[0],
        f"s (slowest python cli.py SUBCOMMAND --help, median: {slowest[1]})",
        "< 1",
        {k: v for k, v in r.items() if k.startswith("help_")},
        argv,
        out.with_name(HELP_RESULT),
        **kw,
    )
    write_result(
        "startup_discriminate_10_photos",
        r["discriminate"]["median"],
        f"s (python cli.py discriminate on {a.photos} photos, end to end, exported target, median)",
        "< 4 (2 CPU cores)",
        r,
        argv,
        out.with_name(DISCRIMINATE_RESULT),
        **kw,
    )
    return write_result(
        "startup_cli_help",
        r["cli_help"]["median"],
        "s (python cli.py --help, median)",
        "< 1.5",
        r,
        argv,
        out,
        **kw,
    )


if __name__ == "__main__":
    main()
