"""Catalog scale: every pipeline stage timed at several catalog sizes, with peak memory and the
growth exponent between sizes.

    python benchmarks/scale.py [--sizes 100 300 1000] [--photos 8] [--threads 2]

For each size (individuals; ``--encounters`` x ``--per-encounter`` photos each, 4 x 2 by
default) the synthetic generator writes a catalog (set-up, timed apart), then the stages run as
the suite runs them, with the project's public functions:

* ``read_plan``: read the catalog and plan the identity-disjoint split (``WhaleDataModule.plan``);
* ``decode_cache``: decode-check and hash every photo plus the leak checks (``verify``), then build
  the decoded-image cache for every manifest row;
* ``train_epoch``: one Lightning training epoch of a tiny network (``--arch``, 32 px);
* ``monitor_pass``: the :class:`experiments.callbacks.leakage_monitor.LeakageMonitor` pass at the end of that
  epoch on every manifest row (the configs' ``rows_per_train_photo`` and ``max_rows`` score
  a fixed sample of them);
* ``final_signals``: ``experiments.run.folder.final_signals`` of the finished run (every row, with
  embeddings);
* one stage per step of ``experiments.attack_steps.pipeline.STEPS`` (Yeom, Salem, Salem on a 1-epoch shadow,
  label-only under a small budget, the ensemble over 2 subsets of 1 epoch, the baselines; any
  step added there, such as the calibrated attacks, is timed too under its result names);
* ``discriminate``: ``experiments.commands.discriminate.discriminate`` on 10 and on 30 photos; the stage is
  the marginal time per photo, ``discriminate_fixed`` the rest (opening the run, fitting the
  attack on its signals, loading the model).

Memory: the peak resident set size of the process during each stage (Linux: the ``VmHWM`` high
water mark, reset before the stage through ``/proc/self/clear_refs``; elsewhere
``resource.getrusage().ru_maxrss``, which never goes down; the JSON's ``rss_method`` says which)
and, with ``--tracemalloc``, the peak of Python-allocated memory (``tracemalloc``: Python objects
and numpy arrays, not torch tensors). Tracing is off by default: it slowed the plotting and
Python-heavy stages 2-5x, which distorts the times though not much the exponents.

Garbage collection: each stage starts after an untimed ``gc.collect()``, so a full collection
(a scan of the whole heap, torch and the earlier stages' objects included: 0.3-0.5 s here) falls
in a stage only when its own allocations trigger it, not because earlier stages left survivors
just under the threshold; each stage records its collections per generation
(``gc_collections``) and their CPU time (``gc_cpu_seconds``).

Growth exponent of a stage between two sizes: ``log(t2 / t1) / log(u2 / u1)``, with ``u`` the
stage's unit count: photos for the data and model stages, evaluated samples for the attacks
(their reference models are a fixed number), photos given for discriminate; computed on wall
time and on the process's CPU time (``time.process_time``, every thread), which a machine
shared with other jobs disturbs much less. A CPU-time exponent above 1.15 on a stage that takes
at least 1 CPU second is flagged as super-linear. Writes ``scale.json`` with the table
(``details.markdown``).
"""

from __future__ import annotations

import argparse
import gc
import math
import os
import resource
import sys
import tempfile
import time
import tracemalloc
import warnings
from contextlib import contextmanager
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # run as a script: the repository root is importable

import torch  # noqa: E402

from benchmarks.common import add_common_args, apply_threads, photo_folder, write_result  # noqa: E402

#: exponents above this on stages of at least MIN_SECONDS are flagged
SUPERLINEAR = 1.15
MIN_SECONDS = 1.0


# ---- measuring ---------------------------------------------------------------------------
def _reset_peak_rss() -> bool:
    """Reset the kernel's peak-RSS mark of this process (Linux); False where impossible."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def _peak_rss_mb() -> float:
    """Peak resident set size in MiB: ``VmHWM`` (Linux) or ``ru_maxrss``."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


class GcClock:
    """Collections of Python's cyclic garbage collector and their CPU seconds, per generation,
    counted through ``gc.callbacks``."""

    def __init__(self):
        self.count, self.seconds, self._t0 = [0, 0, 0], [0.0, 0.0, 0.0], 0.0
        gc.callbacks.append(self._callback)

    def _callback(self, phase: str, info: dict) -> None:
        if phase == "start":
            self._t0 = time.process_time()
        else:
            self.count[info["generation"]] += 1
            self.seconds[info["generation"]] += time.process_time() - self._t0

    def snapshot(self) -> tuple[list[int], list[float]]:
        return list(self.count), list(self.seconds)


