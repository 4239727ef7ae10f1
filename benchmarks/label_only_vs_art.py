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
budget (``configs/attack.yaml``, ART's defaults: 50, 100, 10000, 100; about 40x the queries, so
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
from benchmarks.common import add_common_args, apply_threads, write_result  # noqa: E402
from lightning_modules.boundary import art_distances, hsj_distances  # noqa: E402


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


def compare(
    model: nn.Module,
    x_cal: torch.Tensor,
    m_cal: np.ndarray,
    x_ev: torch.Tensor,
    m_ev: np.ndarray,
    n_classes: int,
    hsj: dict,
    seed: int = 0,
) -> dict:
    """Distances of both estimators on calibration + evaluation samples, thresholds fitted on
    the calibration part only; returns timings, queries, agreement and AUCs."""
    x = torch.cat([x_cal, x_ev])
    n_cal = len(x_cal)
    ours_x = x.to(next(model.parameters()).device)
    hsj_distances(model, ours_x[:2], **hsj, seed=seed)  # warm-up (allocator, kernels)
    t0 = time.perf_counter()
    ours = hsj_distances(model, ours_x, **hsj, seed=seed)
    t_ours = time.perf_counter() - t0
    t0 = time.perf_counter()
    art = art_distances(model, x, n_classes, **hsj, seed=seed)
    t_art = time.perf_counter() - t0
    out = {"n_calibration": n_cal, "n_eval": len(x_ev), **hsj}
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
    return out


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
    r = compare(model, x_cal, m_cal, x_ev, m_ev, n_cls, hsj)
    r["target_train_acc"] = train_acc
    print(
        f"time per sample: ours {r['ours_seconds_per_sample'] * 1e3:.1f} ms, "
        f"ART {r['art_seconds_per_sample'] * 1e3:.1f} ms, ratio {r['speedup']:.1f}x (goal 20x)"
    )
    print(f"queries per sample: ours {r['ours_queries_mean']:.0f}, ART {r['art_queries_mean']:.0f}")
    print(
        f"decision agreement {r['agreement']:.3f} (goal >= 0.90); AUC ours {r['ours_auc']:.3f}, "
        f"ART {r['art_auc']:.3f}, |diff| {r['auc_diff']:.3f} (goal <= 0.03); distance corr "
        f"{r['distance_corr']:.3f}"
    )
    out = a.out or ROOT / "benchmarks" / "results" / "label_only_vs_art.json"
    result = write_result(
        "label_only_speedup_vs_art",
        r["speedup"],
        "x (ART seconds per sample / ours)",
        ">= 20",
        r,
        argv,
        out,
        threads=threads,
        device=a.device,
    )
    return result


if __name__ == "__main__":
    main()
