"""The detector privacy audit: train target and shadow, predict, attack, report (one command).

    python cli.py audit --config detection_demo.yaml
    python cli.py audit --config detection_ssd300_vgg16_voc.yaml --data.init_args.root /data/voc
    python cli.py audit --config detection_demo.yaml --target_run RUN --shadow_run RUN  # re-attack

Any option other than ``--config``, ``--output``, ``--overwrite``, ``--target_run``,
``--shadow_run`` and ``--rows`` is passed on to both fits (LightningCLI overrides such as ``--trainer.max_epochs 2``).

The audit's own settings are the config's ``audit:`` section (:class:`AuditSettings`), validated
by jsonargparse; every detection config stays a valid ``cli.py fit`` config, and a plain ``fit``
writes the run's prediction signals at the end of training (:class:`PredictionSignals`).

Output: ``lightning_logs/<config>/audit_N/`` with ``target/`` and ``shadow/`` run folders (each
with ``split_manifest.*``, ``signals/predictions.npz``, ``detector_metrics.json``),
``attacks/<row>.json`` and ``report.md``/``report.json``: the rows of Table 1 (attack model x
augmentation x box style x score rescaling) with the columns of Table 2 (test/train mAP, attack
accuracy, average recall, shadow validation accuracy) plus AUC and TPR at 1% FPR. With
``transfer`` set, ``transfer.md`` holds the Table 3 grids (rows: shadow, columns: target).
An ``--output`` folder that exists and is not empty is refused (nothing is written) unless
``--overwrite``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import yaml

from datamodules.errors import DataError
from datamodules.manifest import read_manifest
from experiments.detector_audit.report import percent as _pct
from experiments.detector_audit.report import render_report
from experiments.run.config_files import (
    add_flag,
    command_parser,
    parse_options,
    resolve_config_args,
)
from experiments.run.outputs import claim_folder
from experiments.settings.audit import TABLE1, AuditSettings, TransferEntry


def audit_settings(config: str | Path) -> AuditSettings:
    """The ``audit:`` section of ``config``, validated (defaults where absent); a bad section
    raises :class:`DataError` naming the config and the key."""
    from jsonargparse import ArgumentParser

    section = (yaml.safe_load(Path(config).read_text()) or {}).get("audit") or {}
    parser = ArgumentParser(exit_on_error=False)
    parser.add_class_arguments(AuditSettings, "audit")
    try:
        return parser.instantiate_classes(parser.parse_object({"audit": section})).audit
    except (ValueError, TypeError, argparse.ArgumentError) as exc:
        why = " ".join(str(exc).split())
        raise DataError(f"{config}: bad audit section: {why}") from None


def _resolve(config: str) -> str:
    return resolve_config_args(["--config", config])[1]


# ---- one fit ---------------------------------------------------------------------------------
def fit_run(config: str, args: list[str], run_dir: Path, pool: bool = False) -> Path:
    """Train one detector with the suite's LightningCLI into ``run_dir``; write its signals and
    ``detector_metrics.json`` (final train/test mAP); with ``pool``, also its queries on every
    image of the split (:func:`experiments.detector_audit.reference_detectors.write_pool`). Returns ``run_dir``."""
    from experiments.detector_audit.reference_detectors import write_pool
    from experiments.fitting.suite_cli import fit_argv, suite_cli
    from lightning_modules.detector import write_prediction_signals

    argv = fit_argv(config, run_dir, args)
    t0 = time.time()
    cli = suite_cli(argv, run=False)
    trainer, model, dm = cli.trainer, cli.model, cli.datamodule
    trainer.fit(model, datamodule=dm)
    fit_s = time.time() - t0
    trainer.validate(model, datamodule=dm, verbose=False)
    metrics = {k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith("val/")}
    if not (run_dir / "signals" / "predictions.npz").is_file():
        write_prediction_signals(run_dir, model, dm)
    info = {
        "config": config,
        "args": args,
        "arch": model.arch,
        "dataset": dm.dataset_name,
        "role": dm.role,
        "global_step": int(trainer.global_step),
        "epochs": int(trainer.current_epoch),
        "fit_seconds": round(fit_s, 1),
        **metrics,
    }
    (run_dir / "detector_metrics.json").write_text(json.dumps(info, indent=2))
    if pool:
        write_pool(run_dir, model, dm)
    return run_dir


def check_runs(target_run: Path, shadow_run: Path) -> None:
    """Fail (``SplitLeakError``) when the target's and the shadow's data overlap."""
    from datamodules.split_leak_checks import verify_cross_runs

    t_rows, _ = read_manifest(target_run)
    s_rows, _ = read_manifest(shadow_run)
    verify_cross_runs(t_rows, s_rows)


def load_run_signals(run: Path, side: str) -> dict[str, np.ndarray]:
    """The prediction signals of a detector run, all of one ``side`` (target | shadow)."""
    from attacks.signals import load_signals

    path = Path(run) / "signals" / "predictions.npz"
    if not path.is_file():
        raise DataError(f"{path}: missing; pass a finished detector run folder (fit writes it)")
    sig = load_signals(path)
    if not np.all(sig["side"] == side):
        raise DataError(f"{path}: holds {sorted(set(sig['side']))} rows, expected {side!r}.")
    return sig


# ---- attacks ---------------------------------------------------------------------------------
def make_attack(row: str, settings: AuditSettings):
    """The attack object of a Table 1 row."""
    from attacks.registry import get

    model, aug, style, sr = TABLE1[row]
    if row == "xgb":
        return get("det_xgb")(**settings.xgb)
    return get("det_canvas")(
        model=model.lower(), box_style=style, rescale=sr, augment=aug, **settings.canvas
    )


def evaluate_detector_attack(attack, target: dict, name: str = "") -> dict:
    """Accuracy, average recall (= balanced accuracy), AUC and TPR at 1% FPR of ``attack`` on the
    target's in/out signals, balanced; P(member) >= 0.5 decides. ``name`` labels its warnings."""
    from attacks.metrics import threshold_metrics
    from attacks.signals import balanced, membership

    tgt = balanced(target, seed=0)
    return threshold_metrics(
        attack.score(tgt), membership(tgt), attack.score_threshold, name=name or attack.name
    )


