"""Per-photo and per-individual membership risk: every evaluated photo's score and rank under
each attack (``risk.csv``), and the tables of the most exposed member photos and individuals
(the training data at risk) beside the false alarms (high-scored non-members).

Rank 1 = the highest score (most exposed); ties share the lowest rank. A photo's exposure is its
mean rank percentile over the attacks that scored it (0 = most exposed of its level); an
individual's is the mean over its photos.
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
from scipy.stats import rankdata
from tabulate import tabulate

META = ("level", "sample_id", "file", "identity", "role")


def ranks(scores: np.ndarray) -> np.ndarray:
    """Rank (N,) int64 of each score, 1 = highest; ties share the lowest rank."""
    return rankdata(-np.asarray(scores, dtype=np.float64), method="min").astype(np.int64)


def risk_rows(level: str, meta: dict[str, np.ndarray], scores: dict[str, np.ndarray]) -> list[dict]:
    """One dict per row of ``meta`` (arrays ``sample_id``, ``file``, ``identity``, ``role``,
    (N,)) with ``<attack>`` score and ``<attack>_rank`` for each ``scores[attack]`` (N,), NaN
    entries (rows an attack did not score) left empty, plus ``exposure`` in [0, 1]."""
    n = len(meta["sample_id"])
    out = [{"level": level, **{k: str(meta[k][i]) for k in META[1:]}} for i in range(n)]
    pct = np.full((n, len(scores)), np.nan)
    for j, (name, s) in enumerate(scores.items()):
        s = np.asarray(s, dtype=np.float64)
        ok = np.isfinite(s)
        r = np.zeros(n, dtype=np.int64)
        r[ok] = ranks(s[ok])
        pct[ok, j] = (r[ok] - 1) / max(1, ok.sum() - 1)
        for i in range(n):
            out[i][name] = f"{s[i]:.6g}" if ok[i] else ""
            out[i][f"{name}_rank"] = int(r[i]) if ok[i] else ""
    with np.errstate(all="ignore"):
        exposure = np.nanmean(pct, 1) if scores else np.full(n, np.nan)
    for i in range(n):
        out[i]["exposure"] = f"{exposure[i]:.4f}"
    return out


def write_risk_csv(path: str | Path, rows: list[dict]) -> Path:
    """Write ``rows`` (from :func:`risk_rows`, any levels) to ``path``; columns in first-seen
    order, missing cells empty."""
    cols: list[str] = []
    for r in rows:
        cols += [c for c in r if c not in cols]
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    with tmp.open("w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=cols, restval="")
        w.writeheader()
        w.writerows(rows)
    tmp.replace(path)
    return path


def _photo_table(rows: list[dict]) -> str:
    body = [(r["file"], r["identity"], r["role"], float(r["exposure"])) for r in rows]
    head = ("file", "identity", "role", "exposure")
    return tabulate(body, head, tablefmt="github", floatfmt=".3f")


def _individual_table(rows: list[dict], top: int) -> str:
    """Individuals of ``rows`` by their photos' mean exposure, lowest first."""
    by_id: dict[str, list[float]] = {}
    for r in rows:
        by_id.setdefault(r["identity"], []).append(float(r["exposure"]))
    ids = sorted(by_id, key=lambda i: np.mean(by_id[i]))[:top]
    body = [(i, len(by_id[i]), float(np.mean(by_id[i]))) for i in ids]
    return tabulate(body, ("identity", "photos", "mean exposure"), "github", floatfmt=".3f")


def most_exposed(rows: list[dict], top: int = 10) -> str:
    """Markdown: per level, the ``top`` MEMBER photos and individuals with the lowest exposure
    (ranked highest across attacks): the training data at risk. Non-members that score high are
    false alarms, not leaks; they get their own, separate lists."""
    parts = []
    for level in dict.fromkeys(r["level"] for r in rows):
        lr = [r for r in rows if r["level"] == level and r["exposure"] != "nan"]
        lr = sorted(lr, key=lambda r: float(r["exposure"]))
        mem = [r for r in lr if r["role"] == "member"]
        non = [r for r in lr if r["role"] != "member"]
        parts += [
            f"**{level} level: most exposed member photos** (exposure 0 = ranked first by every "
            f"attack; {len(mem)} member photos)",
            "",
            _photo_table(mem[:top]) if mem else "No member photos were scored.",
            "",
            f"**{level} level: most exposed members (individuals)** (mean over their member "
            "photos)",
            "",
            _individual_table(mem, top) if mem else "No member photos were scored.",
            "",
            f"**{level} level: false alarms**: the highest-scored non-member photos "
            f"({len(non)} scored), then individuals by the mean over their non-member photos; "
            "these photos were never trained on, so a high score is an attack error, not a leak.",
            "",
            _photo_table(non[:top]) if non else "No non-member photos were scored.",
            "",
            _individual_table(non, top) if non else "",
            "",
        ]
    return "\n".join(parts)
