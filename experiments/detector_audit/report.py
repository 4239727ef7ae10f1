"""The detector audit's report: Table 1 rows x Table 2 columns, in percent."""

from __future__ import annotations

import math

from tabulate import tabulate

from experiments.settings.audit import TABLE1

COLUMNS = (
    "Attack model", "Aug", "BT", "SR", "Model", "Dataset", "iters", "test mAP", "train mAP",
    "Attack Acc", "Average Recall", "AUC", "TPR@1%FPR", "Val Acc",
)  # fmt: skip


def percent(x: float | None) -> str:
    return "n/a" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{100 * x:.2f}"


def _tpr(m: dict) -> str:
    """TPR at 1% FPR, or n/a with the count when fewer than 100 non-members support it."""
    n = int(m.get("n_nonmembers") or 0)
    return percent(m["tpr@1%fpr"]) if n >= 100 else f"n/a (n={n})"


def _row(row: str, m: dict, target_info: dict) -> list[str]:
    model, aug, style, sr = TABLE1[row]
    bt = "" if style is None else ("(O)" if style == "original" else "(U)")
    return [
        model, "✓" if aug else "", bt, "✓" if sr else "", target_info["arch"],
        target_info["dataset"], str(target_info["global_step"]),
        percent(target_info.get("val/map50_out")), percent(target_info.get("val/map50_in")),
        percent(m["acc"]), percent(m["balanced_acc"]), percent(m["auc"]), _tpr(m), percent(m["val_acc"]),
    ]  # fmt: skip


def render_report(target_info: dict, shadow_info: dict, results: dict[str, dict]) -> str:
    """Markdown: the target and shadow, then one row per Table 1 attack (percent)."""
    head = (
        f"Target: {target_info['arch']} on {target_info['dataset']}, "
        f"{target_info['global_step']} iterations; shadow: {shadow_info['arch']} on "
        f"{shadow_info['dataset']}, {shadow_info['global_step']} iterations.\n\n"
    )
    rows = [_row(row, m, target_info) for row, m in results.items()]
    table = tabulate(rows, headers=list(COLUMNS), tablefmt="github", disable_numparse=True)
    n = next(iter(results.values()), {})
    foot = (
        f"\nmAP at IoU 0.5 (VOC style) on the target's out (test) and in (train) sets. Attacks are "
        f"evaluated on {n.get('n_members', 0)} target members and {n.get('n_nonmembers', 0)} "
        "non-members (balanced); Val Acc is on held-out shadow data. TPR at 1% FPR needs at least "
        "100 non-members (n/a below) and is coarse below 1,000 (10 false positives in the budget).\n"
    )
    return head + table + "\n" + foot