#: one clock for the process (a callback per Meter would pile up)
GC_CLOCK = GcClock()


class Meter:
    """Times stages and records their peak memory and garbage collections into ``stages``."""

    def __init__(self, trace: bool):
        self.trace = trace
        self.stages: dict[str, dict] = {}
        self.gc = GC_CLOCK
        self.rss_method = "VmHWM reset per stage" if _reset_peak_rss() else "ru_maxrss (monotonic)"

    @contextmanager
    def stage(self, name: str, units: float | None = None):
        """Record ``name``: seconds, peak RSS and (with tracing) peak Python memory in MiB."""
        _reset_peak_rss()
        if self.trace:
            tracemalloc.reset_peak()
        rec = {"units": units}
        gc.collect()  # untimed: no stage pays a full collection for what earlier ones left
        n0, s0 = self.gc.snapshot()
        t0, c0 = time.perf_counter(), time.process_time()
        yield rec
        rec["seconds"] = time.perf_counter() - t0
        rec["cpu_seconds"] = time.process_time() - c0
        n1, s1 = self.gc.snapshot()
        rec["gc_collections"] = [b - a for a, b in zip(n0, n1)]  # generations 0, 1, 2
        rec["gc_cpu_seconds"] = sum(s1) - sum(s0)
        rec["peak_rss_mb"] = _peak_rss_mb()
        if self.trace:
            rec["python_peak_mb"] = tracemalloc.get_traced_memory()[1] / 2**20
        self.stages[name] = rec
        print(
            f"  {name:28s} {rec['seconds']:8.2f} s  cpu {rec['cpu_seconds']:8.2f} s  "
            f"rss {rec['peak_rss_mb']:7.0f} MiB  gc {rec['gc_collections']} "
            f"{rec['gc_cpu_seconds']:.2f} s",
            flush=True,
        )


# ---- the pipeline ------------------------------------------------------------------------
def datamodule(root: Path, a: argparse.Namespace, n: int):
    from datamodules.catalogs import SyntheticWhalesReader
    from datamodules.whale import LoaderSettings, WhaleDataModule

    reader = SyntheticWhalesReader(
        n_individuals=n,
        encounters_per_individual=a.encounters,
        photos_per_encounter=a.per_encounter,
        image_size=a.source_size,
    )
    loader = LoaderSettings(
        image_size=a.image_size,
        batch_size=a.batch_size,
        num_workers=0,
        cache_dir=str(root / "cache"),
    )
    return reader, WhaleDataModule(reader, root=str(root / "catalog"), loader=loader)


def data_stages(m: Meter, root: Path, a: argparse.Namespace, n: int):
    """Generate (set-up), read + plan, decode check + cache build; returns the datamodule."""
    from datamodules.synthetic_whales import generate

    reader, dm = datamodule(root, a, n)
    with m.stage("setup_generate", n * a.encounters * a.per_encounter):
        generate(root / "catalog", reader)
    photos = n * a.encounters * a.per_encounter
    with m.stage("read_plan", photos) as rec:
        rows = dm.plan()
        rec["rows"] = len(rows)
    with m.stage("decode_cache", photos):
        dm.verify()
        ds = dm.dataset(dm.rows())
        for i in range(len(ds)):
            ds.resized(i)
    return dm, photos


