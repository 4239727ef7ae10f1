"""``python cli.py openset_trend --root <NOAA catalog> --output <new folder>``: what limits
known/new on a NOAA catalog: the subsampling trend of docs/results.md.

One target (``--target``, default the softmax head on letterboxed photos) under one protocol
(``--protocol``, default ``group``: encounter-disjoint), scored by max softmax and by the nearest
neighbour to the gallery of training photos (both from the same signals). Around a base setting
(all known whales, all their training encounters, 64 px, 15 epochs) one axis varies at a time:

* ``known_fraction``: the share of the known whales kept in the catalog (seeded, nested);
* ``max_encounters``: at most this many training encounters of each known whale (seeded);
* ``image_size``: the letterbox size in pixels;
* ``epochs``: training epochs.

The new whales (attack and evaluation non-members) are the same at every point. Each point is
one :func:`experiments.known_new.openset_table_rows.run_one` (the training, signals and encounter
metrics of ``cli.py openset_table``) in its own sub-folder with its signals and split manifest,
plus wall and CPU seconds of the whole point. The 7 points of docs/results.md took 1.6 h wall and
34 CPU-minutes on a shared 2-core VM; the defaults add ``--max_encounters 1 2`` (two more
base-sized points). Run::

    nice -n 5 python cli.py openset_trend --root ../shared/data/beluga_whaledo_dev \\
        --output /tmp/openset_trend

An axis given bare (``--epochs``) is left out. It writes ``trend.md`` and ``trend.json`` into
``--output`` (a new folder; an existing one is refused), rewritten after every point so a
stopped run keeps the finished points.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Literal

from experiments.known_new.openset_table_rows import (
    TARGETS,
    TableOptions,
    add_training_options,
    check_options,
    fmt,
    run_one,
)
from experiments.run.config_files import add_flag, command_parser, parse_options

#: trend axis -> openset_table option
AXES = ("known_fraction", "max_encounters", "image_size", "epochs")
ATTACK_NAMES = {"baseline_msp": "max softmax", "baseline_nn_cosine": "nearest neighbour"}


def parser():
    """The ``cli.py openset_trend`` argument parser."""
    table = TableOptions(root="", output="")
    p = command_parser("openset_trend", __doc__)
    add_training_options(p, table)
    p.add_argument("--output", type=str, required=True, help="new folder for the trend, points")
    p.add_argument(
        "--protocol", type=Literal["group", "time"], default="group", help="split protocol"
    )
    p.add_argument(
        "--target", type=Literal[tuple(TARGETS)], default="softmax-letterbox", help="target"
    )
    base = {"known_fraction": 1.0, "max_encounters": None, "image_size": 64, "epochs": 15}
    values = {"known_fraction": [0.25, 0.5], "max_encounters": [1, 2]}
    values |= {"image_size": [48, 96], "epochs": [8, 30]}
    kinds = {"known_fraction": float, "max_encounters": int, "image_size": int, "epochs": int}
    for axis in AXES:
        kind = kinds[axis] if base[axis] is not None else kinds[axis] | None
        p.add_argument(
            f"--base_{axis}", type=kind, default=base[axis], help=f"{axis} of the base point"
        )
        p.add_argument(
            f"--{axis}",
            type=kinds[axis],
            nargs="*",
            default=values[axis],
            help=f"{axis} values of the trend (bare: none)",
        )
    add_flag(
        p,
        "skip_base",
        "leave out the base point (when it ran in another --output with the same options)",
    )
    return p


def points(args) -> list[tuple[str, object, dict]]:
    """(axis, value, settings): the base first, then each axis's values other than the base's."""
    base = {a: getattr(args, f"base_{a}") for a in AXES}
    out = [] if args.skip_base else [("base", None, dict(base))]
    for axis in AXES:
        for value in getattr(args, axis):
            if value != base[axis]:
                out.append((axis, value, {**base, axis: value}))
    return out


def table_args(args, settings: dict, attacks=tuple(ATTACK_NAMES)) -> TableOptions:
    """The table's options for one point (the table's own defaults for everything else)."""
    return TableOptions(
        root=args.root,
        output="unused",
        protocols=[args.protocol],
        targets=[args.target],
        attacks=list(attacks),
        seed=args.seed,
        n_boot=args.n_boot,
        cache_dir=args.cache_dir,
        time_cutoff=args.time_cutoff,
        **settings,
    )


def run_point(args, axis: str, value, settings: dict, out: Path) -> dict:
    """Train, extract and score one point in ``out/<axis>=<value>``; returns its trend row."""
    folder = out / ("base" if axis == "base" else f"{axis}={value}")
    folder.mkdir()
    wall, cpu = time.perf_counter(), time.process_time()
    r = run_one(table_args(args, settings), args.protocol, args.target, folder)
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


def main(argv: list[str]) -> list[dict]:
    """Entry point of ``python cli.py openset_trend``: the trend's rows (also in ``trend.json``)."""
    args = parse_options(parser(), argv)
    pts = points(args)
    counts = [("n_boot", args.n_boot)]
    counts += [(k, s[k]) for _, _, s in pts for k in ("image_size", "epochs")]
    counts += [(k, s[k]) for _, _, s in pts for k in ("max_encounters",) if s[k] is not None]
    fractions = [("known_fraction", s["known_fraction"]) for _, _, s in pts]
    check_options(args.root, args.output, counts, fractions)
    out = Path(args.output)
    out.mkdir(parents=True)  # kept on failure: it holds the finished points
    rows = []
    for axis, value, settings in pts:
        rows.append(run_point(args, axis, value, settings, out))
        record = {"args": args.as_dict(), "rows": rows}
        (out / "trend.json").write_text(json.dumps(record, indent=1))
        (out / "trend.md").write_text(table(rows))
        print(table(rows[-1:]), flush=True)
    print(f"trend: {out / 'trend.md'}")
    return rows
