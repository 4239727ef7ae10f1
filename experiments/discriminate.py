"""``python cli.py discriminate --run <run> --images <folder> [--attack yeom]``: the ecologist's
end of the pipeline (whale paper, Figure 1): is each new photo a known individual or a new one?

For every file under ``--images`` (recursively) the CSV gets one row:

* ``status``: ``ok``, ``not_an_image`` (by extension) or ``corrupt`` (an image that does not
  decode); only ``ok`` rows are scored, and the others are also printed by name;
* ``score`` (higher = known), ``threshold`` (frozen, fitted on the run's attack set),
  ``decision`` ``known`` | ``new``;
* for known photos, ``top1..top5`` catalog identities with ``p1..p5`` softmax probabilities;
* group-level results side by side: ``group``, ``group_size``, ``group_score``,
  ``group_decision``.

Groups (encounters) come from one subfolder per encounter, or from ``--groups file.csv`` with
columns ``image`` (path relative to ``--images``) and ``group``. A group's score is the mean of
its photos' scores against the same threshold (``--aggregate mean``): frames of one encounter are
near-duplicate views of one animal, so averaging cancels per-frame noise (pose, blur) without
letting one odd frame decide, as ``max`` would; ``vote`` (majority of photo decisions) is the
alternative.
"""

from __future__ import annotations

import csv
import sys
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset

from attacks.registry import get
from attacks.signals import balanced, subset
from datamodules.errors import DataError
from datamodules.images import eval_transform, load_rgb
from experiments.config_files import command_parser
from experiments.runs import RunContext, final_signals
from lightning_modules.extraction import extract_arrays

IMAGE_EXT = {".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp", ".gif"}
SIGNAL_ATTACKS = ("yeom", "salem", "baseline_msp", "baseline_nn_cosine")


class _Images(Dataset):
    def __init__(self, paths: list[Path], transform):
        self.paths, self.transform = paths, transform

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int):
        return self.transform(load_rgb(self.paths[i])), torch.tensor(-1), torch.tensor(i)


def scan(folder: Path, skip: set[Path] | None = None) -> tuple[list[Path], dict[Path, str]]:
    """Readable images under ``folder`` and ``{path: status}`` for the rest (sorted paths).

    Hidden files and the paths in ``skip`` (e.g. the groups CSV) are ignored.
    """
    skip = {q.resolve() for q in (skip or set())}
    good, bad = [], {}
    for p in sorted(q for q in folder.rglob("*") if q.is_file()):
        if p.name.startswith(".") or p.resolve() in skip:
            continue
        if p.suffix.lower() not in IMAGE_EXT:
            bad[p] = "not_an_image"
            continue
        try:
            with Image.open(p) as im:
                im.load()
            good.append(p)
        except Exception:  # PIL raises many types for broken files
            bad[p] = "corrupt"
    return good, bad


def groups_for(paths: list[Path], folder: Path, groups_csv: Path | None) -> dict[Path, str]:
    """Group of each photo: from ``groups_csv`` (image, group), else its subfolder, else ''."""
    if groups_csv is not None:
        with Path(groups_csv).open(newline="") as fh:
            rows = list(csv.DictReader(fh))
        if not rows or "image" not in rows[0] or "group" not in rows[0]:
            raise DataError(f"--groups {groups_csv}: needs columns 'image' and 'group'")
        table = {(folder / r["image"]).resolve(): r["group"] for r in rows}
        return {p: table.get(p.resolve(), "") for p in paths}
    return {p: str(p.parent.relative_to(folder)) if p.parent != folder else "" for p in paths}


def fit_attack(ctx: RunContext, name: str, seed: int = 0):
    """The attack ``name`` fitted on the run's balanced attack set."""
    if name not in SIGNAL_ATTACKS:
        raise DataError(f"--attack {name}: choose one of {', '.join(SIGNAL_ATTACKS)}")
    sig, _ = final_signals(ctx)
    return get(name).for_run(sig).fit(balanced(subset(sig, "attack"), seed))


def score_photos(ctx: RunContext, attack, name: str, good: list[Path]) -> tuple[dict, np.ndarray]:
    """Signals (``logits`` ...) and membership scores (N,) of the readable photos ``good``."""
    if not good:
        return {}, np.zeros(0)
    loader = DataLoader(_Images(good, eval_transform(ctx.image_size)), batch_size=64)
    model = ctx.model()
    # only the nearest-neighbour baseline reads embeddings (a second pass through the trunk)
    embed = model.embed if name == "baseline_nn_cosine" else None
    sig = extract_arrays(model, loader, ctx.device, embed=embed)
    return sig, attack.score(sig)


