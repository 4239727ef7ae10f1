"""Label-only boundary distance: our batched torch HopSkipJump against ART's reference.

    python benchmarks/label_only_vs_art.py [--n 100] [--device cpu] [--threads 2] [--full]

Same small model (a 3-layer CNN trained to overfit the synthetic whales at 32 px), same samples
(``--n`` evaluation samples: half training photos = members, half photos of individuals the model
never saw = non-members, plus a separate calibration set for the thresholds), same HopSkipJump
settings (``max_iter``, ``init_eval``, ``max_eval``, ``init_size``) for both. Prints the time per
sample of each, their ratio (goal: ours >= 20x faster), the decision agreement (each side's
threshold is fitted on the calibration set only) and each AUC; writes
``benchmarks/results/label_only_vs_art.json``.

Default query budget: ``max_iter`` 10, ``init_eval`` 20, ``max_eval`` 200, ``init_size`` 50 (about
600 queries per sample, a few minutes on 2 CPU cores, mostly ART's). ``--full``: the real attack's
budget (``configs/attack/attack.yaml``, ART's defaults: 50, 100, 10000, 100; about 40x the queries, so
hours on a CPU for ART's side).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # run as a script: the repository root is importable

from attacks.metrics import auc, best_threshold  # noqa: E402
from benchmarks.common import add_common_args, apply_threads, sync, write_result  # noqa: E402
from experiments.side_models.boundary_art import art_classifier, art_distances  # noqa: E402
from experiments.side_models.boundary_search import hsj_distances  # noqa: E402


def small_cnn(n_classes: int) -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(3, 16, 3, 2, 1),
        nn.ReLU(),
        nn.Conv2d(16, 32, 3, 2, 1),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(4),
        nn.Flatten(),
        nn.Linear(32 * 16, n_classes),
    )


def floor_qps(
    model: nn.Module, x: torch.Tensor, batch: int, n_batches: int = 8, channels_last: bool = False
) -> tuple[float, float]:
    """Forward-pass floor: images per second of ``argmax(model(x))`` on full batches of
    ``batch`` images (``x`` repeated), under ``torch.inference_mode``, in contiguous or
    channels-last memory order; per wall second and per CPU second of this process."""
    xb = x.repeat((batch + len(x) - 1) // len(x), *[1] * (x.dim() - 1))[:batch].contiguous()
    if channels_last and xb.dim() == 4:
        xb = xb.contiguous(memory_format=torch.channels_last)
    with torch.inference_mode():
        model(xb).argmax(1)  # warm-up
        sync(xb.device)
        t0, c0 = time.perf_counter(), time.process_time()
        for _ in range(n_batches):
            model(xb).argmax(1)
        sync(xb.device)
        n = batch * n_batches
        return n / (time.perf_counter() - t0), n / max(time.process_time() - c0, 1e-9)


def best_floor(model: nn.Module, x: torch.Tensor, batch: int) -> tuple[float, float, float]:
    """(wall, CPU) images per second of the faster memory order, and the contiguous wall one."""
    plain = floor_qps(model, x, batch)
    last = floor_qps(model, x, batch, channels_last=True)
    best = max(plain, last)
    return best[0], best[1], plain[0]


def ours_vs_floor(model: nn.Module, x: torch.Tensor, hsj: dict, reps: int, seed: int) -> dict:
    """Our search's queries per second against the forward floor at its chunk size, measured
    alternately ``reps`` times in one process (each search between two floor measurements, so
    both see the same machine load); the median ratio and its range, plus the last run's
    distances. The floor is the faster of the contiguous and channels-last forward passes of
    the same model and batch size. ``cpu_ratio_to_floor`` divides CPU-time rates instead of
    wall-time ones: on a machine shared with other jobs it moves much less than the wall one."""
    chunk = hsj.get("chunk", 1024)
    hsj_distances(model, x[:2], **hsj, seed=seed)  # warm-up (allocator, kernels)
    f = {k: [] for k in ("ratio", "cpu_ratio", "qps", "floor", "plain", "secs")}
    before = best_floor(model, x, chunk)
    for _ in range(reps):
        sync(x.device)
        t0, c0 = time.perf_counter(), time.process_time()
        ours = hsj_distances(model, x, **hsj, seed=seed)
        sync(x.device)
        secs, cpu = time.perf_counter() - t0, max(time.process_time() - c0, 1e-9)
        after = best_floor(model, x, chunk)
        q = float(ours["queries"].sum())
        floor, cpu_floor = (before[0] + after[0]) / 2, (before[1] + after[1]) / 2
        f["secs"].append(secs)
        f["qps"].append(q / secs)
        f["floor"].append(floor)
        f["plain"].append((before[2] + after[2]) / 2)
        f["ratio"].append(q / secs / floor)
        f["cpu_ratio"].append(q / cpu / cpu_floor)
        before = after
    return {
        "result": ours,
        "seconds": float(np.median(f["secs"])),
        "ratio_to_floor": float(np.median(f["ratio"])),
        "ratio_to_floor_range": [float(min(f["ratio"])), float(max(f["ratio"]))],
        "cpu_ratio_to_floor": float(np.median(f["cpu_ratio"])),
        "cpu_ratio_to_floor_range": [float(min(f["cpu_ratio"])), float(max(f["cpu_ratio"]))],
        "ours_qps": float(np.median(f["qps"])),
        "floor_qps": float(np.median(f["floor"])),
        "floor_qps_contiguous": float(np.median(f["plain"])),
        "chunk": chunk,
        "reps": reps,
    }


def art_call_overhead(model: nn.Module, x: torch.Tensor, n_classes: int, n: int = 200) -> dict:
    """Seconds per single-image call through ART's ``PyTorchClassifier.predict`` (the call
    HopSkipJump makes) against the same model's plain single-image forward."""
    clf, _ = art_classifier(model, tuple(x.shape[1:]), n_classes)
    x1 = x[:1].detach().cpu()
    x1n = x1.numpy().astype(np.float32)
    dev = next(model.parameters()).device
    clf.predict(x1n, batch_size=64)
    t0 = time.perf_counter()
    for _ in range(n):
        clf.predict(x1n, batch_size=64)
    t_art = (time.perf_counter() - t0) / n
    with torch.inference_mode():
        model(x1.to(dev))
        t0 = time.perf_counter()
        for _ in range(n):
            model(x1.to(dev)).argmax(1).cpu()
        t_raw = (time.perf_counter() - t0) / n
    return {"art_predict_call_s": t_art, "raw_single_forward_s": t_raw}