def run_attack(row: str, settings: AuditSettings, shadow: dict, target: dict) -> dict:
    """Fit on shadow in/out, evaluate on target in/out (balanced). Returns the metrics, with
    ``ci`` (95% bootstrap intervals, resampled by image group)."""
    from attacks.metric_intervals import ci_summary
    from attacks.signals import balanced, membership

    t0 = time.time()
    attack = make_attack(row, settings).fit(shadow)
    m = evaluate_detector_attack(attack, target, row)
    m["val_acc"] = attack.val_metrics.get("acc", float("nan"))
    m["seconds"] = round(time.time() - t0, 1)
    tgt = balanced(target, seed=0)
    m["ci"] = ci_summary(
        attack.score(tgt),
        membership(tgt),
        attack.score_threshold,
        tgt["group"],
        n_boot=settings.n_boot,
    )
    return m


OWN = ("--config", "--output", "--overwrite", "--target_run", "--shadow_run", "--rows")


def fit_option(argv: list[str], key: str) -> str | None:
    """The value of ``key`` among the fit arguments (``key value`` or ``key=value``), if any."""
    for i, a in enumerate(argv):
        if a == key and i + 1 < len(argv):
            return argv[i + 1]
        if a.startswith(key + "="):
            return a.split("=", 1)[1]
    return None


def _split_argv(argv: list[str]) -> tuple[list[str], list[str]]:
    own, rest, i = [], [], 0
    while i < len(argv):
        a = argv[i]
        key = a.split("=", 1)[0]
        if key in OWN:
            if "=" in a:
                own.append(a)
            else:
                own += argv[i : i + 2]
                i += 1
        else:
            rest.append(a)
        i += 1
    return own, rest


