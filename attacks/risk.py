"""Per-photo and per-individual membership risk: every evaluated photo's score and rank under
each attack (``risk.csv``), and the tables of the most exposed photos and individuals.

Rank 1 = the highest score (most exposed); ties share the lowest rank. A photo's exposure is its
mean rank percentile over the attacks that scored it (0 = most exposed of its level); an
individual's is the mean over its photos.
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
from scipy.stats import rankdata

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


def most_exposed(rows: list[dict], top: int = 10) -> str:
    """Markdown: per level, the ``top`` photos and individuals with the lowest exposure
    (highest-ranked across attacks)."""
    parts = []
    for level in dict.fromkeys(r["level"] for r in rows):
        lr = [r for r in rows if r["level"] == level and r["exposure"] != "nan"]
        photos = sorted(lr, key=lambda r: float(r["exposure"]))[:top]
        parts += [
            f"**{level} level: most exposed photos** (exposure 0 = ranked first by every attack)",
            "",
            "| file | identity | role | exposure |",
            "|---|---|---|---|",
        ]
        parts += [
            f"| {r['file']} | {r['identity']} | {r['role']} | {float(r['exposure']):.3f} |"
            for r in photos
        ]
        by_id: dict[str, list] = {}
        for r in lr:
            by_id.setdefault(r["identity"], []).append(r)
        ids = sorted(by_id, key=lambda i: np.mean([float(r["exposure"]) for r in by_id[i]]))
        parts += [
            "",
            f"**{level} level: most exposed individuals**",
            "",
            "| identity | roles | photos | mean exposure |",
            "|---|---|---|---|",
        ]
        for i in ids[:top]:
            roles = "/".join(sorted({r["role"] for r in by_id[i]}))
            mean = np.mean([float(r["exposure"]) for r in by_id[i]])
            parts.append(f"| {i} | {roles} | {len(by_id[i])} | {mean:.3f} |")
        parts.append("")
    return "\n".join(parts)