def compare(
    model: nn.Module,
    x_cal: torch.Tensor,
    m_cal: np.ndarray,
    x_ev: torch.Tensor,
    m_ev: np.ndarray,
    n_classes: int,
    hsj: dict,
    seed: int = 0,
    reps: int = 1,
) -> dict:
    """Distances of both estimators on calibration + evaluation samples, thresholds fitted on
    the calibration part only; returns timings, queries, agreement, AUCs, our search against
    the forward floor (``reps`` alternations) and ART's per-call overhead."""
    x = torch.cat([x_cal, x_ev])
    n_cal = len(x_cal)
    ours_x = x.to(next(model.parameters()).device)
    fl = ours_vs_floor(model, ours_x, hsj, reps, seed)
    ours, t_ours = fl.pop("result"), fl["seconds"]
    calls = art_call_overhead(model, x, n_classes)  # also imports ART before its timing
    t0 = time.perf_counter()
    art_hsj = {k: v for k, v in hsj.items() if k in SMALL_HSJ}  # ART has no chunk setting
    art = art_distances(model, x, n_classes, **art_hsj, seed=seed)
    t_art = time.perf_counter() - t0
    out = {"n_calibration": n_cal, "n_eval": len(x_ev), **hsj, "floor": fl}
    dec = {}
    for name, r in (("ours", ours), ("art", art)):
        tau, _ = best_threshold(r["distance"][:n_cal], m_cal)
        d_ev = r["distance"][n_cal:]
        dec[name] = d_ev >= tau
        out[f"{name}_auc"] = auc(d_ev, m_ev)
        out[f"{name}_acc"] = float((dec[name] == m_ev.astype(bool)).mean())
        out[f"{name}_threshold"] = tau
        out[f"{name}_queries_mean"] = float(r["queries"].mean())
        out[f"{name}_seconds_per_sample"] = (t_ours if name == "ours" else t_art) / len(x)
    out["agreement"] = float((dec["ours"] == dec["art"]).mean())
    out["auc_diff"] = abs(out["ours_auc"] - out["art_auc"])
    out["distance_corr"] = float(np.corrcoef(ours["distance"], art["distance"])[0, 1])
    out["speedup"] = out["art_seconds_per_sample"] / out["ours_seconds_per_sample"]
    out["art_overhead"] = art_overhead_figures(art, out, calls, fl["floor_qps"])
    return out