def group_decisions(
    good: list[Path], grp: dict[Path, str], scores: np.ndarray, tau: float, aggregate: str
) -> dict[str, tuple[int, float, bool]]:
    """``{group: (photos, group score, known?)}`` for the photos that belong to a group."""
    known = scores >= tau
    out: dict[str, tuple[int, float, bool]] = {}
    for g in sorted(set(grp.values()) - {""}):
        idx = [i for i, p in enumerate(good) if grp[p] == g]
        gs = float(np.mean(scores[idx]))
        gd = gs >= tau if aggregate == "mean" else known[idx].mean() > 0.5
        out[g] = (len(idx), gs, bool(gd))
    return out


def write_csv(out_path: Path, folder: Path, good, bad, grp, sig, scores, tau, gstats, names):
    """One row per file: decision, top-5 identities for known photos, group results."""
    cols = ["image", "status", "score", "threshold", "decision"]
    cols += [f"{c}{k}" for k in range(1, 6) for c in ("top", "p")]
    cols += ["group", "group_size", "group_score", "group_decision"]
    probs = torch.softmax(torch.as_tensor(sig["logits"]), 1).numpy() if good else np.zeros((0, 1))
    out_path.parent.mkdir(parents=True, exist_ok=True)
    with out_path.open("w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=cols)
        w.writeheader()
        for i, p in enumerate(good):
            known = bool(scores[i] >= tau)
            row = {
                "image": str(p.relative_to(folder)),
                "status": "ok",
                "score": f"{scores[i]:.6g}",
                "threshold": f"{tau:.6g}",
                "decision": "known" if known else "new",
                "group": grp[p],
            }
            if known:
                for k, c in enumerate(np.argsort(-probs[i])[:5], 1):
                    row[f"top{k}"], row[f"p{k}"] = names[c], f"{probs[i, c]:.4f}"
            if grp[p] in gstats:
                n, gs, gd = gstats[grp[p]]
                row.update(
                    group_size=n, group_score=f"{gs:.6g}", group_decision="known" if gd else "new"
                )
            w.writerow(row)
        for p, status in bad.items():
            w.writerow({"image": str(p.relative_to(folder)), "status": status})


def discriminate(
    run: str | Path,
    images: str | Path,
    attack: str = "yeom",
    groups: str | Path | None = None,
    aggregate: str = "mean",
    out: str | Path | None = None,
    device: str | None = None,
    log=print,
) -> Path:
    """Score every photo under ``images``; write and return the CSV path (see module doc)."""
    if aggregate not in ("mean", "vote"):
        raise DataError(f"--aggregate {aggregate}: choose mean or vote")
    folder = Path(images)
    if not folder.is_dir():
        raise DataError(f"--images {folder}: not a folder; pass the folder of new photos")
    ctx = RunContext.open(run, device)
    att = fit_attack(ctx, attack)
    tau = att.score_threshold
    good, bad = scan(folder, {Path(groups)} if groups else None)
    for p, status in bad.items():
        log(f"skipped {p.relative_to(folder)}: {status.replace('_', ' ')}", file=sys.stderr)
    t0 = time.perf_counter()
    sig, scores = score_photos(ctx, att, attack, good)
    per = (time.perf_counter() - t0) / max(1, len(good))
    grp = groups_for(good, folder, Path(groups) if groups else None)
    gstats = group_decisions(good, grp, scores, tau, aggregate)
    out_path = Path(out) if out else ctx.folder / "discriminate" / f"{folder.name}_{attack}.csv"
    write_csv(out_path, folder, good, bad, grp, sig, scores, tau, gstats, ctx.class_names)
    n_known = int((scores >= tau).sum())
    log(
        f"discriminate ({attack}, threshold {tau:.4g}): {len(good)} photos scored, "
        f"{n_known} known, {len(good) - n_known} new; {len(gstats)} groups; {len(bad)} skipped; "
        f"{per * 1e3:.1f} ms per photo -> {out_path}"
    )
    return out_path


def parser():
    """The ``cli.py discriminate`` argument parser."""
    p = command_parser("discriminate", __doc__)
    p.add_argument("--run", type=str, required=True, help="finished run folder")
    p.add_argument("--images", type=str, required=True, help="folder of new photos")
    p.add_argument("--attack", type=str, default="yeom", help=f"one of {SIGNAL_ATTACKS}")
    p.add_argument(
        "--groups",
        type=str | None,
        default=None,
        help="CSV with columns image, group (else: one subfolder per group)",
    )
    p.add_argument("--aggregate", type=str, default="mean", help="mean | vote")
    p.add_argument("--out", type=str | None, default=None, help="output CSV")
    p.add_argument("--device", type=str | None, default=None, help="cpu, cuda or None (auto)")
    return p


def main(argv: list[str]) -> Path:
    """Entry point of ``python cli.py discriminate``."""
    a = parser().parse_args(argv)

    def log(msg, file=None):
        print(msg, file=file or sys.stdout)

    return discriminate(a.run, a.images, a.attack, a.groups, a.aggregate, a.out, a.device, log)
