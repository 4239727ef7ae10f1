"""What limits known/new on a NOAA catalog: the subsampling trend of docs/results.md.

One target (``--target``, default the softmax head on letterboxed photos) under one protocol
(``--protocol``, default ``group``: encounter-disjoint), scored by max softmax and by the nearest
neighbour to the gallery of training photos (both from the same signals). Around a base setting
(all known whales, all their training encounters, 64 px, 15 epochs) one axis varies at a time:

* ``known_fraction``: the share of the known whales kept in the catalog (seeded, nested);
* ``max_encounters``: at most this many training encounters of each known whale (seeded);
* ``image_size``: the letterbox size in pixels;
* ``epochs``: training epochs.

The new whales (attack and evaluation non-members) are the same at every point. Each point is
one :func:`experiments.commands.openset_table.run_one` (same training, signals and encounter metrics) in
its own sub-folder with its signals and split manifest, plus wall and CPU seconds of the whole
point. The 7 points of docs/results.md took 1.6 h wall and 34 CPU-minutes on a shared 2-core
VM; the defaults add ``--max_encounters 1 2`` (two more base-sized points). Run::

    nice -n 5 python -m experiments.commands.openset_trend --root ../shared/data/beluga_whaledo_dev \\
        --output /tmp/openset_trend

It writes ``trend.md`` and ``trend.json`` into ``--output`` (a new folder; an existing one is
refused), rewritten after every point so a stopped run keeps the finished points.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from experiments.commands import openset_table

#: trend axis -> openset_table option
AXES = ("known_fraction", "max_encounters", "image_size", "epochs")
ATTACK_NAMES = {"baseline_msp": "max softmax", "baseline_nn_cosine": "nearest neighbour"}


def parse(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--root", required=True, help="NOAA catalog (metadata.csv + images/)")
    p.add_argument("--output", required=True, help="new folder for the trend and each point")
    p.add_argument("--protocol", default="group", choices=["group", "time"])
    p.add_argument("--target", default="softmax-letterbox", choices=list(openset_table.TARGETS))
    p.add_argument("--base_known_fraction", type=float, default=1.0)
    p.add_argument("--base_max_encounters", type=int, default=None, help="default: all")
    p.add_argument("--base_image_size", type=int, default=64)
    p.add_argument("--base_epochs", type=int, default=15)
    p.add_argument("--known_fraction", type=float, nargs="*", default=[0.25, 0.5])
    p.add_argument("--max_encounters", type=int, nargs="*", default=[1, 2])
    p.add_argument("--image_size", type=int, nargs="*", default=[48, 96])
    p.add_argument("--epochs", type=int, nargs="*", default=[8, 30])
    p.add_argument(
        "--skip_base",
        action="store_true",
        help="leave out the base point (when it ran in another --output with the same options)",
    )
    p.add_argument("--n_boot", type=int, default=1000)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--cache_dir", default="/tmp/openset_table_cache")
    return p.parse_args(argv)


def points(args) -> list[tuple[str, object, dict]]:
    """(axis, value, settings): the base first, then each axis's values other than the base's."""
    base = {a: getattr(args, f"base_{a}") for a in AXES}
    out = [] if args.skip_base else [("base", None, dict(base))]
    for axis in AXES:
        for value in getattr(args, axis):
            if value != base[axis]:
                out.append((axis, value, {**base, axis: value}))
    return out


def table_args(args, settings: dict, attacks=tuple(ATTACK_NAMES)) -> argparse.Namespace:
    """openset_table's options for one point (its own defaults for everything else)."""
    argv = ["--root", args.root, "--output", "unused", "--protocols", args.protocol]
    argv += ["--targets", args.target, "--attacks", *attacks, "--seed", str(args.seed)]
    argv += ["--n_boot", str(args.n_boot), "--cache_dir", args.cache_dir]
    argv += ["--known_fraction", str(settings["known_fraction"])]
    argv += ["--image_size", str(settings["image_size"]), "--epochs", str(settings["epochs"])]
    if settings["max_encounters"] is not None:
        argv += ["--max_encounters", str(settings["max_encounters"])]
    return openset_table.parse(argv)


def run_point(args, axis: str, value, settings: dict, out: Path) -> dict:
    """Train, extract and score one point in ``out/<axis>=<value>``; returns its trend row."""
    folder = out / ("base" if axis == "base" else f"{axis}={value}")
    folder.mkdir()
    wall, cpu = time.perf_counter(), time.process_time()
    r = openset_table.run_one(table_args(args, settings), args.protocol, args.target, folder)
    n_classes = int(r["n_individuals"]["ID1"])
    return {
        "axis": axis,
        "value": value,
        "settings": settings,
        "folder": folder.name,
        "n_known_whales": n_classes,
        "chance_top1": round(1 / n_classes, 3),
        "chance_top5": round(min(5, n_classes) / n_classes, 3),
        **{k: r[k] for k in ("n_train_photos", "n_train_encounters", "train_seconds")},
        "photo_top1_train": round(r["train_acc"], 3),
        "photo_top1_heldout": round(r["test_photo_acc"], 3),
        "attacks": r["attacks"],
        "wall_s": round(time.perf_counter() - wall, 1),
        "cpu_s": round(time.process_time() - cpu, 1),
    }


def table(rows: list[dict]) -> str:
    """Markdown: one line per (point, attack)."""
    fmt = openset_table.fmt
    head = (
        "| axis | value | known whales | train photos / enc. | known / new enc. | attack | "
        "AUROC | TPR@5%FPR | re-ID top-1 | re-ID top-5 | chance top-1 / top-5 | "
        "photo top-1 train / held-out | wall / CPU s |\n"
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|\n"
    )
    lines = []
    for r in rows:
        for name, m in r["attacks"].items():
            cells = [r["axis"], "" if r["value"] is None else str(r["value"])]
            cells += [
                str(r["n_known_whales"]),
                f"{r['n_train_photos']} / {r['n_train_encounters']}",
            ]
            cells += [f"{m['n_known']} / {m['n_new']}", ATTACK_NAMES.get(name, name)]
            cells += [fmt(m[k]) for k in ("auroc", "tpr_at_5fpr", "reid_top1", "reid_top5")]
            cells.append(f"{r['chance_top1']:.2f} / {r['chance_top5']:.2f}")
            cells.append(f"{r['photo_top1_train']:.2f} / {r['photo_top1_heldout']:.2f}")
            cells.append(f"{r['wall_s']:.0f} / {r['cpu_s']:.0f}")
            lines.append("| " + " | ".join(cells) + " |")
    return head + "\n".join(lines) + "\n"


def main(argv=None) -> None:
    args = parse(argv)
    out = Path(args.output)
    if out.exists():
        raise SystemExit(
            f"--output {out}: already exists; give a new folder (nothing overwritten)."
        )
    out.mkdir(parents=True)
    rows = []
    for axis, value, settings in points(args):
        rows.append(run_point(args, axis, value, settings, out))
        (out / "trend.json").write_text(json.dumps({"args": vars(args), "rows": rows}, indent=1))
        (out / "trend.md").write_text(table(rows))
        print(table(rows[-1:]), flush=True)
    print(f"trend: {out / 'trend.md'}")


if __name__ == "__main__":
    main()
