"""The label-only attack's signal: HopSkipJump boundary distances from queries to the target.

The search itself lives in :mod:`experiments.side_models.boundary_search`; this module picks the rows, loads
their images, runs it and saves ``<run>/attacks/label_only/distances.npz``. The attack
(:class:`attacks.label_only.LabelOnlyAttack`) only thresholds the saved distances.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from attacks.label_only import query_rows
from attacks.signals import META_FIELDS, save_signals
from experiments.run.folder import RunContext
from experiments.settings.attack import LabelOnlySettings
from experiments.side_models.boundary_search import hsj_distances

if TYPE_CHECKING:
    import torch


def label_only_signals(
    ctx: RunContext, sig: dict, lo: LabelOnlySettings, out_dir: Path
) -> tuple[dict, dict, float]:
    """Boundary distances of the picked rows: ``(signals with boundary_distance, info, seconds)``."""
    sel = query_rows(sig, lo.seed, lo.max_per_role)
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


def boundary_distances(
    model: torch.nn.Module,
    x: torch.Tensor,
    nb_classes: int,
    *,
    method: str = "ours",
    **hsj,
) -> tuple[dict[str, np.ndarray], float]:
    """Distances by ``method`` (``ours`` or ``art``) and the wall time in seconds."""
    t0 = time.perf_counter()
    if method == "ours":
        out = hsj_distances(model, x, **hsj)
    elif method == "art":
        from experiments.side_models.boundary_art import art_distances

        hsj.pop("max_queries", None)
        hsj.pop("chunk", None)
        out = art_distances(model, x, nb_classes, **hsj)
    else:
        raise ValueError(f"label_only method={method!r}: choose 'ours' or 'art'")
    return out, time.perf_counter() - t0
