"""The report's figures: ROC curves (linear and log-log, every attack of a level in one
figure), member/non-member score histograms, and the overfitting-vs-leakage chart of the leakage
monitor (PNG, or an RGB array for TensorBoard)."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.backends.backend_agg import FigureCanvasAgg  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402


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


def plot_roc(
    curves: dict[str, tuple[np.ndarray, np.ndarray]],
    path: Path,
    loglog: bool,
    points: dict[str, tuple[float, float]] | None = None,
    title: str = "ROC",
) -> list[str]:
    """ROC curves ``{name: (fpr, tpr)}`` (see :func:`roc_lines`) and single operating points
    ``{name: (fpr, tpr)}`` (an attack with one decision and no ranking: drawn as a marker);
    log-log axes show the low-FPR regime down to the smallest measurable FPR. Writes ``path``;
    returns the attack names drawn, curves first, in order (every name of coinciding curves)."""
    fig, ax = plt.subplots(figsize=(4.8, 4.4))
    lines, floor = roc_lines(curves, loglog)
    drawn = []
    for label, f, t in lines:
        ax.plot(f, t, label=label, drawstyle="steps-post")
        drawn += label.rsplit(" (AUC", 1)[0].split(" = ")
    for i, (name, (f, t)) in enumerate((points or {}).items()):
        if loglog and f <= 0:
            f = floor  # a point at FPR 0 sits on the axis's left edge
        ax.plot([f], [t], marker="o^sDv"[i % 5], ls="", color="k", label=f"{name} (one point)")
        drawn.append(name)
    ax.plot([floor, 1], [floor, 1], "k:", lw=0.8, label="chance")
    if loglog:
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlim(floor, 1)
        ax.set_ylim(floor, 1.02)
    ax.set_xlabel("false positive rate" + (f" (from 1/{round(1 / floor)})" if loglog else ""))
    ax.set_ylabel("true positive rate")
    ax.legend(fontsize=6.5, loc="lower right")
    ax.set_title(title + (" (log-log)" if loglog else ""), fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return drawn


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
    from attacks.epoch_leakage import CHEAP_ATTACKS

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
    the metrics (:func:`attacks.epoch_leakage.leakage_metrics`) of ``epochs[i]``. Writes ``path``."""
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
        from attacks.epoch_leakage import CHEAP_ATTACKS

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
