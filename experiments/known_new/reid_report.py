"""Summary and Markdown page of ``cli.py reid`` results (plain dicts in, text out)."""

from __future__ import annotations

import numpy as np

from attacks.reference_calibrated import STATISTICS

LEVELS = ("photo", "encounter")


def _stats(values: list[float]) -> dict:
    v = np.asarray([x for x in values if x is not None and np.isfinite(x)], dtype=float)
    if not len(v):
        return {"mean": float("nan"), "min": float("nan"), "max": float("nan")}
    return {"mean": float(v.mean()), "min": float(v.min()), "max": float(v.max())}


def summarize(draws: list[dict]) -> dict:
    """Mean and range over draws of every figure; AUROC intervals as the mean lower and upper
    bound and the lowest lower bound."""
    out: dict = {}
    for level in LEVELS:
        rows = [d[level] for d in draws]
        lev = {k: _stats([r.get(k, float("nan")) for r in rows]) for k in ("top1", "top5")}
        if level == "photo":
            lev["map20"] = _stats([r["map20"] for r in rows])
        for stat in STATISTICS:
            key = f"auroc_{stat}"
            lev[key] = _stats([r[key][0] for r in rows])
            lev[key]["ci_lo_mean"] = float(np.mean([r[key][1] for r in rows]))
            lev[key]["ci_hi_mean"] = float(np.mean([r[key][2] for r in rows]))
            lev[key]["ci_lo_min"] = float(np.min([r[key][1] for r in rows]))
        out[level] = lev
    return out


def _mr(s: dict) -> str:
    return f"{s['mean']:.3f} ({s['min']:.3f}-{s['max']:.3f})"


def _benchmark_table(bench: dict) -> list[str]:
    lines = ["| scenario | queries | mAP@20 | top-1 | top-5 |", "|---|---|---|---|---|"]
    for name, m in bench.items():
        lines.append(
            f"| {name} | {m['n_queries']} | {m['map20']:.3f} | {m['top1']:.3f} | {m['top5']:.3f} |"
        )
    return lines


def _draw_table(summary: dict) -> list[str]:
    lines = [
        "| level | re-ID top-1 | top-5 | mAP@20 | "
        + " | ".join(f"AUROC {s}" for s in STATISTICS)
        + " |",
        "|---|---|---|---|" + "---|" * len(STATISTICS),
    ]
    for level in LEVELS:
        lev = summary[level]
        cells = [_mr(lev["top1"]), _mr(lev["top5"])]
        cells.append(_mr(lev["map20"]) if "map20" in lev else "")
        for stat in STATISTICS:
            a = lev[f"auroc_{stat}"]
            cells.append(f"{a['mean']:.3f} [{a['ci_lo_mean']:.2f}, {a['ci_hi_mean']:.2f}]")
        lines.append(f"| {level} | " + " | ".join(cells) + " |")
    return lines


def markdown(results: dict) -> str:
    """The report page of one ``cli.py reid`` run."""
    lines = [
        "# Re-identification and known/new with a population embedding",
        "",
        f"Embedding run `{results['run']}`; catalog `{results['catalog']}`: "
        f"{results['n_photos']} photos of {results['n_whales']} whales; "
        f"{results['n_reference_whales']} reference whales; test-time flip "
        f"{'on' if results['tta'] else 'off'}; {results['seconds']['total']:.0f} s.",
        "",
        "## Where's Whale-do benchmark (every photo a query)",
        "",
        *_benchmark_table(results["benchmark"]),
        "",
    ]
    for protocol, summary in results["summary"].items():
        lines += [
            f"## Known or new, `{protocol}` protocol, {results['draws']} draws "
            f"({results['known_fraction']:.0%} of whales known)",
            "",
            "Mean (min-max over draws); AUROC: mean [mean 95 % interval by individual].",
            "",
            *_draw_table(summary),
            "",
        ]
    check = results.get("discriminate_check")
    if check:
        op = check["operating_point"]
        lines += [
            "## `discriminate` on the first encounter draw, laid out as folders",
            "",
            f"{check['known_encounters']} known and {check['new_encounters']} new query "
            f"encounters. Right whale among the top-5 candidates: {check['known_top5']:.3f} of "
            f"known encounters (top-1 {check['known_top1']:.3f}). Called known: "
            f"{check['known_called_known']:.3f} of known, {check['new_called_known']:.3f} of new "
            f"encounters (undecided: {check['known_undecided']:.3f} / {check['new_undecided']:.3f})."
            f" Operating point (self-calibrated on catalog and reference whales): threshold "
            f"{op['threshold']:.3f}, TPR {op['tpr'][0]:.3f} [{op['tpr'][1]:.2f}, {op['tpr'][2]:.2f}]"
            f", FPR {op['fpr'][0]:.3f}, AUROC {op['auroc'][0]:.3f}.",
            "",
        ]
    if results.get("target"):
        from experiments.known_new.reid_target import markdown as target_lines

        lines += target_lines(results["target"])
    return "\n".join(lines)