def fit_stages(m: Meter, root: Path, a: argparse.Namespace, dm, photos: int):
    """One training epoch with the leakage monitor at its end; returns the trained model."""
    import pytorch_lightning as pl

    from experiments.callbacks.leakage_monitor import LeakageMonitor
    from experiments.side_models.training import quiet_trainer
    from lightning_modules.classifier import ImageClassifier

    marks: dict[str, float] = {}

    class Mark(pl.Callback):
        def __init__(self, name: str):
            self.name = name

        def on_train_epoch_start(self, trainer, pl_module):
            marks.setdefault("epoch_start", (time.perf_counter(), time.process_time()))

        def on_train_epoch_end(self, trainer, pl_module):
            marks[self.name] = (time.perf_counter(), time.process_time())

    pl.seed_everything(0, verbose=False)
    model = ImageClassifier(num_classes=dm.num_classes, arch=a.arch, preset="overfit")
    trainer = quiet_trainer(
        max_epochs=1,
        default_root_dir=str(root / "trainer"),
        callbacks=[Mark("train_end"), LeakageMonitor(every_n_epochs=1), Mark("monitor_end")],
    )
    with m.stage("fit_total", photos):
        trainer.fit(model, datamodule=dm)
    rss = m.stages["fit_total"]["peak_rss_mb"]
    n_train = len(dm.rows("train"))
    m.stages["train_epoch"] = {
        "units": photos,
        "seconds": marks["train_end"][0] - marks["epoch_start"][0],
        "cpu_seconds": marks["train_end"][1] - marks["epoch_start"][1],
        "peak_rss_mb": rss,
        "train_rows": n_train,
    }
    m.stages["monitor_pass"] = {
        "units": photos,
        "seconds": marks["monitor_end"][0] - marks["train_end"][0],
        "cpu_seconds": marks["monitor_end"][1] - marks["train_end"][1],
        "peak_rss_mb": rss,
        "signal_rows": len(dm.signal_rows()),
    }
    return model.eval()


def write_run(root: Path, a: argparse.Namespace, dm, model) -> Path:
    """A run folder as ``cli.py fit`` leaves it: manifest, ``last.ckpt``, ``config.yaml``."""
    import yaml

    run = root / "run"
    run.mkdir()
    dm.write_manifest(run)
    (run / "checkpoints").mkdir()
    torch.save({"state_dict": model.state_dict()}, run / "checkpoints" / "last.ckpt")
    cfg = {
        "data": {"init_args": {"loader": {"image_size": a.image_size, "batch_size": a.batch_size}}},
        "model": {"init_args": {"arch": a.arch, "preset": "overfit"}},
        "trainer": {"max_epochs": 1, "logger": False},
    }
    (run / "config.yaml").write_text(yaml.safe_dump(cfg))
    return run


