"""The steps of ``cli.py attack`` (:data:`STEPS`) and the run that chains them
(:func:`run_attacks`).

Steps: (1) rebuild the target from ``checkpoints/last.ckpt`` (``weights_only=True``) and write
``<run>/signals/final.npz`` (all manifest rows, with penultimate embeddings); (2) for each enabled
attack of the settings, in :data:`STEPS` order, gather its fit and evaluation signals (the
target's attack set, a shadow's, or boundary distances from model queries: the ``steps`` its
registry entry declares), fit it, freeze its
threshold and score the evaluation set (ID1-test + ID3); (3) the ensemble trains one target per
subset; (4) the reports; figures and final numbers (``log_hyperparams``) to the run's loggers.

``torchrun --nproc_per_node N cli.py attack ...`` shards step (1) over N processes (rank 0 writes
the file), then rank 0 alone runs the rest.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from dataclasses import asdict
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING

from attacks.signals import membership, subset
from datamodules.errors import DataError
from experiments.attack_steps.jobs import Inputs, Job, target_job
from experiments.attack_steps.results import encounter_figures
from experiments.run.config_files import command_parser, parse_options
from experiments.settings.attack import AttackSettings, settings_class

if TYPE_CHECKING:  # torch, Lightning, xgboost and ART load when an attack runs, not for --help
    from attacks.registry import Entry
    from experiments.run.folder import RunContext
    from experiments.run.loggers import RunLoggers


def write_summary(*args, **kwargs) -> Path:
    """:func:`attacks.report.write_summary` (imported on first use: matplotlib is slow)."""
    from attacks.report import write_summary as write

    return write(*args, **kwargs)


def target_jobs(entry: Entry, inp: Inputs) -> list[Job]:
    """A ``target`` step: the attack fitted on the target's attack set with its settings block
    (``block.target_args(seed)`` when the block defines it, else every field but ``enabled``;
    None or a disabled block: no job); its info repeats its arguments."""
    block = getattr(inp.settings, entry.name)
    if hasattr(block, "target_args"):
        args = block.target_args(inp.settings.seed)
    else:
        args = {k: v for k, v in asdict(block).items() if k != "enabled"} if block.enabled else None
    if args is None:
        return []
    return [target_job(inp, entry.name, entry.name, args, dict(args))]


def baseline_jobs(baselines: list[Entry], inp: Inputs) -> list[Job]:
    """The ``baseline`` step: every open-set baseline on the target's attack set when
    ``baselines`` is on, each when the signals carry every field it reads."""
    if not inp.settings.baselines:
        return []
    jobs = []
    for entry in baselines:
        if set(entry.cls.requires) <= set(inp.sig):
            info = {"score": entry.cls.score_text} if entry.cls.score_text else {}
            jobs.append(target_job(inp, entry.name, entry.name, {}, info))
    return jobs


def salem_shadow_jobs(inp: Inputs) -> list[Job]:
    """Salem's MLP fitted on a shadow's attack set (trained here on ID2, or another run's)."""
    s, sh = inp.settings.salem, inp.settings.salem.shadow
    if not (s.enabled and sh.enabled):
        return []
    from experiments.side_models.shadow import shadow_run_signals, train_shadow

    t0 = time.perf_counter()
    sdir = inp.out / "salem_shadow" / "shadow"
    if sh.run:
        ssig, sinfo = shadow_run_signals(sh.run, sdir, inp.settings.device)
    else:
        full, sinfo = train_shadow(
            inp.ctx, sdir, arch=sh.arch, epochs=sh.epochs, seed=sh.seed, batch_size=sh.batch_size
        )
        ssig = subset(full, "attack")
    target_arch = inp.ctx.model_args.get("arch")
    name = "salem_shadow" if sinfo["arch"] == target_arch else f"salem_shadow_{sinfo['arch']}"
    args = s.attack_args(inp.settings.seed)
    info = {**args, "fit_on": "shadow", "shadow": sinfo, "target_arch": target_arch}
    job = target_job(inp, name, "salem", dict(args), info)
    job.fit, job.prep_seconds = inp.fit_rows(ssig), time.perf_counter() - t0
    return [job]


def label_only_jobs(inp: Inputs) -> list[Job]:
    """Boundary distances from model queries on a balanced (capped) sample of both sets."""
    from experiments.side_models.boundary_queries import label_only_signals

    lo = inp.settings.label_only
    if not lo.enabled:
        return []
    lsig, info, secs = label_only_signals(inp.ctx, inp.sig, lo, inp.out / "label_only")
    n = len(lsig["index"])
    n_att = int((lsig["set"] == "attack").sum())
    job = Job("label_only", "label_only", {}, subset(lsig, "attack"), subset(lsig, "eval"), info)
    # the attack set's distances are the training cost; evaluating a sample costs its queries
    job.balanced, job.prep_seconds, job.query_seconds = False, secs * n_att / n, secs / n
    return [job]


def calibrated_jobs(inp: Inputs) -> list[Job]:
    """LiRA and RMIA at the sample and identity levels, with reference models
    (:mod:`experiments.attack_steps.calibrated_step`)."""
    from experiments.attack_steps.calibrated_step import calibrated_jobs as jobs

    return jobs(inp, Job)


def _reference_jobs(inp: Inputs) -> list[Job]:
    """The reference-whale jobs (:mod:`experiments.attack_steps.reference_step`)."""
    from experiments.attack_steps.reference_step import reference_jobs

    return reference_jobs(inp)


def ensemble_step(inp: Inputs, loggers: RunLoggers) -> dict[str, tuple[dict, dict]]:
    """The ensemble MIA (it trains its own subset targets): ``{ensemble_<rule>: (m, info)}``."""
    from experiments.side_models.ensemble import ensemble_attacks

    if not inp.settings.ensemble.enabled:
        return {}
    done = ensemble_attacks(
        inp.ctx, inp.sig, inp.settings, inp.out, inp.fwd, inp.log, scored=inp.scored
    )
    for name, (m, info) in done.items():
        log_attack(loggers, name, m, inp.out / "ensemble" / info["rule"])
    return done


def signal_step(builder: Callable[[Inputs], list[Job]]):
    """A step that fits and evaluates the jobs ``builder`` makes (none when it is disabled)."""

    def step(inp: Inputs, loggers: RunLoggers) -> dict[str, tuple[dict, dict]]:
        return {job.name: run_job(job, inp, loggers) for job in builder(inp)}

    return step


#: the step kinds in report order: the registered attacks' ``target`` steps (one per attack, in
#: registry order), the ``shadow`` and ``boundary`` steps, the ensemble (subset targets of a base
#: attack, not itself registered), the ``baseline`` step (every baseline, in registry order),
#: then ``calibrated`` and ``reference``
STEP_ORDER = ("target", "shadow", "boundary", "ensemble", "baseline", "calibrated", "reference")
#: the builders of the special step kinds (one step each, when an attack declares the kind)
SPECIAL = {
    "shadow": salem_shadow_jobs,
    "boundary": label_only_jobs,
    "calibrated": calibrated_jobs,
    "reference": _reference_jobs,
}


def attack_steps() -> tuple:
    """The steps of the attacks registered now (``steps=`` of :func:`attacks.registry.register`),
    in :data:`STEP_ORDER`; each returns ``{result name: (metrics, info)}``."""
    from attacks.registry import entries

    declared = entries("classifier")
    steps: list = []
    for kind in STEP_ORDER:
        if kind == "ensemble":
            steps.append(ensemble_step)
            continue
        having = [e for e in declared if kind in e.steps]
        if kind == "target":
            steps += [signal_step(partial(target_jobs, e)) for e in having]
        elif kind == "baseline" and having:
            steps.append(signal_step(partial(baseline_jobs, having)))
        elif having:
            steps.append(signal_step(SPECIAL[kind]))
    return tuple(steps)


#: the steps of the attacks registered when this module is imported (:func:`attack_steps`)
STEPS = attack_steps()


def run_job(job: Job, inp: Inputs, loggers: RunLoggers) -> tuple[dict, dict]:
    """Fit ``job``'s attack, score the evaluation rows, write its folder, log its figures."""
    from attacks.registry import get
    from attacks.report import evaluate, write_attack

    attack = get(job.attack).for_run(inp.sig, **job.args)
    t0 = time.perf_counter()
    attack.fit(job.fit)
    t_fit = time.perf_counter() - t0
    t0 = time.perf_counter()
    sc = attack.score(job.eval)
    per = (time.perf_counter() - t0) / max(1, len(sc))
    ev = job.eval
    m, sel = evaluate(
        sc,
        membership(ev),
        attack.score_threshold,
        identity=ev["identity"],
        label=ev["label"],
        pred=ev["pred"],
        balanced=job.balanced,
        seed=inp.settings.seed,
        name=job.name,
    )
    info = {
        **job.info,
        "by_encounter": encounter_figures(sc, ev, inp.ctx.rows),
        "train_seconds": t_fit + job.prep_seconds,
        "fit_seconds": t_fit,
        "score_seconds_per_sample": per,
        "discrimination_seconds_per_sample": per + job.query_seconds,
        "n_fit": len(job.fit["index"]),
    }
    folder = inp.out / job.name
    arrays = {"sample_id": ev["sample_id"][sel]}
    write_attack(folder, job.name, m, sc[sel], membership(ev)[sel], info, arrays)
    inp.scored[job.name] = (ev, sc, sel, attack.score_threshold, info)
    log_attack(loggers, job.name, m, folder)
    return m, info


def log_attack(loggers: RunLoggers, name: str, metrics: dict, folder: Path) -> None:
    """The attack's figures to TensorBoard (its numbers go once, at the end: :func:`report`)."""
    loggers.images(
        f"attack_{name}", [folder / f for f in ("roc.png", "roc_loglog.png", "hist.png")]
    )


def check_sources(ctx: RunContext, s: AttackSettings) -> None:
    """Refuse, before anything is written, a run whose checkpoint is gone: its cached signals
    may belong to another model (unless ``cached_signals``), and label-only queries the model."""
    from experiments.attack_steps.reference_step import check_reference
    from experiments.run.folder import signal_source

    check_reference(ctx, s)  # its photos, their whales and the checkpoint that embeds them
    ckpt = ctx.checkpoint
    if ckpt.is_file():
        signal_source(ctx)  # loads it: a truncated, corrupted or unsafe file is one line here
        return
    if s.label_only.enabled and s.ensemble.subsets is None:
        raise DataError(
            f"{ckpt}: checkpoint missing, and the label-only attack queries the model. Restore "
            "it, or pass --label_only.enabled false."
        )
    if not s.cached_signals:
        raise DataError(
            f"{ckpt}: checkpoint missing; the attacks would score cached signals of a model that "
            "is gone. Restore it, or pass --cached_signals true to score signals/final.npz."
        )
    if not (ctx.folder / "signals" / "final.npz").is_file():
        raise DataError(f"{ckpt}: checkpoint missing and no cached signals/final.npz to score.")


def attack_output(folder: Path, s: AttackSettings) -> Path:
    """Where the results go: a fresh ``attacks[-K]`` folder, or the named ``output`` (refused
    when it exists, unless ``overwrite`` or an ensemble job-array/reuse step adds to it)."""
    from experiments.run.outputs import claim, fresh_name, make_output_dir

    if s.output is None:
        return make_output_dir(fresh_name(folder, "attacks", ""))
    adds = s.ensemble.subsets is not None or s.ensemble.reuse
    out = claim(folder / s.output, overwrite=s.overwrite or adds)
    for finished in ("report.md", "summary.json"):  # --overwrite: never a stale finished report
        (out / finished).unlink(missing_ok=True)
    return make_output_dir(out)  # removed again if the attacks fail or are interrupted


def run_attacks(run: str | Path, settings: AttackSettings | None = None, log=print) -> dict:
    """Run every enabled attack on ``run``; returns ``{name: metrics}`` (also in summary.json)."""
    import torch

    from experiments.run.folder import RunContext, final_signals, signal_source
    from experiments.run.loggers import RunLoggers

    s = settings or AttackSettings()
    t_start = time.perf_counter()
    ctx = RunContext.open(run, s.device)
    check_sources(ctx, s)  # before anything is written
    out = attack_output(ctx.folder, s)
    log(f"attack results: {out}")
    (out / "attack_config.json").write_text(json.dumps(asdict(s), indent=2))
    torch.manual_seed(s.seed)
    if s.ensemble.subsets is not None:  # one job-array task: these subsets' targets, nothing else
        from experiments.side_models.ensemble import ensemble_config, train_subsets

        train_subsets(ctx, out / "ensemble", ensemble_config(ctx, s), s.ensemble.subsets, log)
        return {}
    if s.calibrated.enabled and s.calibrated.index is not None:  # one job-array task
        from experiments.attack_steps.calibrated_step import reference_folders

        reference_folders(ctx, s.calibrated, s.reference_runs, log)
        return {}
    sig, fwd = final_signals(ctx, cached=s.cached_signals)
    common = {
        "signals": str(ctx.folder / "signals" / "final.npz"),
        "checkpoint": signal_source(ctx),
    }
    inp = Inputs(ctx, sig, s, fwd, out, common, log)
    loggers = RunLoggers.for_run(ctx.config, ctx.folder, out)
    results, infos = {}, {}
    for step in attack_steps():
        for name, (m, info) in step(inp, loggers).items():
            results[name], infos[name] = m, info
            log(f"attack {name}: acc {m['acc']:.3f} auc {m['auc']:.3f} fpr {m['fpr']:.3f}")
    return report(inp, results, infos, loggers, t_start)


def report(inp: Inputs, results: dict, infos: dict, loggers: RunLoggers, t_start: float) -> dict:
    """The run's page (``report.md``, intervals, ``risk.csv``), and the final results through
    the run's loggers: figures as images, numbers once through ``log_hyperparams``."""
    from attacks.report import encounter_table, split_note
    from experiments.attack_steps.results import hparams, intervals, risk_section, run_context

    s, out, log = inp.settings, inp.out, inp.log
    context = run_context(inp, time.perf_counter() - t_start)
    extra = encounter_table({k: i.get("by_encounter") or {} for k, i in infos.items()})
    if (out / "ensemble" / "report.md").is_file():
        extra += "\n\n## Ensemble\n\nSee [ensemble/report.md](ensemble/report.md)."
    cis = intervals(inp.scored, s.calibrated.n_boot, s.seed) if inp.scored else {}
    if inp.scored:
        risk = risk_section(results, inp.scored, cis, out, s.calibrated.top)
        extra = "\n\n".join(x for x in (extra, risk) if x)
    others = [Path(c) for c in s.compare]
    path = write_summary(out, results, infos, context, others, extra, cis=cis)
    figures = json.loads((out / "summary.json").read_text()).get("figures", {})
    loggers.hparams(*hparams(inp.ctx, s, context, results))
    pngs = [out / f for fig in figures.values() for f in fig["files"]]
    loggers.images("attacks", pngs)
    loggers.close()
    log(split_note(context["split_protocol"], context["group_by"]))
    log(f"attack report: {path} ({context['seconds']:.1f} s)")
    return results


def parser(description: str | None = None):
    """The ``cli.py attack`` argument parser (``description``: its help text's first paragraph)."""
    from jsonargparse import ActionConfigFile

    p = command_parser("attack", description)
    p.add_argument("--config", action=ActionConfigFile, help="attack settings YAML")
    p.add_argument("--run", type=str, required=True, help="finished run folder")
    p.add_class_arguments(settings_class(), None)
    return p


def attack_main(argv: list[str], description: str | None = None) -> dict:
    """``python cli.py attack`` on ``argv`` (also what ``fit --attack_after_fit`` runs)."""
    p = parser(description)
    cfg = parse_options(p, argv)
    inst = p.instantiate_classes(cfg)
    settings_type = settings_class()  # the one the parser was built with
    settings = settings_type(**{k: inst[k] for k in settings_type.__dataclass_fields__})
    torchrun = "RANK" in os.environ and int(os.environ.get("WORLD_SIZE", "1")) > 1
    from experiments.run.folder import extract_distributed

    if torchrun and not extract_distributed(cfg.run, settings.device):
        return {}
    return run_attacks(cfg.run, settings)
