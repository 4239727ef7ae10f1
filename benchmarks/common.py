"""Shared pieces of the benchmark scripts: the result file, the machine line, common flags.

Every benchmark writes one JSON file, ``benchmarks/results/<name>.json`` unless ``--out`` says
otherwise, with the fields ``name``, ``value``, ``unit``, ``goal``, ``machine``, ``date`` (UTC,
ISO 8601) and ``command`` (how to re-run it), plus ``device``, ``details`` (the figures behind
``value``), ``versions`` and ``environment`` (OpenMP settings).

The scripts import it as ``benchmarks.common``; run as scripts they put the repository root
first on ``sys.path``, ahead of the unrelated ``benchmarks`` package that Opacus installs.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"


def cpu_model() -> str:
    """The CPU's model name (``/proc/cpuinfo``), else ``platform.processor()``."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or ""


def machine_string(threads: int, device: str) -> str:
    """``x86_64 <cpu model>, N cpus, T torch threads[, <GPU name>]`` for the ``machine`` field."""
    parts = [f"{platform.machine()} {cpu_model()}".strip(), f"{os.cpu_count()} cpus"]
    parts.append(f"{threads if threads > 0 else torch.get_num_threads()} torch threads")
    if str(device).startswith("cuda") and torch.cuda.is_available():
        parts.append(torch.cuda.get_device_name(torch.device(device)))
    return ", ".join(parts)


def result_path(name: str, out: str | Path | None = None) -> Path:
    return Path(out) if out else RESULTS / f"{name}.json"


def command_line(script: str | Path, argv: Sequence[str] | None) -> str:
    """``python benchmarks/<script> <args>``: how to re-run the measurement."""
    path = Path(script).resolve()
    try:
        shown = path.relative_to(ROOT)
    except ValueError:
        shown = path
    args = list(sys.argv[1:] if argv is None else argv)
    return " ".join(["python", str(shown), *args])


def write_result(
    name: str,
    value: float,
    unit: str,
    goal: str,
    details,
    argv: Sequence[str] | None,
    out: str | Path | None = None,
    *,
    threads: int | None = None,
    device: str = "cpu",
    script: str | Path | None = None,
) -> dict:
    """Write ``benchmarks/results/<name>.json`` (or ``out``), print its path, return the record.

    ``argv`` is the script's argument list (``None``: ``sys.argv[1:]``); ``script`` defaults to
    the calling file; ``threads`` to torch's current thread count.
    """
    if script is None:
        script = sys._getframe(1).f_code.co_filename
    threads = torch.get_num_threads() if threads is None else threads
    record = {
        "name": name,
        "value": value,
        "unit": unit,
        "goal": goal,
        "machine": machine_string(threads, device),
        "device": device,
        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "command": command_line(script, argv),
        "details": details,
        "versions": {
            "python": platform.python_version(),
            "torch": torch.__version__,
        },
        # thread settings that change CPU timings (run_all.py sets OMP_WAIT_POLICY=PASSIVE)
        "environment": {
            k: os.environ[k] for k in ("OMP_WAIT_POLICY", "OMP_NUM_THREADS") if k in os.environ
        },
    }
    path = result_path(name, out)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(record, indent=2, default=_jsonable))
    os.replace(tmp, path)
    print(f"wrote {path}")
    return record


def _jsonable(obj):
    if hasattr(obj, "item"):  # numpy / torch scalars
        return obj.item()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


def add_common_args(
    ap: argparse.ArgumentParser, *, threads: int = 2, device: str = "cpu"
) -> argparse.ArgumentParser:
    """``--full`` (real sizes), ``--threads``, ``--device`` and ``--out`` (the result file)."""
    ap.add_argument(
        "--full",
        action="store_true",
        help="real sizes (slow on a CPU); the default sizes are small enough for run_all.py",
    )
    ap.add_argument(
        "--threads",
        type=int,
        default=threads,
        help=f"torch CPU threads (default {threads}; 0 keeps torch's default)",
    )
    ap.add_argument("--device", default=device, help=f"torch device (default {device})")
    ap.add_argument(
        "--output",
        "--out",
        dest="out",
        default=None,
        help="result JSON (default benchmarks/results/...)",
    )
    return ap


def apply_threads(threads: int) -> int:
    """Set torch's CPU thread count (0 keeps the default); returns the count in use."""
    if threads > 0:
        torch.set_num_threads(threads)
    return torch.get_num_threads()