def attack_settings(n: int):
    """Small budgets: label-only on n/8 samples per role and set, 2 x 1-epoch subsets, the
    calibrated attacks (LiRA, RMIA) at both levels with 2 references of 1 epoch and one query
    view, ..."""
    from experiments.settings.attack import (
        AttackSettings,
        CalibratedSettings,
        EnsembleSettings,
        LabelOnlySettings,
        SalemSettings,
        ShadowSettings,
    )

    calibrated = CalibratedSettings(
        enabled=True, n_models=2, epochs=1, flip=False, shift=0, rmia_refs=[1, 2], compare=False
    )
    return AttackSettings(
        calibrated=calibrated,
        salem=SalemSettings(shadow=ShadowSettings(enabled=True, epochs=1)),
        label_only=LabelOnlySettings(
            max_iter=2, init_eval=8, max_eval=16, init_size=10, max_per_role=max(8, n // 8)
        ),
        ensemble=EnsembleSettings(n_subsets=2, epochs=1, match_steps=False),
        device="cpu",
    )


def step_name(names: list[str]) -> str:
    """One stage name for a step's results (``ensemble_any`` ... -> ``ensemble``; LiRA and RMIA
    at every level -> ``calibrated``)."""
    if any("lira" in n or "rmia" in n for n in names):
        return "calibrated"
    prefix = os.path.commonprefix(names).rstrip("_")
    return prefix if len(names) > 1 and prefix else names[0]


def attack_stages(m: Meter, run: Path, n: int) -> dict:
    """``final_signals``, then every step of ``experiments.attack_steps.pipeline.STEPS``; returns the signals."""
    from attacks.signals import subset
    from experiments.attack_steps.jobs import Inputs
    from experiments.attack_steps.pipeline import STEPS
    from experiments.run.folder import RunContext, final_signals
    from experiments.run.loggers import RunLoggers

    ctx = RunContext.open(run, "cpu")
    with m.stage("final_signals", len(ctx.rows)) as rec:
        sig, fwd = final_signals(ctx)
        rec["rows"] = len(ctx.rows)
    s = attack_settings(n)
    out = run / "attacks"
    out.mkdir()
    inp = Inputs(ctx, sig, s, fwd, out, {"signals": str(run / "signals" / "final.npz")}, _quiet)
    evaluated = len(subset(sig, "attack")["index"]) + len(subset(sig, "eval")["index"])
    loggers = RunLoggers([])
    for i, step in enumerate(STEPS):
        with m.stage(f"attack_step_{i}", evaluated) as rec:
            done = step(inp, loggers)
        stage = m.stages.pop(f"attack_step_{i}")
        if not done:
            continue
        name = "attack_" + step_name(list(done))
        if name == "attack_label_only":
            info = done["label_only"][1]
            stage["units"] = info["n_attack"] + info["n_eval"]
            stage["queries_mean"] = info["queries_mean"]
        stage["results"] = list(done)
        m.stages[name] = stage
    return sig


def _quiet(*args, **kwargs) -> None:
    pass


def preload() -> None:
    """Import every module the stages use (so no stage pays an import)."""
    import pytorch_lightning  # noqa: F401

    import datamodules.whale  # noqa: F401
    import experiments.callbacks.leakage_monitor  # noqa: F401
    import experiments.commands.attack  # noqa: F401
    import experiments.commands.discriminate  # noqa: F401
    import lightning_modules.classifier  # noqa: F401


def discriminate_stages(m: Meter, root: Path, run: Path) -> None:
    """Discriminate on 10 and 30 photos: marginal seconds per photo and the fixed rest."""
    from experiments.commands.discriminate import discriminate

    t = {}
    for k in (10, 30):
        folder = photo_folder(root / "catalog", root / f"photos_{k}", k)
        with m.stage(f"discriminate_{k}", k):
            discriminate(
                run, folder, output=root / f"disc_{k}.csv", device="cpu", log=_quiet, quiet=True
            )
        t[k] = m.stages.pop(f"discriminate_{k}")
    per = {k: max(0.0, (t[30][k] - t[10][k]) / 20) for k in ("seconds", "cpu_seconds")}
    m.stages["discriminate"] = {**t[30], **per, "units": 1, "per_photo": True}
    m.stages["discriminate_fixed"] = {
        **t[10],
        **{k: t[10][k] - 10 * per[k] for k in ("seconds", "cpu_seconds")},
    }


def run_size(n: int, a: argparse.Namespace) -> dict:
    """Every stage at ``n`` individuals, in a temporary folder."""
    print(f"\n{n} individuals x {a.encounters * a.per_encounter} photos", flush=True)
    m = Meter(a.tracemalloc)
    with tempfile.TemporaryDirectory(prefix=f"scale_{n}_") as tmp:
        root = Path(tmp)
        dm, photos = data_stages(m, root, a, n)
        model = fit_stages(m, root, a, dm, photos)
        run = write_run(root, a, dm, model)
        attack_stages(m, run, n)
        discriminate_stages(m, root, run)
    return {"individuals": n, "photos": photos, "rss_method": m.rss_method, "stages": m.stages}


# ---- growth and the table ----------------------------------------------------------------
def exponent(s1: dict, s2: dict, u1: float, u2: float, key: str = "seconds") -> float | None:
    """``log(t2 / t1) / log(u2 / u1)`` of the times ``key`` (None when undefined)."""
    t1, t2 = s1.get(key), s2.get(key)
    if not t1 or not t2 or t1 <= 0 or t2 <= 0 or not u1 or not u2 or u1 == u2:
        return None
    return math.log(t2 / t1) / math.log(u2 / u1)


def growth(sizes: list[dict], key: str = "seconds") -> dict[str, list[float | None]]:
    """Per stage, the exponents of the times ``key`` (wall ``seconds`` or ``cpu_seconds``)
    between consecutive sizes (by each stage's own units; the per-photo discriminate time and
    the discriminate fixed part by the catalog's photos)."""
    out: dict[str, list[float | None]] = {}
    for name in sizes[0]["stages"]:
        exps = []
        for r1, r2 in zip(sizes, sizes[1:]):
            s1, s2 = r1["stages"].get(name), r2["stages"].get(name)
            if s1 is None or s2 is None:
                exps.append(None)
                continue
            u1, u2 = s1.get("units"), s2.get("units")
            if name.startswith("discriminate") or not u1 or u1 == u2:
                u1, u2 = r1["photos"], r2["photos"]
            exps.append(exponent(s1, s2, u1, u2, key))
        out[name] = exps
    return out


def flagged(sizes: list[dict], exps: dict, key: str = "cpu_seconds") -> list[str]:
    """Stages whose exponent (of the times ``key``) exceeds SUPERLINEAR where the larger size
    took at least MIN_SECONDS."""
    bad = []
    for name, es in exps.items():
        if name.startswith("setup") or name == "fit_total":
            continue
        for k, e in enumerate(es):
            t2 = sizes[k + 1]["stages"][name].get(key) or 0.0
            if e is not None and e > SUPERLINEAR and t2 >= MIN_SECONDS:
                bad.append(
                    f"{name} ({sizes[k]['individuals']}->{sizes[k + 1]['individuals']}: {e:.2f})"
                )
    return bad


def _cell(st: dict | None) -> str:
    if st is None:
        return "-"
    scale, unit = (1e3, "ms") if st.get("per_photo") else (1.0, "s")
    cpu = st.get("cpu_seconds")
    t = f"{st['seconds'] * scale:.2f} {unit}"
    if cpu is not None:
        t += f" (cpu {cpu * scale:.2f})"
    return f"{t}, {st['peak_rss_mb']:.0f} MiB"


def markdown(sizes: list[dict], exps: dict, cpu_exps: dict | None = None) -> str:
    """Stage x size table: wall seconds (CPU seconds), peak RSS (MiB); exponents wall / CPU."""
    head = ["stage", *[f"{r['individuals']} ind. ({r['photos']} photos)" for r in sizes]]
    head += [f"exp. {a['individuals']}->{b['individuals']}" for a, b in zip(sizes, sizes[1:])]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for name, es in exps.items():
        cells = [name, *[_cell(r["stages"].get(name)) for r in sizes]]
        ces = (cpu_exps or {}).get(name, [None] * len(es))
        for e, c in zip(es, ces):
            text = "-" if e is None else f"{e:.2f}"
            cells.append(text if c is None else f"{text} / {c:.2f}")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[100, 300, 1000], help="individuals")
    ap.add_argument("--encounters", type=int, default=4, help="encounters per individual")
    ap.add_argument("--per-encounter", type=int, default=2, help="photos per encounter")
    ap.add_argument("--image-size", type=int, default=32, help="network input, px")
    ap.add_argument("--source-size", type=int, default=48, help="generated photo size, px")
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--arch", default="shufflenet_v2_x0_5", help="torchvision classifier")
    ap.add_argument(
        "--tracemalloc",
        action=argparse.BooleanOptionalAction,
        default=False,
        help="also record peak Python memory (tracemalloc; slows Python-heavy stages 2-5x)",
    )
    add_common_args(ap)
    a = ap.parse_args(argv)
    if a.full:
        a.sizes = [100, 300, 1000, 3000]
    threads = apply_threads(a.threads)
    warnings.filterwarnings("ignore")
    preload()  # imports under tracemalloc run many times slower, and no stage should pay them
    if a.tracemalloc:
        tracemalloc.start()
    sizes = [run_size(n, a) for n in a.sizes]
    exps, cpu_exps = growth(sizes), growth(sizes, "cpu_seconds")
    table = markdown(sizes, exps, cpu_exps)
    bad = flagged(sizes, cpu_exps)
    print("\n" + table)
    print("\nsuper-linear: " + (", ".join(bad) if bad else "none"))
    worst = max(
        (
            e
            for name, es in cpu_exps.items()
            if not name.startswith("setup")
            for e in es
            if e is not None
        ),
        default=float("nan"),
    )
    details = {
        "sizes": sizes,
        "exponents": exps,
        "cpu_exponents": cpu_exps,
        "superlinear": bad,
        "markdown": table,
        "settings": {k: v for k, v in vars(a).items() if k not in ("out",)},
    }
    return write_result(
        "scale_superlinear_stages",
        len(bad),
        f"stages growing faster than linearly (CPU-time exponent > {SUPERLINEAR} on >= "
        f"{MIN_SECONDS} s); largest exponent {worst:.2f}",
        "<= 0",
        details,
        argv,
        a.out or ROOT / "benchmarks" / "results" / "scale.json",
        threads=threads,
    )


if __name__ == "__main__":
    main()
