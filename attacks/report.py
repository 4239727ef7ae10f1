"""Attack reports: metrics.json, Markdown, ROC (linear and log-log) and score histograms as PNG,
and the same scalars and figures in TensorBoard.

``evaluate`` turns one attack's frozen-threshold scores on the evaluation set into the metric
dict; ``write_attack`` saves one attack's folder; ``write_summary`` the Figure-6-style table.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.backends.backend_agg import FigureCanvasAgg  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from attacks.metrics import balance, roc, threshold_metrics  # noqa: E402
from attacks.open_set import open_set_metrics  # noqa: E402

#: metrics shown in the Markdown tables, in order
SHOWN = (
    "acc",
    "balanced_acc",
    "precision",
    "tpr",
    "fpr",
    "auc",
    "advantage",
    "tpr@1%fpr",
    "tpr@0.1%fpr",
    "baks",
    "baus",
    "gmean",
    "auroc_new",
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


def curve_auc(f: np.ndarray, t: np.ndarray) -> float:
    """Area under a ROC curve given by its points (trapezoids; = the AUC of its scores)."""
    return float(np.sum(np.diff(f) * (t[1:] + t[:-1]) / 2)) if len(f) > 1 else float("nan")


def same_curves(curves: dict[str, tuple[np.ndarray, np.ndarray]]) -> dict[str, list[str]]:
    """Curve names grouped when their ROC points coincide (identical rankings): ``{first name:
    [names]}``, so a curve hidden under another is labelled with it instead."""
    groups: dict[str, list[str]] = {}
    for name, (f, t) in curves.items():
        for first, names in groups.items():
            f0, t0 = curves[first]
            if len(f0) == len(f) and np.allclose(f0, f) and np.allclose(t0, t):
                names.append(name)
                break
        else:
            groups[name] = [name]
    return groups


def roc_lines(
    curves: dict[str, tuple[np.ndarray, np.ndarray]], loglog: bool
) -> tuple[list[tuple[str, np.ndarray, np.ndarray]], float]:
    """What :func:`plot_roc` draws: ``([(label, fpr, tpr)], smallest FPR shown)``. Labels carry
    the AUC and every name of coinciding curves; on log-log axes each curve starts at its
    smallest measurable FPR (its first non-zero FPR step, 1 / its non-members)."""
    lines, floor = [], 1.0
    for first, names in same_curves(curves).items():
        f, t = (np.asarray(a, dtype=np.float64) for a in curves[first])
        label = f"{' = '.join(names)} (AUC {curve_auc(f, t):.3f})"
        if loglog:
            pos = f[f > 0]
            if not len(pos):
                continue
            floor = min(floor, pos.min())
            keep = f >= pos.min()
            f, t = f[keep], t[keep]
        lines.append((label, f, t))
    return lines, (floor if loglog else 0.0)


def plot_roc(curves: dict[str, tuple[np.ndarray, np.ndarray]], path: Path, loglog: bool) -> Path:
    """ROC curves ``{name: (fpr, tpr)}`` (see :func:`roc_lines`); log-log axes show the
    low-FPR regime down to the smallest measurable FPR."""
    fig, ax = plt.subplots(figsize=(4.8, 4.4))
    lines, floor = roc_lines(curves, loglog)
    for label, f, t in lines:
        ax.plot(f, t, label=label, drawstyle="steps-post")
    ax.plot([floor, 1], [floor, 1], "k:", lw=0.8, label="chance")
    if loglog:
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlim(floor, 1)
        ax.set_ylim(floor, 1.02)
    ax.set_xlabel("false positive rate" + (f" (from 1/{round(1 / floor)})" if loglog else ""))
    ax.set_ylabel("true positive rate")
    ax.legend(fontsize=6.5, loc="lower right")
    ax.set_title("ROC" + (" (log-log)" if loglog else ""))
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


#: the per-epoch curves of :func:`plot_leakage` besides the attacks': (key, label, style,
#: on the right-hand axis)
LEAKAGE_CURVES = (
    ("leak/train_acc", "train accuracy", ("k", "-"), False),
    ("leak/test_acc", "test accuracy", ("grey", "-"), False),
    ("leak/gap", "gap (train - test)", ("k", ":"), False),
    ("leak/kl", "KL members || non-members (nats)", ("saddlebrown", "-."), True),
    ("leak/kl_null", "KL permutation null (nats)", ("tan", "-."), True),
)


def _series(rows: list[dict], key: str) -> list[float]:
    return [float(r.get(key, float("nan"))) for r in rows]


def same_score_groups(rows: list[dict], stems) -> list[list[str]]:
    """Attack stems grouped when their per-epoch AUC and TPR series coincide (identical
    rankings, e.g. ``yeom`` and ``msp``), so their curves are drawn once and labelled together
    instead of one hiding the other; stems with no values are left out."""
    groups: list[tuple[tuple, list[str]]] = []
    for stem in stems:
        key = tuple(
            np.round(_series(rows, f"leak/{stem}_{m}"), 9).tolist() for m in ("auc", "tpr@1%fpr")
        )
        if all(v != v for v in key[0]):
            continue
        for k, names in groups:
            if np.allclose(np.array(k, float), np.array(key, float), equal_nan=True):
                names.append(stem)
                break
        else:
            groups.append((key, [stem]))
    return [names for _, names in groups]


def _leakage_fig(epochs: list[int], rows: list[dict], title: str, limits: tuple | None = None):
    """The combined overfitting-vs-leakage chart: ``(figure, [(line, metric key), ...])``.

    ``limits``: fixed ``(x, left y, right y)`` ranges (:class:`LeakageChart`); None: automatic."""
    from attacks.leakage import CHEAP_ATTACKS

    fig = Figure(figsize=(7.2, 4.8))  # no pyplot: nothing to close, nothing kept globally
    FigureCanvasAgg(fig)
    ax = fig.subplots()
    right = ax.twinx()
    lines = []
    for key, label, (color, ls), on_right in LEAKAGE_CURVES:
        ys = _series(rows, key)
        if not all(y != y for y in ys):
            (line,) = (right if on_right else ax).plot(
                epochs, ys, ls, color=color, label=label, lw=1.2
            )
            lines.append((line, key))
    for i, names in enumerate(same_score_groups(rows, CHEAP_ATTACKS)):
        name, color, stem = " = ".join(names), f"C{i}", names[0]
        (auc,) = ax.plot(epochs, _series(rows, f"leak/{stem}_auc"), "-", color=color)
        auc.set_label(f"{name} AUC")
        (tpr,) = ax.plot(
            epochs, _series(rows, f"leak/{stem}_tpr@1%fpr"), "--", color=color, marker="x", ms=3
        )
        tpr.set_label(f"{name} TPR@1%FPR")
        lines += [(auc, f"leak/{stem}_auc"), (tpr, f"leak/{stem}_tpr@1%fpr")]
    ax.axhline(0.5, color="grey", lw=0.6, ls=":")
    ax.set_ylim(min(-0.02, np.nanmin(_series(rows, "leak/gap") + [0.0]) - 0.02), 1.02)
    if limits is not None:
        ax.set_xlim(*limits[0])
        ax.set_ylim(*limits[1])
        right.set_ylim(*limits[2])
    ax.set_xlabel("epoch")
    ax.set_ylabel("accuracy / gap / AUC / TPR")
    right.set_ylabel("KL (nats)")
    handles, labels = (
        a + b for a, b in zip(ax.get_legend_handles_labels(), right.get_legend_handles_labels())
    )
    fig.legend(handles, labels, fontsize=6.5, loc="lower center", ncol=3, frameon=False)
    ax.set_title(title or "overfitting vs leakage", fontsize=9)
    # a fixed layout (tight_layout would measure every text: slow for a per-epoch image)
    fig.subplots_adjust(left=0.09, right=0.9, top=0.93, bottom=0.3)
    return fig, lines


def plot_leakage(epochs: list[int], rows: list[dict], path: Path, title: str = "") -> Path:
    """Overfitting against leakage over epochs, one chart: train and test accuracy, gap, every
    cheap attack's AUC (solid) and TPR at 1% FPR (dashed) on the left axis (0-1), the
    members/non-members KL and its permutation null on the right axis (nats). ``rows[i]`` holds
    the metrics (:func:`attacks.leakage.leakage_metrics`) of ``epochs[i]``. Writes ``path``."""
    fig, _ = _leakage_fig(epochs, rows, title)
    fig.savefig(path, dpi=110)
    return path


def leakage_image(epochs: list[int], rows: list[dict], title: str = "") -> np.ndarray:
    """The :func:`plot_leakage` chart as an RGB array (H, W, 3) uint8, built from scratch (for
    one image; per epoch, :class:`LeakageChart` redraws only what changed)."""
    fig, _ = _leakage_fig(epochs, rows, title)
    fig.set_dpi(64)
    fig.canvas.draw()
    return np.asarray(fig.canvas.buffer_rgba())[..., :3].copy()


class LeakageChart:
    """The :func:`leakage_image` chart kept between monitored epochs, as an RGB array (H, W, 3)
    uint8 at ``dpi`` (64: 460 x 307 px).

    Axes, ticks, labels and legend (most of the drawing) are drawn once onto a cached
    background; each later call only moves the curves' data and draws the lines onto it. The
    figure is rebuilt when the set of curves changes (e.g. two attacks stop coinciding) or a
    value leaves the fixed ranges: epochs ``0..x_max`` (``None``: grows by doubling), the left
    axis down to the lowest gap (steps of 0.1), KL up to the next power of 4 (at least 1/16).
    """

    def __init__(self, title: str = "", x_max: int | None = None, dpi: int = 64):
        self.title, self.x_max, self.dpi = title, x_max, dpi
        self._key = None
        self._fig = self._lines = self._background = None

    def _limits(self, epochs: list[int], rows: list[dict]) -> tuple:
        last = max(epochs)
        x_hi = self.x_max if self.x_max is not None and self.x_max >= last else None
        if x_hi is None:
            x_hi = max(8, 2 ** int(np.ceil(np.log2(last + 1))))
        gap = np.nanmin(_series(rows, "leak/gap") + [0.0])
        y_lo = -0.02 if gap >= 0 else float(np.floor((gap - 0.02) * 10) / 10)
        kl = np.nanmax(_series(rows, "leak/kl") + _series(rows, "leak/kl_null") + [0.0])
        k_hi = 4.0 ** float(np.ceil(np.log(max(kl * 1.05, 1 / 16)) / np.log(4)))
        return (-0.5, x_hi + 0.5), (y_lo, 1.02), (-0.02 * k_hi, k_hi)

    def image(self, epochs: list[int], rows: list[dict]) -> np.ndarray:
        """The chart of ``rows[i]`` (metrics of ``epochs[i]``) as an RGB array."""
        from attacks.leakage import CHEAP_ATTACKS

        limits = self._limits(epochs, rows)
        present = tuple(k for k, *_ in LEAKAGE_CURVES if not all(v != v for v in _series(rows, k)))
        groups = tuple(map(tuple, same_score_groups(rows, CHEAP_ATTACKS)))
        key = (present, groups, limits)
        if key != self._key:
            self._fig, self._lines = _leakage_fig(epochs, rows, self.title, limits)
            self._fig.set_dpi(self.dpi)
            for line, _ in self._lines:
                line.set_animated(True)  # left out of the background (the legend keeps its own)
            self._fig.canvas.draw()
            self._background = self._fig.canvas.copy_from_bbox(self._fig.bbox)
            self._key = key
        canvas = self._fig.canvas
        canvas.restore_region(self._background)
        for line, k in self._lines:
            line.set_data(epochs, _series(rows, k))
            line.axes.draw_artist(line)
        return np.asarray(canvas.buffer_rgba())[..., :3].copy()


#: signal fields that are losses: an attack on one scores the negated loss, reported as a loss
LOSS_SIGNALS = ("loss_pred", "loss_true")


def plot_hist(
    scores: np.ndarray,
    is_member: np.ndarray,
    tau: float,
    path: Path,
    title: str,
    xlabel: str = "membership score (higher = member)",
):
    """Member vs non-member histograms of ``scores`` with the frozen threshold ``tau``."""
    s, y = np.asarray(scores, dtype=np.float64), np.asarray(is_member).astype(bool)
    fig, ax = plt.subplots(figsize=(4.5, 3.2))
    edges = np.histogram_bin_edges(s[np.isfinite(s)], bins=30)
    ax.hist(s[y], edges, alpha=0.6, label=f"members ({y.sum()})")
    ax.hist(s[~y], edges, alpha=0.6, label=f"non-members ({(~y).sum()})")
    ax.axvline(tau, color="k", ls="--", lw=1, label=f"threshold {tau:.3g}")
    ax.set_xlabel(xlabel)
    ax.set_ylabel("samples")
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


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


def _fmt(v) -> str:
    if isinstance(v, float):
        return "nan" if v != v else f"{v:.3f}"
    return str(v)


def metrics_table(rows: dict[str, dict], keys=SHOWN) -> str:
    """Markdown table: one row per attack, one column per metric."""
    head = "| attack | " + " | ".join(keys) + " |"
    sep = "|---" * (len(keys) + 1) + "|"
    body = [
        f"| {name} | " + " | ".join(_fmt(m.get(k, float("nan"))) for k in keys) + " |"
        for name, m in rows.items()
    ]
    return "\n".join([head, sep, *body])


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
    for w in metrics.get("warnings", []):
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


def figure6_table(results: dict[str, dict[str, dict]]) -> str:
    """Figure-6-style table: rows = attacks, columns = architectures, cells 'acc / FPR'.

    ``results[arch][attack] = metrics``.
    """
    archs = list(results)
    attacks = list(dict.fromkeys(a for r in results.values() for a in r))
    head = "| attack | " + " | ".join(f"{a} acc / FPR / AUC" for a in archs) + " |"
    sep = "|---" * (len(archs) + 1) + "|"
    body = []
    for att in attacks:
        cells = []
        for arch in archs:
            m = results[arch].get(att)
            cells.append("-" if m is None else f"{m['acc']:.3f} / {m['fpr']:.3f} / {m['auc']:.3f}")
        body.append(f"| {att} | " + " | ".join(cells) + " |")
    return "\n".join([head, sep, *body])


def timing_table(results: dict[str, dict], infos: dict[str, dict]) -> str:
    """Markdown: training time and discrimination time per sample of each attack (Table 4)."""
    rows = [
        "| attack | train time (s) | discrimination time per sample (s) | n eval |",
        "|---|---|---|---|",
    ]
    for name, inf in infos.items():
        rows.append(
            f"| {name} | {inf.get('train_seconds', float('nan')):.3f} | "
            f"{inf.get('discrimination_seconds_per_sample', float('nan')):.2e} | "
            f"{results[name]['n_members'] + results[name]['n_nonmembers']} |"
        )
    return "\n".join(rows)


def encounter_table(rows: dict[str, dict]) -> str:
    """Markdown: per attack, AUC on all evaluation photos beside AUC with only the member photos
    of encounters seen in training, only those of held-out encounters, and per encounter
    (``experiments.attack.encounter_figures``); empty when no attack has these figures."""
    rows = {k: v for k, v in rows.items() if v}
    if not rows:
        return ""
    any_row = next(iter(rows.values()))
    lines = [
        "## Photo split and encounter-grouped figures",
        "",
        f"Member test photos: {any_row['n_seen_encounter_photos']} from encounters that also "
        f"gave training photos, {any_row['n_new_encounter_photos']} from encounters held out "
        f"whole; {any_row['n_nonmember_photos']} photos of new individuals. A photo split "
        "measures the first kind (a near-duplicate of a training photo is easy to recognise); "
        "an ecologist meets the second: a known whale seen again on a new day. AUCs over all "
        "evaluation rows (not subsampled).",
        "",
        "| attack | AUC all photos | AUC seen-encounter members | AUC new-encounter members "
        "| AUC per encounter (new encounters) |",
        "|---|---|---|---|---|",
    ]
    keys = ("auc_photos", "auc_seen_encounter", "auc_new_encounter", "auc_encounter_level")
    for name, m in rows.items():
        lines.append(f"| {name} | " + " | ".join(_fmt(m.get(k)) for k in keys) + " |")
    return "\n".join(lines)


def write_summary(
    attacks_dir: Path,
    results: dict[str, dict],
    infos: dict[str, dict],
    context: dict,
    others: list[Path] | None = None,
    extra_md: str = "",
) -> Path:
    """``<run>/attacks/{summary.json, report.md, roc*.png}``: every attack and baseline of this
    run, plus the Figure-6 table across this and ``others`` run folders (their summary.json)."""
    arch = context.get("arch", "target")
    fig6 = {f"{arch} ({context.get('preset', '')})": results}
    for other in others or []:
        p = Path(other) / "attacks" / "summary.json"
        if p.is_file():
            o = json.loads(p.read_text())
            fig6[
                f"{o['context'].get('arch')} ({o['context'].get('preset', '')}) {Path(other).name}"
            ] = o["metrics"]
    curves = {}
    for name in results:
        p = attacks_dir / name / "scores.npz"
        if p.is_file():
            with np.load(p) as z:
                curves[name] = (z["roc_fpr"], z["roc_tpr"])
    plot_roc(curves, attacks_dir / "roc.png", loglog=False)
    plot_roc(curves, attacks_dir / "roc_loglog.png", loglog=True)
    summary = {"context": context, "metrics": results, "info": infos}
    (attacks_dir / "summary.json").write_text(json.dumps(summary, indent=2, default=_json))
    lines = [
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
        figure6_table(fig6),
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
        "## Time (Table 4 style)",
        "",
        timing_table(results, infos),
        "",
        "Discrimination time per sample includes the target's forward pass (signal "
        "extraction) for signal attacks and the HopSkipJump queries for label-only.",
        "",
        extra_md,
        "",
        "![ROC](roc.png) ![ROC log-log](roc_loglog.png)",
        "",
    ]
    warn = sorted({w for m in results.values() for w in m.get("warnings", [])})
    if warn:
        lines += ["## Warnings", "", *[f"- {w}" for w in warn], ""]
    path = attacks_dir / "report.md"
    path.write_text("\n".join(lines))
    return path
