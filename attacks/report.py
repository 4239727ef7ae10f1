"""Attack reports: metrics.json, Markdown, ROC (linear and log-log) and score histograms as PNG.

``evaluate`` turns one attack's frozen-threshold scores on the evaluation set into the metric
dict; ``write_attack`` saves one attack's folder; ``write_summary`` the run's page
(``<run>/attacks/report.md``). The tables are in :mod:`attacks.report_tables`, the figures in
:mod:`attacks.report_figures` (both re-exported here).
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np

from attacks.metrics import balance, roc, threshold_metrics
from attacks.open_set import open_set_metrics
from attacks.report_figures import (  # noqa: F401  (re-exported: the report's public names)
    LEAKAGE_CURVES,
    LOSS_SIGNALS,
    LeakageChart,
    curve_auc,
    leakage_image,
    plot_hist,
    plot_leakage,
    plot_roc,
    roc_lines,
    same_curves,
    same_score_groups,
)
from attacks.report_tables import (  # noqa: F401
    SHOWN,
    ci_table,
    cost_table,
    encounter_table,
    figure6_table,
    metrics_table,
)


def evaluate(
    scores: np.ndarray,
    is_member: np.ndarray,
    tau: float,
    *,
    identity: np.ndarray | None = None,
    label: np.ndarray | None = None,
    pred: np.ndarray | None = None,
    balanced: bool = True,
    seed: int = 0,
    name: str = "",
) -> tuple[dict, np.ndarray]:
    """Metrics (``attack/*`` keys without the prefix) on the evaluation set at frozen ``tau``.

    With ``balanced`` the larger class is subsampled (seeded) so members and non-members count
    equally. Returns ``(metrics, selected indices)``; warnings (about low-FPR reliability), each
    naming the attack ``name`` and each once, are kept in ``metrics["warnings"]``.
    """
    y = np.asarray(is_member).astype(np.int64)
    sel = balance(y, seed) if balanced else np.arange(len(y))

    def pick(a):
        return None if a is None else np.asarray(a)[sel]

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        m = threshold_metrics(np.asarray(scores)[sel], y[sel], tau, name=name)
        m.update(
            open_set_metrics(
                np.asarray(scores)[sel],
                y[sel],
                tau,
                identity=pick(identity),
                label=pick(label),
                pred=pick(pred),
            )
        )
    m["warnings"] = list(dict.fromkeys(str(w.message) for w in caught))
    m["balanced"] = balanced
    return m, sel


def split_note(protocol: str | None, group_by: str | None = None) -> str:
    """What the figures of a run split by ``protocol`` do and do not predict (one paragraph)."""
    if protocol == "group":
        return (
            f"Split protocol `group` (by `{group_by}`): the test photos of known individuals come "
            "from groups (encounters) the target never saw, so these are new-encounter figures."
        )
    if protocol == "paper":
        return (
            "Split protocol `paper`: augmented copies of one photo can sit in both training and "
            "test sets, so these figures are an upper bound; they do not predict new photos, let "
            "alone new encounters."
        )
    return (
        "Split protocol `photo`: each known individual's photos were split at random, so test "
        "photos can come from the same encounters as training photos. These figures do not "
        "predict new encounters; for that, split by encounter (`split_protocol: group`, "
        "`group_by: encounter_id`)."
    )


def other_warnings(metrics: dict) -> list[str]:
    """``metrics["warnings"]`` less the low-FPR ones, which the tables mark on their cells."""
    return [w for w in metrics.get("warnings", []) if not ("TPR at" in w and "FPR" in w)]


def write_attack(
    out_dir: Path,
    name: str,
    metrics: dict,
    scores: np.ndarray,
    is_member: np.ndarray,
    info: dict,
    arrays: dict[str, np.ndarray] | None = None,
) -> dict:
    """Write ``<out_dir>/{metrics.json, report.md, roc.png, roc_loglog.png, hist.png,
    scores.npz}`` for one attack; returns the ``metrics.json`` payload."""
    out_dir.mkdir(parents=True, exist_ok=True)
    f, t = roc(scores, is_member) if len(np.unique(is_member)) == 2 else (np.zeros(1), np.zeros(1))
    plot_roc({name: (f, t)}, out_dir / "roc.png", loglog=False)
    plot_roc({name: (f, t)}, out_dir / "roc_loglog.png", loglog=True)
    loss = info.get("signal") in LOSS_SIGNALS  # Yeom: the score is a negated loss
    if loss:
        metrics = {**metrics, "loss_threshold": -metrics["threshold"]}
        plot_hist(
            -np.asarray(scores),
            is_member,
            -metrics["threshold"],
            out_dir / "hist.png",
            name,
            xlabel=f"{info['signal']} (nats, lower = member)",
        )
    else:
        plot_hist(scores, is_member, metrics["threshold"], out_dir / "hist.png", name)
    np.savez(
        out_dir / "scores.npz",
        score=np.asarray(scores, dtype=np.float64),
        is_member=np.asarray(is_member),
        roc_fpr=f,
        roc_tpr=t,
        **(arrays or {}),
    )
    payload = {
        "attack": name,
        "metrics": metrics,
        "info": info,
        "roc": {"fpr": f.tolist(), "tpr": t.tolist()},
    }
    (out_dir / "metrics.json").write_text(json.dumps(payload, indent=2, default=_json))
    lines = [
        f"# Attack `{name}`",
        "",
        "Threshold fitted on the attack set only, frozen, applied to the evaluation set "
        "(balanced: as many members as non-members).",
        "",
        metrics_table({name: metrics}),
        "",
        f"Members: {metrics['n_members']}, non-members: {metrics['n_nonmembers']}. "
        + (
            f"Threshold on the loss `{info['signal']}`: {metrics['loss_threshold']:.6g} nats "
            "(member iff loss <= threshold)."
            if loss
            else f"Threshold on the score: {metrics['threshold']:.6g}."
        ),
        "",
    ]
    for w in other_warnings(metrics):
        lines.append(f"> warning: {w}")
    lines += [
        "",
        "## Settings and timings",
        "",
        "```json",
        json.dumps(info, indent=2, default=_json),
        "```",
        "",
        "![ROC](roc.png) ![ROC log-log](roc_loglog.png)",
        "",
        "![scores](hist.png)",
        "",
    ]
    (out_dir / "report.md").write_text("\n".join(lines))
    return payload


def _json(o):
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, Path):
        return str(o)
    return str(o)


def fit_health_banner(health: dict | None) -> str:
    """A warning banner (one Markdown line) when the run's fit health (``fit_health.json``, as
    :func:`experiments.callbacks.fit_health.read_health` returns it) says the fit ended at chance level on
    its own training data, or could not be read; empty otherwise."""
    if not health:
        return ""
    if "unreadable" in health:
        return f"> **Warning:** {health['unreadable']}; the fit's health is unknown."
    if not health.get("at_chance"):
        return ""
    acc, chance = health.get("train_accuracy"), health.get("chance_accuracy")
    nums = ""
    if isinstance(acc, (int, float)) and isinstance(chance, (int, float)):
        nums = f" (training accuracy {acc:.3f}, chance {chance:.3f})"
    return (
        "> **Warning: the target ended at chance level on its own training data**"
        f"{nums}, per `fit_health.json`. It learned nothing, so the figures below measure an "
        "untrained model: low AUCs here are not evidence that a trained model would not leak."
    )


def _scores_of(attacks_dir: Path, name: str, info: dict) -> Path:
    """Where :func:`write_attack` saved ``name``'s scores (the ensemble's under ``ensemble/``)."""
    if name.startswith("ensemble_") and info.get("rule"):
        return attacks_dir / "ensemble" / info["rule"] / "scores.npz"
    return attacks_dir / name / "scores.npz"


def roc_figures(attacks_dir: Path, results: dict, infos: dict) -> dict[str, dict]:
    """One ROC figure per level (``info["level"]``, default ``identity``), linear and log-log,
    every attack of the level in it: ``roc.png``/``roc_loglog.png`` for the identity level,
    ``roc_<level>.png``/``roc_<level>_loglog.png`` for the others. An attack whose scores are
    0/1 decisions (a hard vote) has one operating point and is drawn as a point.

    Returns ``{level: {"files": [...], "attacks": names drawn, "points": names drawn as points,
    "missing": {name: why}}}``."""
    levels: dict[str, list[str]] = {}
    for name in results:
        levels.setdefault(infos.get(name, {}).get("level", "identity"), []).append(name)
    out = {}
    for level, names in levels.items():
        curves, points, gone = {}, {}, {}
        for name in names:
            path = _scores_of(attacks_dir, name, infos.get(name, {}))
            if not path.is_file():
                gone[name] = f"no scores saved ({path.relative_to(attacks_dir)})"
                continue
            with np.load(path) as z:
                s, y = z["score"], z["is_member"]
            if len(np.unique(y)) < 2:
                gone[name] = "its evaluation rows hold one class only"
            elif set(np.unique(s).tolist()) <= {0.0, 1.0}:  # decisions (a hard vote): no ranking
                points[name] = (float(results[name]["fpr"]), float(results[name]["tpr"]))
            else:
                curves[name] = roc(s, y)
        stem = "roc" if level == "identity" else f"roc_{level}"
        files = [f"{stem}.png", f"{stem}_loglog.png"]
        drawn = []
        for f, loglog in zip(files, (False, True)):
            title = f"ROC, {level} level"
            drawn = plot_roc(curves, attacks_dir / f, loglog, points, title)
        out[level] = {"files": files, "attacks": drawn, "points": list(points), "missing": gone}
    return out


def roc_section(figures: dict[str, dict]) -> str:
    """Markdown: each level's ROC figures with a caption naming what is drawn and why any
    attack is not."""
    lines = ["## ROC curves", ""]
    for level, fig in figures.items():
        lines.append(f"**{level} level**: {', '.join(f'`{a}`' for a in fig['attacks'])}.")
        if fig["points"]:
            lines.append(
                f"Drawn as one point (its scores are 0/1 decisions, a hard vote: one operating "
                f"point, no curve): {', '.join(fig['points'])}."
            )
        for name, why in fig["missing"].items():
            lines.append(f"Not drawn: `{name}`, {why}.")
        lines += ["", " ".join(f"![ROC {level}]({f})" for f in fig["files"]), ""]
    return "\n".join(lines)


def _compared(others: list[Path] | None) -> dict[str, dict]:
    """``{column: metrics}`` of the ``--compare`` run folders that have a summary.json."""
    out = {}
    for other in others or []:
        p = Path(other) / "attacks" / "summary.json"
        if p.is_file():
            o = json.loads(p.read_text())
            c = o["context"]
            out[f"{c.get('arch')} ({c.get('preset', '')}) {Path(other).name}"] = o["metrics"]
    return out


def write_summary(
    attacks_dir: Path,
    results: dict[str, dict],
    infos: dict[str, dict],
    context: dict,
    others: list[Path] | None = None,
    extra_md: str = "",
    cis: dict[str, dict] | None = None,
) -> Path:
    """``<run>/attacks/{summary.json, report.md, roc*.png}``: every attack and baseline of this
    run, the Figure-6 table across this and ``others`` run folders (their summary.json), with
    the 95% intervals by individual of ``cis`` (``{attack: {"acc"|"fpr"|"auc": (point, lo,
    hi), ...}}``), one ROC figure per level, one cost table."""
    arch = context.get("arch", "target")
    here = f"{arch} ({context.get('preset', '')})"
    fig6 = {here: results, **_compared(others)}
    figures = roc_figures(attacks_dir, results, infos)
    summary = {"context": context, "metrics": results, "info": infos, "figures": figures}
    (attacks_dir / "summary.json").write_text(json.dumps(summary, indent=2, default=_json))
    banner = fit_health_banner(context.get("fit_health"))
    lines = [banner, ""] if banner else []
    lines += [
        f"# Membership inference report: `{context.get('run')}`",
        "",
        f"Target: {arch}, preset {context.get('preset')}, {context.get('n_classes')} known "
        f"individuals; signals from `{context.get('signals')}`.",
        "",
        split_note(context.get("split_protocol"), context.get("group_by")),
        "",
        "Every threshold was fitted on the attack set (ID1-val members + ID2 non-members) and "
        "frozen; all numbers below are on the evaluation set (ID1-test members + ID3 new "
        "individuals), balanced between members and non-members.",
        "",
        "## Accuracy / FPR / AUC per attack and architecture (Figure 6 style)",
        "",
        "Each cell: point [95% bootstrap interval, resampled by individual] (runs added with "
        "`--compare`: points only).",
        "",
        figure6_table(fig6, {here: cis or {}}),
        "",
        "## All metrics",
        "",
        metrics_table(results),
        "",
        "BAKS/BAUS: balanced accuracy on known/unknown samples (per-individual means; BAKS "
        "also needs the right top-1 identity), gmean = sqrt(BAKS*BAUS); auroc_new = AUROC with "
        "'new individual' as the positive class. The two baselines (`baseline_msp`, "
        "`baseline_nn_cosine`) are standard open-set detectors on the same splits.",
        "",
        roc_section(figures),
        "## Cost (Table 4 style)",
        "",
        cost_table(results, infos),
        "",
        extra_md,
        "",
    ]
    other = [f"- `{n}`: {w}" for n, m in results.items() for w in other_warnings(m)]
    if other:
        lines += ["## Other warnings", "", *other, ""]
    path = attacks_dir / "report.md"
    path.write_text("\n".join(lines))
    return path
