"""``python cli.py openset_table --root <NOAA catalog> --output <new folder>``: known or new, per
encounter, on a real NOAA catalog: the open-set table of docs/results.md.

For each split protocol (``group``: encounter-disjoint, random individuals; ``time``: catalog
before a date cutoff, queries after it) and each target (softmax or ArcFace head, photos squashed
or letterboxed), it trains a target on the ID1 ``train`` photos, extracts its signals for every
manifest row and scores the photos with the attacks (Yeom, Salem, max softmax, nearest
neighbour to the gallery of training photos). The photo scores of one encounter are averaged into
one encounter score (the mean keeps every photo's vote; a single bad frame cannot decide it, as it
can under the max) by the scorer ``cli.py discriminate`` uses (:class:`attacks.known_new.Scorer`:
scores on its calibration scale, e.g. minus the log of Yeom's loss), and the evaluation
encounters (ID1 ``test``: later or held-out encounters of known whales; ID3: whales never seen)
give:

* AUROC and TPR at 5% FPR of known vs new;
* BAKS and BAUS at the threshold that had 5% FPR on the attack set's encounters (ID1 ``val`` +
  ID2), with BAKS also asking for the right top-1 identity;
* re-identification top-1 / top-5 of the known encounters: by the mean class probabilities, or,
  for the nearest-neighbour rows, by the most similar gallery photo of each class.

Intervals are 95% bootstrap intervals resampled by individual (:func:`attacks.group_bootstrap.
bootstrap_ci`). Run (about 20-40 min on 2 CPU cores)::

    nice -n 5 python cli.py openset_table --root ../shared/data/beluga_whaledo_dev \\
        --output /tmp/openset_table

``--known_fraction`` and ``--max_encounters`` shrink the catalog of known whales (seeded; the
new whales stay as they are); ``cli.py openset_trend`` varies them, the image size and the
epochs one at a time. It writes ``table.md``, ``table.json`` and each target's ``signals_*.npz``
and ``split_manifest_*.json`` into ``--output`` (a new folder; an existing one is refused).
One point is :func:`experiments.known_new.openset_table_rows.run_one`.
"""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path
from typing import Literal

from experiments.known_new.openset_table_rows import (
    ATTACKS,
    PROTOCOLS,
    TARGETS,
    TableOptions,
    add_training_options,
    check_options,
    fmt,
    run_one,
)
from experiments.run.config_files import command_parser, parse_options


def parser():
    """The ``cli.py openset_table`` argument parser."""
    d = TableOptions(root="", output="")
    p = command_parser("openset_table", __doc__)
    add_training_options(p, d)
    p.add_argument("--output", type=str, required=True, help="new folder for the table, signals")
    p.add_argument(
        "--protocols",
        type=Literal[PROTOCOLS],
        nargs="+",
        default=d.protocols,
        help="split protocols, one table block each",
    )
    p.add_argument(
        "--targets", type=Literal[tuple(TARGETS)], nargs="+", default=d.targets, help="targets"
    )
    p.add_argument("--image_size", type=int, default=d.image_size, help="letterbox/squash size, px")
    p.add_argument("--epochs", type=int, default=d.epochs, help="training epochs of every target")
    p.add_argument(
        "--attacks", type=Literal[ATTACKS], nargs="+", default=d.attacks, help="attacks scored"
    )
    p.add_argument(
        "--known_fraction",
        type=float,
        default=d.known_fraction,
        help="share of the known (ID1) whales kept in the catalog (seeded; 1: all)",
    )
    p.add_argument(
        "--max_encounters",
        type=int | None,
        default=d.max_encounters,
        help="at most this many training encounters of each known whale (seeded; default all)",
    )
    return p


def table(results: list[dict]) -> str:
    """Markdown: one line per (protocol, target, attack)."""
    head = (
        "| protocol | target | attack | known / new enc. | AUROC | TPR@5%FPR | BAKS | BAUS | "
        "re-ID top-1 | re-ID top-5 |\n|---|---|---|---|---|---|---|---|---|---|\n"
    )
    lines = []
    for r in results:
        for name, m in r["attacks"].items():
            cells = [r["protocol"], r["target"], name, f"{m['n_known']} / {m['n_new']}"]
            cells += [fmt(m[k]) for k in ("auroc", "tpr_at_5fpr", "baks", "baus")]
            cells += [fmt(m["reid_top1"]), fmt(m["reid_top5"])]
            lines.append("| " + " | ".join(cells) + " |")
    return head + "\n".join(lines) + "\n"


def main(argv: list[str]) -> list[dict]:
    """Entry point of ``python cli.py openset_table``: the table's rows (also in ``table.json``)."""
    opts = TableOptions(**parse_options(parser(), argv).as_dict())
    counts = [(k, getattr(opts, k)) for k in ("image_size", "epochs", "n_boot")]
    check_options(opts.root, opts.output, counts, [("known_fraction", opts.known_fraction)])
    out = Path(opts.output)
    out.mkdir(parents=True)  # kept on failure: it holds the finished targets
    results = []
    for protocol in opts.protocols:
        for target in opts.targets:
            results.append(run_one(opts, protocol, target, out))
            (out / "table.json").write_text(json.dumps({"args": asdict(opts), "results": results}))
            (out / "table.md").write_text(table(results))
            print(table(results[-1:]), flush=True)
    print(f"table: {out / 'table.md'}")
    return results
