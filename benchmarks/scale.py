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
import os
import sys
import tempfile
import time
import tracemalloc
import warnings
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # run as a script: the repository root is importable

import torch  # noqa: E402

from benchmarks.common import add_common_args, apply_threads, photo_folder, write_result  # noqa: E402
from benchmarks.scale_gallery import gallery_stages  # noqa: E402
from benchmarks.scale_meter import (  # noqa: E402
    MIN_SECONDS,
    SUPERLINEAR,
    Meter,
    flagged,
    growth,
    judged,
    markdown,
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
    n_train, n_signal, classes = len(dm.rows("train")), len(dm.signal_rows()), dm.num_classes
    m.stages["fit_total"]["work_units"] = (n_train + n_signal) * classes
    m.stages["train_epoch"] = {
        "units": photos,
        "work_units": n_train * classes,
        "seconds": marks["train_end"][0] - marks["epoch_start"][0],
        "cpu_seconds": marks["train_end"][1] - marks["epoch_start"][1],
        "peak_rss_mb": rss,
        "train_rows": n_train,
    }
    m.stages["monitor_pass"] = {
        "units": photos,
        "work_units": n_signal * classes,
        "seconds": marks["monitor_end"][0] - marks["train_end"][0],
        "cpu_seconds": marks["monitor_end"][1] - marks["train_end"][1],
        "peak_rss_mb": rss,
        "signal_rows": n_signal,
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
        classes = sig["logits"].shape[1]
        rec.update(rows=len(ctx.rows), classes=classes, work_units=len(ctx.rows) * classes)
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
        stage["work_units"] = stage["units"] * classes  # logit cells of the evaluated samples
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


def discriminate_stages(m: Meter, root: Path, run: Path, sig: dict) -> None:
    """Discriminate on 10 and 30 photos: marginal seconds per photo and the fixed rest, with the
    default attack (Yeom: one forward pass a photo) and with ``cosine`` (each photo against the
    whole gallery of training photos: ``discriminate_gallery``); ``sig``: the run's final
    signals."""
    from experiments.commands.discriminate import discriminate

    sets = sig["set"].astype(str)
    rows, train = len(sets), int((sets == "train").sum())
    work = {  # the fixed part reads the run's logits; cosine fits on photos x the gallery
        "auto": rows * sig["logits"].shape[1],
        "cosine": (rows - train) * train,
    }
    for attack, name in (("auto", "discriminate"), ("cosine", "discriminate_gallery")):
        t = {}
        for k in (10, 30):
            folder = root / f"photos_{k}"
            if not folder.is_dir():
                photo_folder(root / "catalog", folder, k)
            with m.stage(f"{name}_{k}", k):
                out = root / f"{name}_{k}"
                discriminate(run, folder, attack, output=out, device="cpu", log=_quiet, quiet=True)
            t[k] = m.stages.pop(f"{name}_{k}")
        per = {k: max(0.0, (t[30][k] - t[10][k]) / 20) for k in ("seconds", "cpu_seconds")}
        m.stages[name] = {**t[30], **per, "units": 1, "per_photo": True}
        m.stages[f"{name}_fixed"] = {
            **t[10],
            **{k: t[10][k] - 10 * per[k] for k in ("seconds", "cpu_seconds")},
            "work_units": work[attack],
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
        sig = attack_stages(m, run, n)
        gallery_stages(m, sig)
        discriminate_stages(m, root, run, sig)
    return {"individuals": n, "photos": photos, "rss_method": m.rss_method, "stages": m.stages}


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
        "--happywhale",
        action="store_true",
        help="Happywhale's scale: 100, 1,000, 3,000 and 15,000 individuals x 3 x 2 photos "
        "(90,000 photos at the largest; about 40 minutes on 2 cores)",
    )
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
    if a.happywhale:  # Happywhale's catalog: 15,587 individuals, 51,033 photos (3.3 each)
        a.sizes, a.encounters, a.per_encounter = [100, 1000, 3000, 15000], 3, 2
    threads = apply_threads(a.threads)
    warnings.filterwarnings("ignore")
    preload()  # imports under tracemalloc run many times slower, and no stage should pay them
    if a.tracemalloc:
        tracemalloc.start()
    sizes = [run_size(n, a) for n in a.sizes]
    exps, cpu_exps = growth(sizes), growth(sizes, "cpu_seconds")
    work_exps = growth(sizes, "cpu_seconds", "work_units")
    judged_exps = judged(cpu_exps, work_exps)
    table = markdown(sizes, exps, cpu_exps, work_exps)
    bad = flagged(sizes, judged_exps)
    print("\n" + table)
    print("\nsuper-linear: " + (", ".join(bad) if bad else "none"))
    worst = max(
        (
            e
            for name, es in judged_exps.items()
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
        "cpu_exponents_by_work_units": work_exps,
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
