"""Canvas rendering: the vectorised renderer against a naive per-box Python loop.

    python benchmarks/canvas_render.py [--n 256] [--boxes 200] [--size 300] [--device cpu]

Both draw the same predictions (``--boxes`` per image, the audit's default cap of 200, NMS-off
style: many overlapping boxes of log-uniform sizes, 2% to 60% of the image) on ``--size`` canvases
with the same pixel rule; the script checks that they agree, then prints canvases per second for
each and the ratio (goal: >= 50x). The naive loop (one numpy slice-add per box) always runs on the
CPU, single-threaded; the vectorised renderer on ``--device`` (on the CPU with ``--threads``,
default 1, so that the CPU figure is per core). Writes ``benchmarks/results/canvas_render.json``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from attacks.detection.canvas import render_canvas, render_naive  # noqa: E402


def predictions(n: int, k: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(boxes (n, k, 4) normalised, scores (n, k) sorted descending, n_boxes (n,) = k)."""
    rng = np.random.default_rng(seed)
    centre = rng.uniform(0.1, 0.9, (n, 1, 2)) + rng.normal(0, 0.15, (n, k, 2))
    side = np.exp(rng.uniform(np.log(0.02), np.log(0.6), (n, k, 2)))
    boxes = np.clip(np.concatenate([centre - side / 2, centre + side / 2], -1), 0, 1)
    scores = -np.sort(-rng.beta(0.5, 2.0, (n, k)), axis=1)
    return boxes.astype(np.float32), scores.astype(np.float32), np.full(n, k)


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def bench(
    n: int, k: int, size: int, style: str, rescale: bool, device: str, n_naive: int, repeats: int
) -> dict:
    boxes, scores, nb = predictions(n, k)
    tb, ts, tn = (torch.as_tensor(a, device=device) for a in (boxes, scores, nb))
    render_canvas(tb, ts, tn, size, style, rescale)  # warm-up
    _sync(device)
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        fast = render_canvas(tb, ts, tn, size, style, rescale)
        _sync(device)
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
    ap.add_argument("--n", type=int, default=256, help="canvases per vectorised batch")
    ap.add_argument("--boxes", type=int, nargs="+", default=[200, 1000], help="boxes per image")
    ap.add_argument("--size", type=int, default=300)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--n_naive", type=int, default=32, help="canvases drawn by the naive loop")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch CPU threads for the vectorised renderer (default 1: a per-core comparison "
        "with the single-threaded naive loop; 0 keeps torch's default)",
    )
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "canvas_render.json"))
    a = ap.parse_args(argv)
    if a.threads > 0:
        torch.set_num_threads(a.threads)
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
    machine = f"{platform.machine()} {platform.processor() or ''} {os.cpu_count()} cores, {torch.get_num_threads()} threads"
    if a.device.startswith("cuda"):
        machine += " " + torch.cuda.get_device_name(0)
    result = {
        "name": "canvas_render_speedup_vs_naive_loop",
        "value": round(headline["ratio"], 2),
        "unit": "x (vectorised canvases/s / naive per-box loop canvases/s; 200 boxes, 300 px, original)",
        "goal": ">= 50",
        "machine": machine.strip(),
        "device": a.device,
        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "command": "python benchmarks/canvas_render.py "
        + " ".join(argv if argv is not None else sys.argv[1:]),
        "details": rows,
    }
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps(result, indent=2))
    print(f"headline ratio {headline['ratio']:.1f}x (goal >= 50x); wrote {a.out}")
    return result


if __name__ == "__main__":
    main()
