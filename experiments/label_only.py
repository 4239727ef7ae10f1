"""The label-only attack's signal: HopSkipJump boundary distances from queries to the target.

The search itself lives in :mod:`lightning_modules.boundary`; this module picks the rows, loads
their images, runs it and saves ``<run>/attacks/label_only/distances.npz``. The attack
(:class:`attacks.label_only.LabelOnlyAttack`) only thresholds the saved distances.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from attacks.signals import META_FIELDS, save_signals
from experiments.attack_settings import LabelOnlySettings
from experiments.runs import RunContext
from lightning_modules.boundary import boundary_distances


def pick_rows(sig: dict, lo: LabelOnlySettings) -> np.ndarray:
    """Signal-row indices: as many members as non-members in the attack set and in the
    evaluation set (each capped at ``max_per_role``), seeded, sorted within each group."""
    rng = np.random.default_rng(lo.seed)
    pick = [
        np.flatnonzero((sig["set"] == set_name) & (sig["role"] == role))
        for set_name in ("attack", "eval")
        for role in ("member", "nonmember")
    ]
    n_att = min(len(pick[0]), len(pick[1]))
    n_ev = min(len(pick[2]), len(pick[3]))
    if lo.max_per_role:
        n_att, n_ev = min(n_att, lo.max_per_role), min(n_ev, lo.max_per_role)
    chosen = [
        np.sort(rng.choice(p, n, replace=False)) for p, n in zip(pick, (n_att, n_att, n_ev, n_ev))
    ]
    return np.concatenate(chosen)


def label_only_signals(
    ctx: RunContext, sig: dict, lo: LabelOnlySettings, out_dir: Path
) -> tuple[dict, dict, float]:
    """Boundary distances of the picked rows: ``(signals with boundary_distance, info, seconds)``."""
    sel = pick_rows(sig, lo)
    rows = [ctx.rows[i] for i in sig["index"][sel]]
    x = ctx.images(rows).to(ctx.device)
    hsj = lo.search_options()
    dist, secs = boundary_distances(ctx.model(), x, len(ctx.class_names), method=lo.method, **hsj)
    lsig = {k: sig[k][sel] for k in (*META_FIELDS, "index", "label", "pred")}
    lsig.update(
        boundary_distance=dist["distance"], queries=dist["queries"], hsj_success=dist["success"]
    )
    save_signals(out_dir / "distances.npz", lsig)
    info = {
        "method": lo.method,
        **hsj,
        "n_attack": int((lsig["set"] == "attack").sum()),
        "n_eval": int((lsig["set"] == "eval").sum()),
        "queries_mean": float(dist["queries"].mean()),
        "queries_max": int(dist["queries"].max()),
        "hsj_success_rate": float(np.mean(dist["success"])),
        "distance_seconds": secs,
        "distances": str(out_dir / "distances.npz"),
    }
    return lsig, info, secs