def sync(device: str | torch.device) -> None:
    """Wait for queued GPU work, so a timer read afterwards covers it."""
    if str(device).startswith("cuda"):
        torch.cuda.synchronize()


def goal_met(value: float, goal: str) -> bool | None:
    """Whether ``value`` meets a goal such as ``>= 0.9`` or ``<= 0.15`` (None if unreadable)."""
    text = goal.strip()
    for op in (">=", "<=", ">", "<"):
        if text.startswith(op):
            try:
                bound = float(text[len(op) :].split()[0].replace(",", ""))
            except (ValueError, IndexError):
                return None
            return {
                ">=": value >= bound,
                "<=": value <= bound,
                ">": value > bound,
                "<": value < bound,
            }[op]
    return None


def tiny_run_folder(
    tmp: str | Path,
    *,
    n_individuals: int = 12,
    encounters: int = 2,
    photos: int = 3,
    size: int = 32,
    arch: str = "resnet18",
    batch_size: int = 16,
    model_args: dict | None = None,
) -> Path:
    """A finished-looking run folder (``config.yaml``, split manifest, ``checkpoints/last.ckpt``)
    of an untrained, seeded classifier on generated synthetic whales under ``tmp``; no training.

    The generated catalog is ``tmp/cat``, the run ``tmp/run``; ``model_args`` are extra
    ``model.init_args`` (e.g. a ``dp`` block). The test suite's ``make_run_folder`` is this."""
    import yaml

    from datamodules.catalogs import SyntheticWhalesReader
    from datamodules.whale import LoaderSettings, WhaleDataModule
    from lightning_modules.classifier import ImageClassifier

    tmp = Path(tmp)
    dm = WhaleDataModule(
        SyntheticWhalesReader(
            n_individuals=n_individuals,
            encounters_per_individual=encounters,
            photos_per_encounter=photos,
            image_size=size,
        ),
        root=str(tmp / "cat"),
        loader=LoaderSettings(image_size=size, batch_size=batch_size, cache_dir=None),
    )
    run = tmp / "run"
    run.mkdir(parents=True)
    dm.write_manifest(run)
    margs = {"arch": arch, "preset": "overfit", **(model_args or {})}
    torch.manual_seed(0)
    model = ImageClassifier(num_classes=dm.num_classes, **margs)
    (run / "checkpoints").mkdir()
    torch.save({"state_dict": model.state_dict()}, run / "checkpoints" / "last.ckpt")
    cfg = {
        "data": {"init_args": {"loader": {"image_size": size, "batch_size": batch_size}}},
        "model": {"init_args": margs},
        "trainer": {"max_epochs": 1},
    }
    (run / "config.yaml").write_text(yaml.safe_dump(cfg))
    return run


def photo_folder(catalog: str | Path, dest: str | Path, n: int, per_group: int = 5) -> Path:
    """Copy the first ``n`` photos (sorted) of ``catalog`` into ``dest``, ``per_group`` per
    sub-folder (one sub-folder = one encounter for ``discriminate``); returns ``dest``."""
    import shutil

    dest = Path(dest)
    photos = sorted(p for p in Path(catalog).rglob("*.jpg"))[:n]
    for i, p in enumerate(photos):
        sub = dest / f"enc_{i // per_group}"
        sub.mkdir(parents=True, exist_ok=True)
        shutil.copy(p, sub / f"photo_{i:03d}.jpg")
    return dest


def median_spread(values: Sequence[float]) -> dict:
    """``{"median", "min", "max", "n"}`` of timings in seconds."""
    vals = sorted(float(v) for v in values)
    mid = len(vals) // 2
    med = vals[mid] if len(vals) % 2 else (vals[mid - 1] + vals[mid]) / 2
    return {"median": med, "min": vals[0], "max": vals[-1], "n": len(vals)}


def alternate(cases: dict, repeats: int, warm_up: bool = True) -> tuple[dict, dict]:
    """Each callable of ``cases`` run in turn ``repeats`` times, so every side sees the same
    machine state (after one untimed call each when ``warm_up``): ``({name: [wall seconds of
    each run]}, {name: the last run's result})``."""
    if warm_up:
        for fn in cases.values():
            fn()
    times: dict[str, list[float]] = {k: [] for k in cases}
    outs: dict = {}
    for _ in range(max(int(repeats), 1)):
        for name, fn in cases.items():
            t0 = time.perf_counter()
            outs[name] = fn()
            times[name].append(time.perf_counter() - t0)
    return times, outs