def parser():
    """The ``cli.py audit`` argument parser (its own options; the rest goes to both fits)."""

    p = command_parser(
        "audit",
        __doc__,
        "Options other than these are passed on to both fits (e.g. --trainer.max_epochs 2).",
    )
    p.add_argument("--config", type=str, required=True, help="detection config (YAML)")
    p.add_argument("--output", type=str | None, default=None, help="audit folder (new)")
    add_flag(p, "overwrite", "write into an existing, non-empty --output")
    p.add_argument("--target_run", type=str | None, default=None, help="reuse a target run")
    p.add_argument("--shadow_run", type=str | None, default=None, help="reuse a shadow run")
    p.add_argument("--rows", type=list[str] | None, default=None, help="Table 1 rows to run")
    return p


def train_pair(config: str, settings: AuditSettings, args, fit_args: list[str], out: Path):
    """The target and shadow run folders (trained here unless given) and their fit times."""
    timings = {}
    pool = settings.calibrated.enabled
    target_run = Path(args.target_run) if args.target_run else None
    if target_run is None:
        t0 = time.time()
        target_run = fit_run(
            config, [*fit_args, "--data.init_args.role", "target"], out / "target", pool
        )
        timings["fit_target_s"] = round(time.time() - t0, 1)
    shadow_run = Path(args.shadow_run) if args.shadow_run else None
    if shadow_run is None:
        t0 = time.time()
        shadow_args = [*fit_args, *settings.shadow_args, "--data.init_args.role", "shadow"]
        shadow_run = fit_run(settings.shadow_config or config, shadow_args, out / "shadow", pool)
        timings["fit_shadow_s"] = round(time.time() - t0, 1)
    check_runs(target_run, shadow_run)
    return target_run, shadow_run, timings


def attack_rows(rows, settings, shadow: dict, target: dict, out: Path) -> dict[str, dict]:
    """Every Table 1 row: fit on the shadow, evaluate on the target; ``<out>/attacks/<row>.json``."""
    results: dict[str, dict] = {}
    (out / "attacks").mkdir(exist_ok=True)
    for row in rows:
        m = results[row] = run_attack(row, settings, shadow, target)
        (out / "attacks" / f"{row}.json").write_text(json.dumps(m, indent=2))
        print(
            f"attack {row}: acc {m['acc']:.3f}  AR {m['balanced_acc']:.3f}  AUC {m['auc']:.3f}  "
            f"val acc {m['val_acc']:.3f}  ({m['seconds']} s)",
            flush=True,
        )
    return results


def main(argv: list[str]) -> dict:
    """Entry point of ``cli.py audit``. Returns the report dict."""
    own, fit_args = _split_argv(list(argv))
    if any(a in ("-h", "--help") for a in argv):
        parser().print_help()
        sys.exit(0)
    args = parse_options(parser(), own)
    from experiments.detector_audit.reference_detectors import (
        calibrated_markdown,
        calibrated_section,
    )
    from experiments.fitting.suite_cli import next_version

    if args.output:
        claim_folder(args.output, overwrite=args.overwrite)  # before anything else is read
    config = _resolve(args.config)
    settings = audit_settings(config)
    out = (
        Path(args.output)
        if args.output
        else next_version(Path("lightning_logs") / Path(config).stem, "audit_")
    )
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    target_run, shadow_run, timings = train_pair(config, settings, args, fit_args, out)
    target = load_run_signals(target_run, "target")
    shadow = load_run_signals(shadow_run, "shadow")
    t_info = json.loads((target_run / "detector_metrics.json").read_text())
    s_info = json.loads((shadow_run / "detector_metrics.json").read_text())
    t2 = time.time()
    results = attack_rows(args.rows or settings.rows, settings, shadow, target, out)
    timings["attacks_s"] = round(time.time() - t2, 1)
    cal = None
    if settings.calibrated.enabled:
        t3 = time.time()
        cal = calibrated_section(
            config,
            fit_args,
            settings.calibrated,
            (target_run, shadow_run),
            out,
            fit_run,
            settings.n_boot,
        )
        timings["calibrated_s"] = round(time.time() - t3, 1)
    transfer = {}
    if settings.transfer:
        reuse = {}
        if not settings.shadow_config and not settings.shadow_args:
            reuse[entry_key(config, [])] = (target_run, shadow_run)
        transfer = run_transfer(settings, fit_args, out, reuse)
    timings["total_s"] = round(time.time() - t0, 1)
    text = render_report(t_info, s_info, results)
    text += "\n" + calibrated_markdown(results, cal, float(s_info.get("fit_seconds", float("nan"))))
    text += (
        "\n" + transfer["markdown"] if transfer else ""
    ) + f"\nTimings (s): {json.dumps(timings)}\n"
    report = {
        "config": config,
        "target_run": str(target_run),
        "shadow_run": str(shadow_run),
        "target": t_info,
        "shadow": s_info,
        "rows": results,
        "calibrated": cal or {},
        "transfer": transfer.get("grids", {}),
        "timings": timings,
    }
    (out / "report.md").write_text(text)
    (out / "report.json").write_text(json.dumps(report, indent=2, default=float))
    print("\n" + text)
    print(f"Audit folder: {out}")
    return report


