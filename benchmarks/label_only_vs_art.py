"""Label-only boundary distance: our batched torch HopSkipJump against ART's reference.

    python benchmarks/label_only_vs_art.py [--n 100] [--device cpu]

Same small model (a 3-layer CNN trained to overfit the synthetic whales at 32 px), same samples
(``--n`` evaluation samples: half training photos = members, half photos of individuals the model
never saw = non-members, plus a separate calibration set for the thresholds), same HopSkipJump
settings (``max_iter``, ``init_eval``, ``max_eval``, ``init_size``) for both. Prints the time per
sample of each, their ratio (goal: ours >= 20x faster), the decision agreement (each side's
threshold is fitted on the calibration set only) and each AUC; writes
``benchmarks/results/label_only_vs_art.json``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from attacks.label_only import art_distances, hsj_distances  # noqa: E402
from attacks.metrics import auc, best_threshold  # noqa: E402


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
    from attacks.training import RunContext  # noqa: F401  (keeps imports consistent)
    from datamodules.images import ManifestDataset, eval_transform
    from datamodules.synthetic_whales import SyntheticWhales
    from datamodules.whale import WhaleDataModule

    torch.manual_seed(seed)
    dm = WhaleDataModule(
        format="synthetic",
        image_size=size,
        synthetic=SyntheticWhales(
            n_individuals=30, encounters_per_individual=6, photos_per_encounter=4, image_size=64
        ),
        verify_images=False,
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


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=100, help="evaluation samples (half members)")
    ap.add_argument("--n_cal", type=int, default=40, help="calibration samples (half members)")
    ap.add_argument("--max_iter", type=int, default=10)
    ap.add_argument("--init_eval", type=int, default=20)
    ap.add_argument("--max_eval", type=int, default=200)
    ap.add_argument("--init_size", type=int, default=50)
    ap.add_argument("--device", default="cpu")
    ap.add_argument(
        "--out", default=str(ROOT / "benchmarks" / "results" / "label_only_vs_art.json")
    )
    a = ap.parse_args(argv)
    model, x_cal, m_cal, x_ev, m_ev, n_cls, train_acc = whale_data(a.n, a.n_cal)
    model.to(a.device)
    hsj = dict(
        max_iter=a.max_iter, init_eval=a.init_eval, max_eval=a.max_eval, init_size=a.init_size
    )
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
    machine = f"{platform.machine()} {platform.processor() or ''} {torch.get_num_threads()} threads"
    if a.device.startswith("cuda"):
        machine += " " + torch.cuda.get_device_name(0)
    result = {
        "name": "label_only_speedup_vs_art",
        "value": r["speedup"],
        "unit": "x (ART seconds per sample / ours)",
        "goal": ">= 20",
        "machine": machine.strip(),
        "device": a.device,
        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "command": "python benchmarks/label_only_vs_art.py " + " ".join(argv or sys.argv[1:]),
        "details": r,
    }
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps(result, indent=2))
    print(f"wrote {a.out}")
    return result


if __name__ == "__main__":
    main()
