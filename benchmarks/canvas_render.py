"""Canvas rendering: the vectorised renderer against a naive per-box Python loop.

    python benchmarks/canvas_render.py [--n 256] [--boxes 200] [--size 300] [--device cpu] [--full]

Both draw the same predictions (``--boxes`` per image, the audit's default cap of 200, NMS-off
style: many overlapping boxes of log-uniform sizes, 2% to 60% of the image) on ``--size`` canvases
with the same pixel rule; the script checks that they agree, then prints canvases per second for
each and the ratio (goal: >= 50x). The naive loop (one numpy slice-add per box) always runs on the
CPU, single-threaded; the vectorised renderer on ``--device`` (on the CPU with ``--threads``,
default 1, so that the CPU figure is per core). ``--full``: 1024 canvases per batch, 128 drawn by
the naive loop (the default sizes already are the audit's: 200 boxes, 300 px). Writes
``benchmarks/results/canvas_render.json``.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # run as a script: the repository root is importable

from attacks.detection.canvas import render_canvas, render_naive  # noqa: E402
from benchmarks.common import add_common_args, apply_threads, sync, write_result  # noqa: E402


def predictions(n: int, k: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(boxes (n, k, 4) normalised, scores (n, k) sorted descending, n_boxes (n,) = k)."""
    rng = np.random.default_rng(seed)
    centre = rng.uniform(0.1, 0.9, (n, 1, 2)) + rng.normal(0, 0.15, (n, k, 2))
    side = np.exp(rng.uniform(np.log(0.02), np.log(0.6), (n, k, 2)))
    boxes = np.clip(np.concatenate([centre - side / 2, centre + side / 2], -1), 0, 1)
    scores = -np.sort(-rng.beta(0.5, 2.0, (n, k)), axis=1)
    return boxes.astype(np.float32), scores.astype(np.float32), np.full(n, k)


def bench(
    n: int, k: int, size: int, style: str, rescale: bool, device: str, n_naive: int, repeats: int
) -> dict:
    boxes, scores, nb = predictions(n, k)
    tb, ts, tn = (torch.as_tensor(a, device=device) for a in (boxes, scores, nb))
    render_canvas(tb, ts, tn, size, style, rescale)  # warm-up
    sync(device)
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        fast = render_canvas(tb, ts, tn, size, style, rescale)
        sync(device)
        best = min(best, time.perf_counter() - t)
    fast_rate = n / best
    m = min(n, n_naive)
    best_naive = float("inf")
    for _ in range(repeats):  # best of `repeats` for both, so a busy machine hurts neither more
        t = time.perf_counter()
        slow = render_naive(boxes[:m], scores[:m], nb[:m], size, style, rescale)
        best_naive = min(best_naive, time.perf_counter() - t)
    naive_rate = m / best_naive
    err = float(np.abs(fast[:m].cpu().numpy() - slow).max())
    return {
        "box_style": style,
        "rescale": rescale,
        "boxes_per_image": k,
        "canvas_size": size,
        "vectorised_canvases_per_s": fast_rate,
        "naive_canvases_per_s": naive_rate,
        "ratio": fast_rate / naive_rate,
        "max_abs_diff": err,
    }


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n", type=int, default=None, help="canvases per vectorised batch (256)")
    ap.add_argument("--boxes", type=int, nargs="+", default=[200, 1000], help="boxes per image")
    ap.add_argument("--size", type=int, default=300)
    ap.add_argument(
        "--n_naive", type=int, default=None, help="canvases drawn by the naive loop (32)"
    )
    ap.add_argument("--repeats", type=int, default=5)
    # --threads default 1: a per-core comparison with the single-threaded naive loop
    add_common_args(ap, threads=1)
    a = ap.parse_args(argv)
    a.n = a.n or (1024 if a.full else 256)
    a.n_naive = a.n_naive or (128 if a.full else 32)
    threads = apply_threads(a.threads)
    rows = []
    for k in a.boxes:
        for style, rescale in (("original", False), ("uniform", True)):
            r = bench(a.n, k, a.size, style, rescale, a.device, a.n_naive, a.repeats)
            rows.append(r)
            print(
                f"{k:5d} boxes, {style:8s} SR={int(rescale)}: vectorised "
                f"{r['vectorised_canvases_per_s']:9.0f} canvases/s, naive loop "
                f"{r['naive_canvases_per_s']:7.0f} canvases/s, ratio {r['ratio']:6.1f}x "
                f"(goal 50x; max |diff| {r['max_abs_diff']:.1e})"
            )
    headline = rows[0]  # the audit's default: 200 boxes, original size
    out = a.out or ROOT / "benchmarks" / "results" / "canvas_render.json"
    result = write_result(
        "canvas_render_speedup_vs_naive_loop",
        round(headline["ratio"], 2),
        "x (vectorised canvases/s / naive per-box loop canvases/s; 200 boxes, 300 px, original)",
        ">= 50",
        rows,
        argv,
        out,
        threads=threads,
        device=a.device,
    )
    print(f"headline ratio {headline['ratio']:.1f}x (goal >= 50x)")
    return result


if __name__ == "__main__":
    main()
