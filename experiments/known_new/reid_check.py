"""``discriminate`` as an ecologist runs it, checked against the truth of one known/new draw
(``cli.py reid --discriminate_check true``).

The draw's catalog photos are copied into a Where's Whale-do catalog folder
(``<output>/draw/catalog``: ``metadata.csv`` + ``images/``), its query encounters into one folder
per encounter (``<output>/draw/images/<encounter>/``), exactly what a user would hand to
``cli.py discriminate --run <embedding run> --catalog ... --images ...``. The command then runs
as it does for users, and its ``encounters.csv`` is compared with the truth: the share of known
encounters whose whale is among the top-5 (and top-1) candidates, and the decisions against
known/new.
"""

from __future__ import annotations

import csv
import shutil
from pathlib import Path

import numpy as np

from experiments.known_new.embedding_engine import discriminate
from experiments.known_new.embedding_engine import parser as discriminate_parser

FIELDS = ("image_id", "path", "viewpoint", "date", "whale_id", "encounter_id")


def lay_out(rows: list[dict], roles: np.ndarray, src: Path, dst: Path) -> dict[str, dict]:
    """Copy the draw into ``dst/catalog`` and ``dst/images``; ``{query folder: truth}``."""
    cat = dst / "catalog"
    (cat / "images").mkdir(parents=True)
    meta, truth = [], {}
    for i, (r, role) in enumerate(zip(rows, roles)):
        if role == "catalog":
            name = f"images/c{i:05d}{Path(r['file']).suffix}"
            shutil.copyfile(src / r["file"], cat / name)
            whale, enc = r["identity"], r["encounter"].split("/", 1)[1]
            meta.append({"image_id": f"c{i:05d}", "path": name, "viewpoint": "top",
                         "date": f"{r['year']}-01-01", "whale_id": whale, "encounter_id": enc})  # fmt: skip
        elif role in ("known_query", "new_query"):
            folder = "q_" + r["encounter"].replace("/", "__")
            (dst / "images" / folder).mkdir(parents=True, exist_ok=True)
            shutil.copyfile(src / r["file"], dst / "images" / folder / Path(r["file"]).name)
            truth[folder] = {"identity": r["identity"], "known": role == "known_query"}
    with (cat / "metadata.csv").open("w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=FIELDS)
        w.writeheader()
        w.writerows(meta)
    return truth


def score(folder: Path, truth: dict[str, dict]) -> dict:
    """Top-k hit rates of the known encounters and the decisions against the truth, from a
    discriminate output folder (``encounters.csv`` and ``candidates.csv``)."""
    with (folder / "encounters.csv").open(newline="") as fh:
        rows = [r for r in csv.DictReader(fh) if r["encounter"] in truth]
    cands: dict[str, list[str]] = {}
    with (folder / "candidates.csv").open(newline="") as fh:
        for c in sorted(csv.DictReader(fh), key=lambda c: int(c["rank"])):
            cands.setdefault(c["encounter"], []).append(c["individual"])
    known = [r for r in rows if truth[r["encounter"]]["known"]]
    new = [r for r in rows if not truth[r["encounter"]]["known"]]

    def hit(r: dict, k: int) -> bool:
        return truth[r["encounter"]]["identity"] in cands.get(r["encounter"], [])[:k]

    def share(rs: list[dict], decision: str) -> float:
        return float(np.mean([r["decision"] == decision for r in rs])) if rs else float("nan")

    return {
        "known_encounters": len(known),
        "new_encounters": len(new),
        "known_top1": float(np.mean([hit(r, 1) for r in known])) if known else float("nan"),
        "known_top5": float(np.mean([hit(r, 5) for r in known])) if known else float("nan"),
        "known_called_known": share(known, "known"),
        "new_called_known": share(new, "known"),
        "known_undecided": share(known, "undecided"),
        "new_undecided": share(new, "undecided"),
    }


def discriminate_check(run: str, rows, roles, catalog_root: Path, out: Path, fpr: float) -> dict:
    """Lay out one draw under ``out``, run discriminate on it and score its answers."""
    truth = lay_out(rows, roles, Path(catalog_root), out)
    args = discriminate_parser().parse_args(
        [
            "--run",
            run,
            "--catalog",
            str(out / "catalog"),
            "--images",
            str(out / "images"),
            "--output",
            str(out / "discriminate"),
            "--fpr",
            str(fpr),
        ]  # fmt: skip
    )
    summary = discriminate(args, log=lambda *a, **k: None)
    res = score(out / "discriminate", truth)
    enc = summary["levels"]["encounter"]
    res["operating_point"] = {
        k: enc.get(k) for k in ("threshold", "tpr", "fpr", "auroc", "separable")
    }
    return res
