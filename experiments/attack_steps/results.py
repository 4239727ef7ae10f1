"""What ``cli.py attack`` makes of its scored attacks after they ran: the encounter-grouped AUCs,
the 95% intervals by individual of every headline number, ``risk.csv`` with the most exposed
members and the false alarms, and the final results for the run's loggers (TensorBoard's
HPARAMS tab).

Imports no torch: ``cli.py attack --help`` loads this module's importer only.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from attacks.signals import membership

if TYPE_CHECKING:
    from experiments.attack_steps.jobs import Inputs

#: per attack, the final numbers sent to the HPARAMS tab (``attack_<name>/<metric>``)
HPARAM_METRICS = ("auc", "tpr@1%fpr", "tpr@0.1%fpr")


def encounter_figures(scores: np.ndarray, ev: dict, rows: list[dict]) -> dict:
    """AUCs of the evaluation rows with the member photos split by encounter: from encounters
    that also gave training photos (``seen``), from encounters held out whole (``new``), and
    per encounter (mean score of each held-out member encounter and each non-member encounter).
    Empty when the manifest records no groups (``group_by`` off) or rows lack ``index``."""
    from attacks.metrics import auc
    from attacks.open_set import aggregate
    from datamodules.manifest import encounter_key

    if "index" not in ev:
        return {}
    picked = [rows[int(i)] for i in ev["index"]]
    if not picked or not all(r["group"] for r in picked):
        return {}
    group = np.array([encounter_key(r) for r in picked], dtype=str)
    trained = {encounter_key(r) for r in rows if r["split"] == "train"}
    member = membership(ev).astype(bool)
    seen = member & np.isin(group, list(trained))
    new = member & ~seen

    def auc_of(keep: np.ndarray) -> float:
        y = member[keep]
        return auc(scores[keep], y) if 0 < y.sum() < len(y) else float("nan")

    enc = new | ~member
    names, mean = aggregate(scores[enc], group[enc], "mean")
    enc_member = np.isin(names, group[new])
    return {
        "n_seen_encounter_photos": int(seen.sum()),
        "n_new_encounter_photos": int(new.sum()),
        "n_nonmember_photos": int((~member).sum()),
        "auc_photos": auc_of(np.ones_like(member)),
        "auc_seen_encounter": auc_of(seen | ~member),
        "auc_new_encounter": auc_of(new | ~member),
        "auc_encounter_level": auc(mean, enc_member)
        if 0 < enc_member.sum() < len(names)
        else float("nan"),
    }


def intervals(scored: dict, n_boot: int, seed: int) -> dict[str, dict]:
    """``{attack: {metric: (point, lo, hi), counts}}``: 95% bootstrap intervals by individual of
    accuracy, FPR, AUC, TPR at low FPR and balanced accuracy, on the rows each attack's metrics
    were computed on (``scored``: ``{name: (eval signals, scores (N,), selected rows, threshold,
    info)}``); an attack's own ``info["ci"]`` (the ensemble's) is reused."""
    from attacks.metric_intervals import headline_intervals

    out = {}
    for name, (ev, sc, sel, tau, info) in scored.items():
        y = membership(ev)[sel]
        out[name] = headline_intervals(
            sc[sel], y, tau, ev["identity"][sel], n_boot=n_boot, seed=seed, known=info.get("ci")
        )
    return out


def risk_table_rows(scored: dict) -> list[dict]:
    """The rows of ``risk.csv``: every evaluated photo of each level with each attack's score
    and rank (:func:`attacks.risk.risk_rows`)."""
    from attacks.risk import risk_rows

    by_level: dict[str, tuple[dict, dict]] = {}
    for name, (ev, sc, _sel, _tau, info) in scored.items():
        meta, cols = by_level.setdefault(info.get("level", "identity"), ({}, {}))
        for i, sid in enumerate(ev["sample_id"]):
            meta.setdefault(
                sid,
                {k: ev[k][i] for k in ("sample_id", "file", "identity")} | {"role": ev["role"][i]},
            )
        cols[name] = dict(zip(ev["sample_id"], sc))
    risk = []
    for level, (meta, cols) in by_level.items():
        ids = list(meta)
        arrays = {
            k: np.array([meta[i][k] for i in ids])
            for k in ("sample_id", "file", "identity", "role")
        }
        scores = {
            n: np.array([c.get(i, np.nan) for i in ids], dtype=np.float64) for n, c in cols.items()
        }
        risk += risk_rows(level, arrays, scores)
    return risk


def risk_section(results: dict, scored: dict, cis: dict, out: Path, top: int) -> str:
    """Write ``<out>/risk.csv``; return the report's markdown: the intervals of every scored
    attack, then the most exposed members and, apart, the false alarms."""
    from attacks.report_tables import ci_table
    from attacks.risk import most_exposed, write_risk_csv

    risk = risk_table_rows(scored)
    write_risk_csv(out / "risk.csv", risk)
    return "\n\n".join(
        [
            "## Confidence intervals (95%, bootstrap by individual)",
            ci_table(results, cis),
            "## Most exposed members, and false alarms",
            "Per photo scores and ranks of every attack: [risk.csv](risk.csv). The lists rank "
            "members only (the training photos and individuals at risk); a non-member that "
            "scores high is a false alarm and is listed apart.",
            most_exposed(risk, top),
        ]
    )


def hparams(ctx, settings, context: dict, results: dict) -> tuple[dict, dict]:
    """``(params, metrics)`` for the loggers' ``log_hyperparams``: the run's key settings
    (arch, image size, epochs, split protocol, seeds, preset) and each attack's final AUC and
    TPR at 1% / 0.1% FPR (left out where the non-members cannot support it: fewer than 1/FPR),
    plus the target's accuracies."""
    trainer = ctx.config.get("trainer") or {}
    params = {
        "arch": context.get("arch"),
        "preset": context.get("preset"),
        "image_size": ctx.image_size,
        "epochs": trainer.get("max_epochs"),
        "split_protocol": context.get("split_protocol"),
        "group_by": context.get("group_by"),
        "split_seed": ctx.header.get("seed"),
        "attack_seed": settings.seed,
        "n_classes": context.get("n_classes"),
    }
    params = {k: ("none" if v is None else v) for k, v in params.items()}
    metrics = {f"target/{k}": context[k] for k in ("train_acc", "test_acc", "overfitting_level")}
    for name, m in results.items():
        n_neg = m.get("n_nonmembers", 0)
        for key in HPARAM_METRICS:
            rate = {"tpr@1%fpr": 0.01, "tpr@0.1%fpr": 0.001}.get(key)
            if rate is not None and n_neg < round(1 / rate):
                continue
            v = m.get(key)
            if isinstance(v, (int, float)) and np.isfinite(v):
                metrics[f"attack_{name}/{key}"] = float(v)
    return params, metrics


def run_context(inp: Inputs, seconds: float) -> dict:
    """The summary's header: the target, its accuracies and where the signals came from."""
    from attacks.signals import accuracy
    from experiments.callbacks.fit_health import read_health

    ctx = inp.ctx
    train_acc, test_acc = accuracy(inp.sig, "train"), accuracy(inp.sig, "test")
    return {
        "run": str(ctx.folder),
        "arch": ctx.model_args.get("arch"),
        "preset": ctx.model_args.get("preset"),
        "n_classes": len(ctx.class_names),
        "signals": inp.common["signals"],
        "train_acc": train_acc,
        "test_acc": test_acc,
        "group_by": ctx.data_setting("split", "group_by"),
        "split_protocol": ctx.header.get("settings", {}).get("split_protocol"),
        "seconds": seconds,
        "checkpoint": inp.common.get("checkpoint"),
        "manifest_hash": ctx.header.get("hash"),
        "overfitting_level": train_acc - test_acc,
        "fit_health": read_health(ctx.folder),
    }