def art_overhead_figures(art: dict, out: dict, ov: dict, floor: float) -> dict:
    """Where ART's time per sample goes (inside the model vs ART's own code), and the ratio
    our search would reach if it ran exactly at the forward floor (``ceiling_speedup``)."""
    per = out["art_seconds_per_sample"]
    calls = float(art["calls"].mean())
    ov = dict(ov)
    ov["art_calls_per_sample"] = calls
    ov["art_queries_per_call"] = out["art_queries_mean"] / max(calls, 1.0)
    ov["art_model_seconds_per_sample"] = float(art["model_seconds"].mean())
    ov["art_model_time_share"] = ov["art_model_seconds_per_sample"] / per
    ov["art_seconds_per_call"] = per / max(calls, 1.0)
    ov["ours_at_floor_seconds_per_sample"] = out["ours_queries_mean"] / floor
    ov["ceiling_speedup"] = per / ov["ours_at_floor_seconds_per_sample"]
    return ov


def whale_data(n_eval: int, n_cal: int, size: int = 32, seed: int = 0):
    """Train the small CNN on synthetic whales; return model and member/non-member tensors."""
    from datamodules.catalogs import SyntheticWhalesReader
    from datamodules.images import ManifestDataset, eval_transform
    from datamodules.whale import LoaderSettings, WhaleDataModule

    torch.manual_seed(seed)
    dm = WhaleDataModule(
        SyntheticWhalesReader(
            n_individuals=30, encounters_per_individual=6, photos_per_encounter=4, image_size=64
        ),
        loader=LoaderSettings(image_size=size, verify_images=False),
    )
    rows = dm.rows()
    ds = ManifestDataset(rows, dm.roots, eval_transform(size))
    xs = torch.stack([ds[i][0] for i in range(len(ds))])
    lab = torch.tensor([r["label"] for r in rows])
    split = np.array([r["split"] for r in rows])
    tr = np.flatnonzero(split == "train")
    model = small_cnn(dm.num_classes)
    opt = torch.optim.Adam(model.parameters(), 1e-3)
    for _ in range(150):  # full-batch, overfits the training photos
        opt.zero_grad()
        nn.functional.cross_entropy(model(xs[tr]), lab[tr]).backward()
        opt.step()
    model.eval()
    train_acc = float((model(xs[tr]).argmax(1) == lab[tr]).float().mean())
    rng = np.random.default_rng(seed)
    # photo-level membership: training photos vs photos of never-seen individuals
    mem = rng.permutation(tr)
    non = rng.permutation(np.flatnonzero(np.isin(split, ["attack", "eval"])))
    h_ev, h_cal = n_eval // 2, n_cal // 2
    if len(mem) < h_ev + h_cal or len(non) < h_ev + h_cal:
        raise SystemExit(f"not enough samples: {len(mem)} members, {len(non)} non-members")
    cal = np.concatenate([mem[:h_cal], non[:h_cal]])
    ev = np.concatenate([mem[h_cal : h_cal + h_ev], non[h_cal : h_cal + h_ev]])
    m_cal = np.r_[np.ones(h_cal), np.zeros(h_cal)].astype(np.int64)
    m_ev = np.r_[np.ones(h_ev), np.zeros(h_ev)].astype(np.int64)
    return model, xs[cal], m_cal, xs[ev], m_ev, dm.num_classes, train_acc


