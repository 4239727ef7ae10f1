"""Exact cosine kNN of survey photos against a catalog gallery, in blocks, beside the full
similarity matrix: time and peak memory side by side in one run.

    python benchmarks/knn_gallery.py --full   # 51,000 gallery photos x 10,000 queries, 512-d
    python benchmarks/knn_gallery.py          # the same gallery, 1,000 queries (run_all.py)

Random unit embeddings (seeded) stand in for a catalog of Happywhale's size (51,033 photos) and a
survey of 10,000 photos. :func:`attacks.knn.cosine_topk` scores ``--block`` queries at a time;
the full matrix (``queries x gallery`` float64, then the same top-k) is measured on the same data
when it fits in ``--full_limit_gb``. The two sides run in turn ``--reps`` times untraced (the
figures are medians); peak memory is the tracemalloc peak of one more run of each (numpy's
arrays are traced), without the inputs. Also printed: the rate in similarity entries per second, and the
gallery x queries size at which one exact search would take ``--budget_s`` on this machine, the
point past which an approximate index (e.g. FAISS) would be needed.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tracemalloc
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # run as a script: the repository root is importable

from attacks.knn import cosine_topk, unit_rows  # noqa: E402
from benchmarks.common import add_common_args, alternate, write_result  # noqa: E402


def alternated(sides: dict, reps: int) -> dict[str, dict]:
    """Per side ``{"out", "seconds" (median), "runs", "peak_mib"}``: the callables of ``sides``
    timed in turn ``reps`` times each without tracing (the first use of fresh memory is slow on
    some virtual machines: a single run can be several times its repeat), then once more under
    tracemalloc for the peak allocated while it ran (tracing slows allocations down)."""
    runs, outs = alternate(sides, reps, warm_up=False)
    res = {}
    for name, fn in sides.items():
        tracemalloc.start()
        fn()
        peak = tracemalloc.get_traced_memory()[1] / 2**20
        tracemalloc.stop()
        res[name] = {"out": outs[name], "seconds": statistics.median(runs[name])}
        res[name] |= {"runs": runs[name], "peak_mib": peak}
    return res


def full_topk(q: np.ndarray, g: np.ndarray, k: int) -> np.ndarray:
    """The reference: the whole similarity matrix, then each row's top ``k`` (stable order)."""
    s = unit_rows(q) @ unit_rows(g).T
    part = np.argpartition(-s, k - 1, axis=1)[:, :k]
    vals = np.take_along_axis(s, part, axis=1)
    return np.take_along_axis(part, np.lexsort((part, -vals), axis=1), axis=1)


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--gallery", type=int, default=51000, help="catalog photos")
    ap.add_argument(
        "--queries", type=int, default=None, help="survey photos (1,000; --full 10,000)"
    )
    ap.add_argument("--dim", type=int, default=512, help="embedding size")
    ap.add_argument("--k", type=int, default=20, help="neighbours per query")
    ap.add_argument("--block", type=int, default=1024, help="queries per block")
    ap.add_argument("--full_limit_gb", type=float, default=6.0, help="largest full matrix tried")
    ap.add_argument("--budget_s", type=float, default=600.0, help="the crossover's time budget")
    ap.add_argument("--reps", type=int, default=5, help="timed runs of each side, alternating")
    add_common_args(ap)
    a = ap.parse_args(argv)
    a.queries = a.queries or (10000 if a.full else 1000)
    rng = np.random.default_rng(0)
    g = rng.standard_normal((a.gallery, a.dim)).astype(np.float32)
    q = rng.standard_normal((a.queries, a.dim)).astype(np.float32)
    cosine_topk(q[:64], g[:4096], a.k)  # warm-up: BLAS threads, first allocations
    entries = a.gallery * a.queries
    full_gb = entries * 8 / 2**30
    sides = {"blocked": lambda: cosine_topk(q, g, a.k, a.block)[1]}
    if full_gb <= a.full_limit_gb:
        sides["full"] = lambda: full_topk(q, g, a.k)
    m = alternated(sides, a.reps)
    sec, peak = m["blocked"]["seconds"], m["blocked"]["peak_mib"]
    r = {"gallery": a.gallery, "queries": a.queries, "dim": a.dim, "k": a.k, "block": a.block}
    r |= {"blocked_s": sec, "blocked_runs_s": m["blocked"]["runs"], "blocked_peak_mib": peak}
    r |= {"ms_per_query": 1e3 * sec / a.queries, "reps": a.reps}
    r["entries_per_s"] = entries / sec
    r["crossover_gallery_x_queries"] = r["entries_per_s"] * a.budget_s
    if "full" in m:
        full = m["full"]
        r |= {
            "full_s": full["seconds"],
            "full_runs_s": full["runs"],
            "full_peak_mib": full["peak_mib"],
        }
        r["same_neighbours"] = bool((full["out"] == m["blocked"]["out"]).all())
        r["time_ratio_blocked_over_full"] = sec / full["seconds"]
        r["memory_ratio_blocked_over_full"] = peak / full["peak_mib"]
    else:
        r["full_skipped"] = f"the full matrix would take {full_gb:.1f} GiB"
    print(
        f"blocked: {sec:.2f} s ({r['ms_per_query']:.3f} ms per query), peak {peak:.0f} MiB; "
        + (
            f"full matrix: {r['full_s']:.2f} s, peak {r['full_peak_mib']:.0f} MiB; ratios time "
            f"{r['time_ratio_blocked_over_full']:.2f}, memory "
            f"{r['memory_ratio_blocked_over_full']:.3f}; same neighbours: {r['same_neighbours']}"
            if "full_s" in r
            else r["full_skipped"]
        )
    )
    print(
        f"{r['entries_per_s']:.3g} similarities/s: an exact search past "
        f"{r['crossover_gallery_x_queries']:.3g} gallery x query pairs takes over {a.budget_s:.0f} s"
    )
    return write_result(
        "knn_gallery",
        r["ms_per_query"],
        f"ms per query (exact cosine top-{a.k}, {a.gallery} gallery photos, blocks of {a.block})",
        "51,000 gallery x 10,000 queries within 2 cores' memory",
        r,
        argv,
        a.out,
        threads=a.threads,
    )


if __name__ == "__main__":
    main()
