"""The detector privacy audit: train target and shadow, predict, attack, report (one command).

    python cli.py audit --config detection_demo.yaml
    python cli.py audit --config detection_ssd300_vgg16_voc.yaml --data.init_args.root /data/voc
    python cli.py audit --config detection_demo.yaml --target_run RUN --shadow_run RUN  # re-attack

Any option other than ``--config``, ``--output``, ``--target_run``, ``--shadow_run`` and
``--rows`` is passed on to both fits (LightningCLI overrides such as ``--trainer.max_epochs 2``).

The audit's own settings live in the config as the :class:`DetectionAudit` callback (under
``trainer.callbacks``), so every detection config stays a valid ``cli.py fit`` config; during a
plain ``fit`` that callback writes the run's prediction signals at the end of training.

Output: ``lightning_logs/<config>/audit_N/`` with ``target/`` and ``shadow/`` run folders (each
with ``split_manifest.*``, ``signals/predictions.npz``, ``detector_metrics.json``),
``attacks/<row>.json`` and ``report.md``/``report.json``: the rows of Table 1 (attack model x
augmentation x box style x score rescaling) with the columns of Table 2 (test/train mAP, attack
accuracy, average recall, shadow validation accuracy) plus AUC and TPR at 1% FPR. With
``transfer`` set, ``transfer.md`` holds the Table 3 grids (rows: shadow, columns: target).
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytorch_lightning as pl
import yaml

from attacks.detection.metrics import attack_metrics
from attacks.signals import load_signals, membership

#: Table 1 rows: name -> (attack model, Aug, box style, SR); "xgb" is the XGBoost row.
TABLE1 = {
    "xgb": ("XGB", False, None, False),
    "shallow_o": ("shallow", False, "original", False),
    "alexnet_o": ("AlexNet", False, "original", False),
    "alexnet_aug_o": ("AlexNet", True, "original", False),
    "alexnet_aug_o_sr": ("AlexNet", True, "original", True),
    "alexnet_aug_u": ("AlexNet", True, "uniform", False),
    "alexnet_aug_u_sr": ("AlexNet", True, "uniform", True),
}


class DetectionAudit(pl.Callback):
    """Audit settings (read by ``cli.py audit``) and, during ``fit``, the signal writer.

    Args:
        rows: Table 1 rows to run (keys of :data:`TABLE1`; None: all seven).
        xgb: extra :class:`~attacks.detection.xgb.DetXGBAttack` arguments.
        canvas: extra :class:`~attacks.detection.canvas_cnn.CanvasAttack` arguments shared by the
            CNN rows (``canvas_size``, ``epochs``, ``lr``, ``batch_size``, ...).
        shadow_config: config for the shadow model (None: the target's own config); a different
            architecture or dataset gives a transfer attack.
        shadow_args: extra LightningCLI arguments for the shadow fit only.
        transfer: Table 3 grids, ``{grid name: [{name, config, args}, ...]}``: every entry is
            trained as target and as shadow, and the ``transfer_row`` attack trained on each
            shadow is evaluated on each target.
        transfer_row: the attack used for the grids (paper: the best row of Table 1).
        write_signals: write ``signals/predictions.npz`` at the end of ``fit``.
    """

    def __init__(
        self,
        rows: list[str] | None = None,
        xgb: dict | None = None,
        canvas: dict | None = None,
        shadow_config: str | None = None,
        shadow_args: list[str] | None = None,
        transfer: dict[str, list[dict]] | None = None,
        transfer_row: str = "alexnet_aug_u_sr",
        write_signals: bool = True,
    ):
        unknown = [r for r in (rows or []) + [transfer_row] if r not in TABLE1]
        if unknown:
            raise ValueError(f"audit rows {unknown}: choose from {list(TABLE1)}.")
        self.rows = list(rows or TABLE1)
        self.xgb, self.canvas = dict(xgb or {}), dict(canvas or {})
        self.shadow_config, self.shadow_args = shadow_config, list(shadow_args or [])
        self.transfer, self.transfer_row = transfer or {}, transfer_row
        self.write_signals = write_signals

    def on_fit_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        from lightning_modules.detector import write_prediction_signals

        dm = trainer.datamodule
        if not self.write_signals or dm is None or not hasattr(dm, "signal_rows"):
            return
        if trainer.fast_dev_run:  # exercise the path on one batch, write nothing
            write_prediction_signals(None, pl_module, dm, max_batches=1)
            return
        if trainer.is_global_zero and trainer.logger is not None and trainer.log_dir:
            _, path = write_prediction_signals(trainer.log_dir, pl_module, dm)
            print(f"prediction signals: {path}")


# ---- settings --------------------------------------------------------------------------------
def audit_settings(config: str | Path) -> DetectionAudit:
    """The :class:`DetectionAudit` callback configured in ``config`` (defaults if absent)."""
    cfg = yaml.safe_load(Path(config).read_text()) or {}
    for cb in (cfg.get("trainer") or {}).get("callbacks") or []:
        if isinstance(cb, dict) and str(cb.get("class_path", "")).endswith("DetectionAudit"):
            return DetectionAudit(**(cb.get("init_args") or {}))
    return DetectionAudit()


def _resolve(config: str) -> str:
    from cli import resolve_config_args

    return resolve_config_args(["--config", config])[1]


# ---- one fit ---------------------------------------------------------------------------------
def fit_run(config: str, args: list[str], run_dir: Path) -> Path:
    """Train one detector with the suite's LightningCLI into ``run_dir``; write its signals and
    ``detector_metrics.json`` (final train/test mAP). Returns ``run_dir``."""
    from cli import suite_cli
    from lightning_modules.detector import write_prediction_signals

    logger = {
        "class_path": "pytorch_lightning.loggers.TensorBoardLogger",
        "init_args": {"save_dir": str(run_dir.parent), "name": "", "version": run_dir.name},
    }
    argv = ["--config", _resolve(config), *args, f"--trainer.logger={json.dumps(logger)}"]
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
    return run_dir


def check_runs(target_run: Path, shadow_run: Path) -> None:
    """Fail (``SplitLeakError``) when the target's and the shadow's data overlap."""
    from datamodules.leaks import verify_cross_runs
    from datamodules.manifest import read_manifest

    t_rows, _ = read_manifest(target_run)
    s_rows, _ = read_manifest(shadow_run)
    verify_cross_runs(t_rows, s_rows)


def load_run_signals(run: Path, expect_set: str) -> dict[str, np.ndarray]:
    sig = load_signals(Path(run) / "signals" / "predictions.npz")
    if not np.all(sig["set"] == expect_set):
        raise ValueError(
            f"{run}: signal file holds {set(sig['set'])} rows, expected {expect_set!r}."
        )
    return sig


# ---- attacks ---------------------------------------------------------------------------------
def make_attack(row: str, settings: DetectionAudit):
    """The attack object of a Table 1 row."""
    from attacks.detection.canvas_cnn import CanvasAttack
    from attacks.detection.xgb import DetXGBAttack

    model, aug, style, sr = TABLE1[row]
    if row == "xgb":
        return DetXGBAttack(**settings.xgb)
    return CanvasAttack(
        model=model.lower(), box_style=style, rescale=sr, augment=aug, **settings.canvas
    )


def run_attack(row: str, settings: DetectionAudit, shadow: dict, target: dict) -> dict:
    """Fit on shadow in/out, evaluate on target in/out (balanced). Returns the metrics."""
    from attacks.metrics import balance

    t0 = time.time()
    attack = make_attack(row, settings).fit(shadow)
    keep = balance(membership(target), seed=0)
    tgt = {k: v[keep] for k, v in target.items()}
    m = attack_metrics(attack.score(tgt), membership(tgt))
    m["val_acc"] = attack.val_metrics.get("acc", float("nan"))
    m["seconds"] = round(time.time() - t0, 1)
    return m


# ---- report ----------------------------------------------------------------------------------
def _pct(x: float) -> str:
    return "n/a" if x is None or (isinstance(x, float) and np.isnan(x)) else f"{100 * x:.2f}"


def render_report(target_info: dict, shadow_info: dict, results: dict[str, dict]) -> str:
    """Markdown: Table 1 rows x Table 2 columns (percent)."""
    head = (
        f"Target: {target_info['arch']} on {target_info['dataset']}, "
        f"{target_info['global_step']} iterations; shadow: {shadow_info['arch']} on "
        f"{shadow_info['dataset']}, {shadow_info['global_step']} iterations.\n\n"
    )
    cols = [
        "Attack model",
        "Aug",
        "BT",
        "SR",
        "Model",
        "Dataset",
        "iters",
        "test mAP",
        "train mAP",
        "Attack Acc",
        "Average Recall",
        "AUC",
        "TPR@1%FPR",
        "Val Acc",
    ]
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for row, m in results.items():
        model, aug, style, sr = TABLE1[row]
        bt = "" if style is None else ("(O)" if style == "original" else "(U)")
        cells = [
            model,
            "✓" if aug else "",
            bt,
            "✓" if sr else "",
            target_info["arch"],
            target_info["dataset"],
            str(target_info["global_step"]),
            _pct(target_info.get("val/map50_out")),
            _pct(target_info.get("val/map50_in")),
            _pct(m["acc"]),
            _pct(m["average_recall"]),
            _pct(m["auc"]),
            _pct(m["tpr@1%fpr"]),
            _pct(m["val_acc"]),
        ]
        lines.append("| " + " | ".join(cells) + " |")
    n = next(iter(results.values()), {})
    foot = (
        f"\nmAP at IoU 0.5 (VOC style) on the target's out (test) and in (train) sets. Attacks are "
        f"evaluated on {n.get('n_members', 0)} target members and {n.get('n_nonmembers', 0)} "
        "non-members (balanced); Val Acc is on held-out shadow data. TPR at 1% FPR needs at least "
        "100 non-members to be meaningful.\n"
    )
    return head + "\n".join(lines) + "\n" + foot


def _next_dir(base: Path) -> Path:
    k = 0
    while (base / f"audit_{k}").exists():
        k += 1
    return base / f"audit_{k}"


OWN = ("--config", "--output", "--target_run", "--shadow_run", "--rows")


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


def main(argv: list[str]) -> dict:
    """Entry point of ``cli.py audit``. Returns the report dict."""
    from jsonargparse import ArgumentParser

    own, fit_args = _split_argv(list(argv))
    parser = ArgumentParser(prog="cli.py audit", description=__doc__.split("\n")[0])
    parser.add_argument("--config", type=str, required=True, help="detection config (YAML)")
    parser.add_argument("--output", type=str | None, default=None, help="audit folder")
    parser.add_argument("--target_run", type=str | None, default=None, help="reuse a target run")
    parser.add_argument("--shadow_run", type=str | None, default=None, help="reuse a shadow run")
    parser.add_argument("--rows", type=list[str] | None, default=None, help="Table 1 rows to run")
    args = parser.parse_args(own)
    config = _resolve(args.config)
    settings = audit_settings(config)
    rows = args.rows or settings.rows
    out = (
        Path(args.output) if args.output else _next_dir(Path("lightning_logs") / Path(config).stem)
    )
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    timings = {}

    target_run = Path(args.target_run) if args.target_run else None
    if target_run is None:
        target_run = fit_run(config, [*fit_args, "--data.init_args.role", "target"], out / "target")
        timings["fit_target_s"] = round(time.time() - t0, 1)
    shadow_run = Path(args.shadow_run) if args.shadow_run else None
    if shadow_run is None:
        t1 = time.time()
        shadow_cfg = settings.shadow_config or config
        shadow_run = fit_run(
            shadow_cfg,
            [*fit_args, *settings.shadow_args, "--data.init_args.role", "shadow"],
            out / "shadow",
        )
        timings["fit_shadow_s"] = round(time.time() - t1, 1)
    check_runs(target_run, shadow_run)
    target = load_run_signals(target_run, "target")
    shadow = load_run_signals(shadow_run, "shadow")
    t_info = json.loads((target_run / "detector_metrics.json").read_text())
    s_info = json.loads((shadow_run / "detector_metrics.json").read_text())

    results: dict[str, dict] = {}
    (out / "attacks").mkdir(exist_ok=True)
    t2 = time.time()
    for row in rows:
        results[row] = run_attack(row, settings, shadow, target)
        (out / "attacks" / f"{row}.json").write_text(json.dumps(results[row], indent=2))
        m = results[row]
        print(
            f"attack {row}: acc {m['acc']:.3f}  AR {m['average_recall']:.3f}  AUC {m['auc']:.3f}  "
            f"val acc {m['val_acc']:.3f}  ({m['seconds']} s)",
            flush=True,
        )
    timings["attacks_s"] = round(time.time() - t2, 1)

    transfer = {}
    if settings.transfer:
        reuse = {}
        if not settings.shadow_config and not settings.shadow_args:
            reuse[_Entry("", config, []).key] = (target_run, shadow_run)
        transfer = run_transfer(settings, fit_args, out, reuse)
    timings["total_s"] = round(time.time() - t0, 1)
    text = render_report(t_info, s_info, results)
    if transfer:
        text += "\n" + transfer["markdown"]
    text += f"\nTimings (s): {json.dumps(timings)}\n"
    report = {
        "config": config,
        "target_run": str(target_run),
        "shadow_run": str(shadow_run),
        "target": t_info,
        "shadow": s_info,
        "rows": results,
        "transfer": transfer.get("grids", {}),
        "timings": timings,
    }
    (out / "report.md").write_text(text)
    (out / "report.json").write_text(json.dumps(report, indent=2, default=float))
    print("\n" + text)
    print(f"Audit folder: {out}")
    return report


# ---- transfer (Table 3) ----------------------------------------------------------------------
@dataclass
class _Entry:
    name: str
    config: str
    args: list[str]

    @property
    def key(self) -> str:
        return json.dumps([self.config, self.args])


def run_transfer(
    settings: DetectionAudit,
    fit_args: list[str],
    out: Path,
    reuse: dict[str, tuple[Path, Path]] | None = None,
) -> dict:
    """Train every grid entry as target and shadow, then attack each target with each shadow.

    ``reuse`` maps an entry key (config and args) to finished (target, shadow) runs, e.g. the
    audit's own pair, which are not trained again.
    """
    grids = {
        g: [_Entry(e["name"], _resolve(e["config"]), list(e.get("args") or [])) for e in entries]
        for g, entries in settings.transfer.items()
    }
    runs: dict[str, tuple[Path, Path]] = dict(reuse or {})
    for entries in grids.values():
        for e in entries:
            if e.key in runs:
                continue
            slug = f"{len(runs)}_{e.name}".replace("/", "_").replace(" ", "_")
            tr = fit_run(
                e.config,
                [*fit_args, *e.args, "--data.init_args.role", "target"],
                out / "transfer" / f"{slug}_target",
            )
            sr = fit_run(
                e.config,
                [*fit_args, *e.args, "--data.init_args.role", "shadow"],
                out / "transfer" / f"{slug}_shadow",
            )
            runs[e.key] = (tr, sr)
    attacks: dict[str, object] = {}
    result: dict[str, dict] = {}
    md = [
        f"Transfer attacks ({settings.transfer_row}; attack accuracy %, rows: shadow, columns: target)\n"
    ]
    for g, entries in grids.items():
        table = {}
        for s in entries:
            if s.key not in attacks:
                shadow = load_run_signals(runs[s.key][1], "shadow")
                attacks[s.key] = make_attack(settings.transfer_row, settings).fit(shadow)
            table[s.name] = {}
            for t in entries:
                check_runs(runs[t.key][0], runs[s.key][1])
                from attacks.metrics import balance

                target = load_run_signals(runs[t.key][0], "target")
                keep = balance(membership(target), seed=0)
                target = {k: v[keep] for k, v in target.items()}
                table[s.name][t.name] = attack_metrics(
                    attacks[s.key].score(target), membership(target)
                )
        result[g] = table
        names = [e.name for e in entries]
        md.append(f"\n{g}\n\n| shadow \\ target | " + " | ".join(names) + " |")
        md.append("|---|" + "---|" * len(names))
        for s in names:
            md.append(f"| {s} | " + " | ".join(_pct(table[s][t]["acc"]) for t in names) + " |")
    text = "\n".join(md) + "\n"
    (out / "transfer.md").write_text(text)
    (out / "transfer.json").write_text(json.dumps(result, indent=2))
    return {"grids": result, "markdown": text}