#: HopSkipJump settings: the default (small) budget and the real attack's (``--full``).
SMALL_HSJ = {"max_iter": 10, "init_eval": 20, "max_eval": 200, "init_size": 50}
FULL_HSJ = {"max_iter": 50, "init_eval": 100, "max_eval": 10000, "init_size": 100}


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=100, help="evaluation samples (half members)")
    ap.add_argument("--n_cal", type=int, default=40, help="calibration samples (half members)")
    ap.add_argument("--reps", type=int, default=5, help="alternations of floor and search")
    ap.add_argument("--no-art", action="store_true", help="only our search against the floor")
    for key in SMALL_HSJ:
        ap.add_argument(
            f"--{key}",
            type=int,
            default=None,
            help=f"HopSkipJump {key} (default {SMALL_HSJ[key]}; --full: {FULL_HSJ[key]})",
        )
    # --threads 0 keeps torch's default (the script's behaviour before --threads existed)
    add_common_args(ap, threads=0)
    a = ap.parse_args(argv)
    threads = apply_threads(a.threads)
    base = FULL_HSJ if a.full else SMALL_HSJ
    hsj = {k: getattr(a, k) if getattr(a, k) is not None else v for k, v in base.items()}
    model, x_cal, m_cal, x_ev, m_ev, n_cls, train_acc = whale_data(a.n, a.n_cal)
    model.to(a.device)
    out = Path(a.out or ROOT / "benchmarks" / "results" / "label_only_vs_art.json")
    kw = {"threads": threads, "device": a.device}
    if a.no_art:
        x = torch.cat([x_cal, x_ev]).to(a.device)
        fl = ours_vs_floor(model, x, hsj, a.reps, 0)
        fl.pop("result")
        return write_floor(fl, {**hsj, "floor": fl}, argv, out, kw)
    r = compare(model, x_cal, m_cal, x_ev, m_ev, n_cls, hsj, reps=a.reps)
    r["target_train_acc"] = train_acc
    report(r)
    write_floor(r["floor"], r, argv, out, kw)
    return write_result(
        "label_only_speedup_vs_art",
        r["speedup"],
        "x (ART seconds per sample / ours)",
        ">= 20",
        r,
        argv,
        out,
        **kw,
    )


def write_floor(fl: dict, details: dict, argv, out: Path, kw: dict) -> dict:
    """``label_only_vs_floor.json`` next to ``out``: our queries per second / the floor's."""
    print(
        f"our search {fl['ours_qps']:.0f} queries/s, forward floor {fl['floor_qps']:.0f} images/s "
        f"at batch {fl['chunk']}: {fl['ratio_to_floor']:.2f} of the floor (goal >= 0.8; range "
        f"{fl['ratio_to_floor_range'][0]:.2f}-{fl['ratio_to_floor_range'][1]:.2f}, {fl['reps']} runs); "
        f"per CPU second {fl['cpu_ratio_to_floor']:.2f} (range "
        f"{fl['cpu_ratio_to_floor_range'][0]:.2f}-{fl['cpu_ratio_to_floor_range'][1]:.2f})"
    )
    return write_result(
        "label_only_vs_forward_floor",
        fl["ratio_to_floor"],
        "x (our search's queries/s / batched forward images/s, same model and batch)",
        ">= 0.8",
        details,
        argv,
        out.with_name(FLOOR_RESULT) if out.name != FLOOR_RESULT else out,
        **kw,
    )


#: the second result file, next to the first
FLOOR_RESULT = "label_only_vs_floor.json"


def report(r: dict) -> None:
    """Print the comparison's figures."""
    ov = r["art_overhead"]
    print(
        f"time per sample: ours {r['ours_seconds_per_sample'] * 1e3:.1f} ms, "
        f"ART {r['art_seconds_per_sample'] * 1e3:.1f} ms, ratio {r['speedup']:.1f}x (goal 20x)"
    )
    print(f"queries per sample: ours {r['ours_queries_mean']:.0f}, ART {r['art_queries_mean']:.0f}")
    print(
        f"ART: {ov['art_calls_per_sample']:.0f} calls per sample ({ov['art_queries_per_call']:.1f} "
        f"images each), {ov['art_seconds_per_call'] * 1e6:.0f} us of ART time per call, "
        f"{ov['art_model_time_share']:.0%} of it inside the model; a one-image predict call "
        f"{ov['art_predict_call_s'] * 1e6:.0f} us vs a plain one-image forward "
        f"{ov['raw_single_forward_s'] * 1e6:.0f} us; ours at exactly the floor would be "
        f"{ov['ceiling_speedup']:.1f}x faster than ART"
    )
    print(
        f"decision agreement {r['agreement']:.3f} (goal >= 0.90); AUC ours {r['ours_auc']:.3f}, "
        f"ART {r['art_auc']:.3f}, |diff| {r['auc_diff']:.3f} (goal <= 0.03); distance corr "
        f"{r['distance_corr']:.3f}"
    )


if __name__ == "__main__":
    main()