# ---- transfer (Table 3) ----------------------------------------------------------------------
def entry_key(config: str, args: list[str]) -> str:
    """Identity of a grid entry's training: its resolved config and arguments."""
    return json.dumps([config, list(args)])


def train_grid(grids: dict[str, list[TransferEntry]], fit_args, out: Path, runs: dict) -> None:
    """Train every entry not yet in ``runs`` as target and shadow (``runs[key] = (t, s)``)."""
    for entries in grids.values():
        for e in entries:
            key = entry_key(e.config, e.args)
            if key in runs:
                continue
            slug = f"{len(runs)}_{e.name}".replace("/", "_").replace(" ", "_")
            runs[key] = tuple(
                fit_run(
                    e.config,
                    [*fit_args, *e.args, "--data.init_args.role", role],
                    out / "transfer" / f"{slug}_{role}",
                )
                for role in ("target", "shadow")
            )


def run_transfer(
    settings: AuditSettings,
    fit_args: list[str],
    out: Path,
    reuse: dict[str, tuple[Path, Path]] | None = None,
) -> dict:
    """Train every grid entry as target and shadow, then attack each target with each shadow.

    ``reuse`` maps an entry key (:func:`entry_key`) to finished (target, shadow) runs, e.g. the
    audit's own pair, which are not trained again.
    """
    grids = {
        g: [TransferEntry(e.name, _resolve(e.config), list(e.args)) for e in entries]
        for g, entries in settings.transfer.items()
    }
    runs: dict[str, tuple[Path, Path]] = dict(reuse or {})
    train_grid(grids, fit_args, out, runs)
    attacks: dict[str, object] = {}
    result: dict[str, dict] = {}
    md = [
        f"Transfer attacks ({settings.transfer_row}; attack accuracy %, rows: shadow, columns: target)\n"
    ]
    for g, entries in grids.items():
        keys = {e.name: entry_key(e.config, e.args) for e in entries}
        table = {}
        for s, skey in keys.items():
            if skey not in attacks:
                shadow = load_run_signals(runs[skey][1], "shadow")
                attacks[skey] = make_attack(settings.transfer_row, settings).fit(shadow)
            table[s] = {}
            for t, tkey in keys.items():
                check_runs(runs[tkey][0], runs[skey][1])
                target = load_run_signals(runs[tkey][0], "target")
                table[s][t] = evaluate_detector_attack(attacks[skey], target)
        result[g] = table
        names = list(keys)
        md.append(f"\n{g}\n\n| shadow \\ target | " + " | ".join(names) + " |")
        md.append("|---|" + "---|" * len(names))
        for s in names:
            md.append(f"| {s} | " + " | ".join(_pct(table[s][t]["acc"]) for t in names) + " |")
    text = "\n".join(md) + "\n"
    (out / "transfer.md").write_text(text)
    (out / "transfer.json").write_text(json.dumps(result, indent=2))
    return {"grids": result, "markdown": text}
