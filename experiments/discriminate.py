"""``python cli.py discriminate --run <run> --images <folder>``: is each new photo, and each
encounter, a whale of the catalog (known) or a new one, and which catalog whales should a person
check first?

For every file under ``--images`` (recursively) the CSV gets a ``photo`` row, and for every
encounter (one subfolder ``<folder>/<encounter>/*.jpg``, or ``--groups file.csv`` with columns
``image`` and ``group``) an ``encounter`` row:

* ``p_known``: the probability that the photo (encounter) shows a catalog whale, from the score
  of ``--attack`` calibrated by Platt scaling on the run's attack set (held-out photos of catalog
  whales against whales the model never saw), each class weighted equally: it assumes known and
  new whales equally likely before looking. ``nearest_cosine``: the cosine similarity of the
  photo's embedding to its nearest training photo.
* ``decision``: ``known`` iff ``p_known >= threshold_p``; the threshold is chosen on the attack
  set for ``--fpr`` (the share of new whales called known), or given by ``--threshold``.
  ``eval_tpr`` and ``eval_fpr`` (with 95% bootstrap intervals by individual) are the rates this
  operating point had on the run's evaluation individuals, which played no part in choosing it.
* ``cand1..cand5``: the five most likely catalog identities, for every photo and encounter,
  known or new, with ``cand<k>_prob`` (softmax probability) or ``cand<k>_cosine`` (nearest
  training photo of that identity).
* an encounter's photos give one consensus (``--aggregate``): ``mean`` of the photo scores and of
  the class probabilities (default), ``max``, or ``mean_embedding`` (the mean of the photos'
  normalised embeddings, compared to the training photos by cosine; the default with
  ``--attack cosine``). The encounter level has its own calibration and threshold, fitted on the
  attack set's encounters aggregated the same way.

A summary (JSON beside the CSV, and printed) states the operating point and its rates. Nothing
is overwritten: the default output is a fresh name in ``<run>/discriminate/``; an existing
``--output`` needs ``--overwrite``. Files that are not images are listed, unreadable images are
skipped and listed (``--unreadable skip``) or stop the command (``--unreadable error``).

An embedding ``--run`` (``cli.py fit --config beluga_reid_cpu.yaml``) needs ``--catalog``, the
known whales' catalog: see :mod:`experiments.reid_discriminate`.
"""

from __future__ import annotations

import csv
import importlib
import sys
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from attacks import open_set as osm
from attacks.signals import balanced, membership, subset
from attacks.uncertainty import bootstrap_cis
from datamodules.errors import DataError
from datamodules.image_check import check_images
from datamodules.manifest import encounter_key
from experiments.config_files import command_parser
from experiments.outputs import atomic_path, claim, fresh_name, write_json
from experiments.runs import RunContext, is_embedding_target

IMAGE_EXT = {".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp", ".gif"}
#: --attack -> (module, class); the module is imported alone (not the whole registry)
ATTACKS = {
    "yeom": ("attacks.yeom", "YeomAttack"),
    "salem": ("attacks.salem", "SalemAttack"),
    "baseline_msp": ("attacks.baselines", "MaxSoftmaxBaseline"),
    "cosine": ("attacks.baselines", "NearestNeighbourCosine"),
}
ALIASES = {"baseline_nn_cosine": "cosine"}
SIGNAL_ATTACKS = tuple(ATTACKS) + tuple(ALIASES)
#: --engine: what scores the new photos (see :func:`open_target`)
ENGINES = ("auto", "onnx", "torch")
TOPK = 5


# ---- photos and encounters --------------------------------------------------------------------
def scan(
    folder: Path, skip: set[Path] | None = None, unreadable: str = "skip"
) -> tuple[list[Path], dict[Path, str]]:
    """Readable images under ``folder`` and ``{path: status}`` for the rest (sorted paths).

    Hidden files and the paths in ``skip`` (e.g. the groups CSV) are ignored. An image that does
    not decode is ``corrupt``, or raises DataError with ``unreadable="error"``.
    """
    skip = {q.resolve() for q in (skip or set())}
    images, bad = [], {}
    for p in sorted(q for q in folder.rglob("*") if q.is_file()):
        if p.name.startswith(".") or p.resolve() in skip:
            continue
        if p.suffix.lower() not in IMAGE_EXT:
            bad[p] = "not_an_image"
            continue
        images.append(p)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the skipped files are listed in the CSV instead
        good, unreadable_files = check_images(images, unreadable)
    bad.update(dict.fromkeys(unreadable_files, "corrupt"))
    return good, dict(sorted(bad.items()))


def groups_for(paths: list[Path], folder: Path, groups_csv: Path | None) -> dict[Path, str]:
    """Encounter of each photo: from ``groups_csv`` (image, group), else its subfolder, else ''."""
    if groups_csv is not None:
        if not Path(groups_csv).is_file():
            raise DataError(f"--groups {groups_csv}: file not found")
        with Path(groups_csv).open(newline="") as fh:
            rows = list(csv.DictReader(fh))
        if not rows or "image" not in rows[0] or "group" not in rows[0]:
            raise DataError(f"--groups {groups_csv}: needs columns 'image' and 'group'")
        table = {(folder / r["image"]).resolve(): r["group"] for r in rows}
        return {p: table.get(p.resolve(), "") for p in paths}
    return {p: str(p.parent.relative_to(folder)) if p.parent != folder else "" for p in paths}


def run_encounters(ctx: RunContext, sig: dict) -> np.ndarray:
    """Encounter of each signal row (:func:`datamodules.manifest.encounter_key`:
    ``identity/group``, or ``identity/file`` for runs split without ``group_by``)."""
    return np.asarray([encounter_key(ctx.rows[int(i)]) for i in np.asarray(sig["index"])])


# ---- scores at one level (photo or encounter) ------------------------------------------------
def feature(name: str, score: np.ndarray) -> np.ndarray:
    """A monotone rescaling of attack ``name``'s score on which a logistic fit is well specified:
    minus the log of the loss for ``yeom`` (its score is minus a loss, which piles up near 0) and
    for ``baseline_msp`` (the loss of the top class is ``-log max_prob``), the logit of Salem's
    probability; cosine similarities as they are. The ranking, and so every AUROC, is unchanged."""
    if name == "yeom":
        return -np.log(np.maximum(-score, 1e-12))
    if name == "baseline_msp":
        return -np.log(np.maximum(-np.log(np.clip(score, 1e-300, 1.0)), 1e-12))
    if name == "salem":
        p = np.clip(score, 1e-9, 1 - 1e-9)
        return np.log(p / (1 - p))
    return score


@dataclass
class Scorer:
    """A fitted attack (raw score, higher = known), the gallery of training photos and how
    candidates and encounters are scored."""

    attack: object
    name: str
    gallery: np.ndarray  # (M, D) embeddings of the training photos
    gallery_label: np.ndarray  # (M,)
    n_classes: int
    rule: str
    by_cosine: bool = field(default=False)

    def photo_raw(self, sig: dict) -> np.ndarray:
        """The attack's score (N,) on the scale the probability is fitted on (:func:`feature`)."""
        return feature(self.name, np.asarray(self.attack.score(sig), dtype=np.float64))

    def nearest(self, emb: np.ndarray) -> np.ndarray:
        """Cosine (N,) of each embedding to its nearest training photo."""
        if len(emb) == 0 or len(self.gallery) == 0:
            return np.full(len(emb), np.nan)
        return osm.cosine(emb, self.gallery).max(1)

    def class_scores(self, sig: dict) -> np.ndarray:
        """(N, C) candidate scores: softmax probabilities, or nearest-photo cosine per class."""
        if self.by_cosine:
            return osm.class_similarity(
                sig["embedding"], self.gallery, self.gallery_label, self.n_classes
            )
        z = np.asarray(sig["logits"], dtype=np.float64)
        z = np.exp(z - z.max(1, keepdims=True))
        return z / z.sum(1, keepdims=True)

    def encounters(self, sig: dict, raw: np.ndarray, enc: np.ndarray) -> tuple:
        """``(names (G,), raw score (G,), class scores (G, C))`` of the encounters ``enc``."""
        cs = self.class_scores(sig)
        if self.rule == "mean_embedding":
            names, e = osm.aggregate(sig["embedding"], enc, "mean_embedding")
            graw = self.nearest(e)
            if self.by_cosine:
                return (
                    names,
                    graw,
                    osm.class_similarity(e, self.gallery, self.gallery_label, self.n_classes),
                )
            return names, graw, osm.aggregate(cs, enc, "mean")[1]
        names, graw = osm.aggregate(raw, enc, self.rule)
        return names, graw, osm.aggregate(cs, enc, "mean" if not self.by_cosine else self.rule)[1]


def fit_attack(sig: dict, name: str, seed: int = 0):
    """The attack ``name`` fitted on the balanced attack set of the run's final signals."""
    name = ALIASES.get(name, name)
    if name not in ATTACKS:
        raise DataError(f"--attack {name}: choose one of {', '.join(SIGNAL_ATTACKS)}")
    module, cls = ATTACKS[name]
    attack_cls = getattr(importlib.import_module(module), cls)
    return attack_cls.for_run(sig).fit(balanced(subset(sig, "attack"), seed))


def make_scorer(ctx: RunContext, sig: dict, name: str, rule: str | None) -> Scorer:
    """The scorer for ``--attack name`` (``auto``: cosine for embedding targets, else yeom)."""
    if name == "auto":
        name = "cosine" if is_embedding_target(ctx.model_args) else "yeom"
    name = ALIASES.get(name, name)
    by_cosine = name == "cosine" or is_embedding_target(ctx.model_args)
    rule = rule or ("mean_embedding" if by_cosine else "mean")
    if rule not in osm.AGGREGATES:
        raise DataError(f"--aggregate {rule}: choose one of {', '.join(osm.AGGREGATES)}")
    if "embedding" not in sig:
        raise DataError(
            f"--run {ctx.folder}: signals/final.npz has no embeddings; move it aside to re-extract"
        )
    train = sig["split"] == "train"
    return Scorer(
        fit_attack(sig, name),
        name,
        np.asarray(sig["embedding"][train], dtype=np.float64),
        np.asarray(sig["label"][train]),
        len(ctx.class_names),
        rule,
        by_cosine,
    )


# ---- calibration and the operating point, per level --------------------------------------------
@dataclass
class Level:
    """One level (``photo`` or ``encounter``): its Platt map to ``p_known``, the threshold on
    ``p_known`` and the report of its rates on the attack and evaluation sets."""

    name: str
    platt: osm.Platt
    tau: float
    report: dict

    def p_known(self, raw: np.ndarray) -> np.ndarray:
        return self.platt(raw)

    def eval_cells(self) -> dict:
        ev = self.report["eval"]
        cells = {}
        for m in ("tpr", "fpr"):
            for suffix, v in zip(("", "_lo", "_hi"), ev[m]):
                cells[f"eval_{m}{suffix}"] = f"{v:.4f}"
        return cells


def level_sets(ctx: RunContext, sig: dict, scorer: Scorer, level: str) -> dict:
    """``{set: (raw score, is_member, identity)}`` of the run's attack and eval sets, one row
    per photo or per encounter (the manifest's, see :func:`run_encounters`)."""
    out = {}
    for name in ("attack", "eval"):
        s = subset(sig, name)
        raw, y, ident = scorer.photo_raw(s), membership(s), s["identity"]
        if level == "encounter":
            enc = run_encounters(ctx, s)
            _, raw, _ = scorer.encounters(s, raw, enc)
            ident = osm.group_labels(s["identity"], enc)[1]
            y = osm.group_labels(y, enc)[1]
        out[name] = (raw, np.asarray(y).astype(int), np.asarray(ident))
    return out


def fit_level(name: str, sets: dict, fpr: float, threshold: float | None, n_boot: int) -> Level:
    """Platt map fitted on the attack set; threshold on ``p_known`` for ``fpr`` on the attack
    set's new individuals (or ``threshold``); TPR, FPR and AUROC on the eval set with bootstrap
    intervals resampled by individual."""
    raw_a, y_a, id_a = sets["attack"]
    raw_e, y_e, id_e = sets["eval"]
    if y_a.min() == y_a.max() or y_e.min() == y_e.max():
        raise DataError(f"{name} level: the run's attack and eval sets need known and new whales")
    platt = osm.fit_platt(raw_a, y_a)
    p_a, p_e = platt(raw_a), platt(raw_e)
    tau = float(threshold) if threshold is not None else osm.threshold_at_fpr(p_a, y_a, fpr)

    def counts(y, ident) -> dict:
        return {
            "rows_known": int(y.sum()),
            "rows_new": int((1 - y).sum()),
            "individuals_known": len(set(ident[y == 1])),
            "individuals_new": len(set(ident[y == 0])),
        }

    tpr_a, fpr_a = osm.rates(p_a, y_a, tau)
    metrics = {
        "tpr": lambda s, y: osm.rates(s, y, tau)[0],
        "fpr": lambda s, y: osm.rates(s, y, tau)[1],
        "auroc": osm.auroc,
    }
    ci = bootstrap_cis(metrics, p_e, y_e, id_e, n_boot=n_boot, level=0.95, seed=0)
    report = {
        "threshold_p": tau,
        "chosen_by": f"FPR {fpr} on the attack set" if threshold is None else "--threshold",
        "attack_set": {"tpr": tpr_a, "fpr": fpr_a, **counts(y_a, id_a)},
        "eval": {
            **{k: list(v) for k, v in ci.items()},
            "ci": "95% bootstrap, resampled by individual",
            **counts(y_e, id_e),
        },
    }
    return Level(name, platt, tau, report)


# ---- the new photos ------------------------------------------------------------------------------
def _progress(loader, total: int, quiet: bool):
    """Batches of ``loader`` (tuples, images first), with a photo progress bar on stderr when it
    is a terminal."""
    if quiet or not sys.stderr.isatty():
        yield from loader
        return
    from tqdm import tqdm

    with tqdm(total=total, unit="photo", desc="discriminate", file=sys.stderr) as bar:
        for batch in loader:
            yield batch
            bar.update(len(batch[0]))


def candidate_cells(class_scores: np.ndarray, names: list[str], kind: str) -> dict:
    """``cand1..cand5`` and ``cand<k>_<kind>`` of one row of class scores (C,)."""
    idx, val = osm.topk(class_scores[None], TOPK)
    cells = {}
    for k, (c, v) in enumerate(zip(idx[0], val[0]), 1):
        cells[f"cand{k}"] = names[int(c)]
        cells[f"cand{k}_{kind}"] = f"{v:.4f}" if np.isfinite(v) else ""
    return cells


def csv_rows(folder: Path, res: dict, levels: dict[str, Level], names: list[str], kind: str):
    """One row per photo (with its encounter's consensus beside it), per skipped file and per
    encounter."""
    enc_of = {n: i for i, n in enumerate(res["enc_names"])}
    lp, le = levels["photo"], levels["encounter"]
    rows = []
    for i, p in enumerate(res["good"]):
        e = res["enc"][i]
        row = {"level": "photo", "image": str(p.relative_to(folder)), "encounter": e}
        row.update(status="ok", n_photos=1, nearest_cosine=f"{res['nearest'][i]:.4f}")
        row.update(p_known=f"{res['p'][i]:.4f}", threshold_p=f"{lp.tau:.4f}")
        row["decision"] = "known" if res["p"][i] >= lp.tau else "new"
        row.update(candidate_cells(res["cs"][i], names, kind), **lp.eval_cells())
        if e in enc_of:
            j = enc_of[e]
            row["encounter_p_known"] = f"{res['enc_p'][j]:.4f}"
            row["encounter_decision"] = "known" if res["enc_p"][j] >= le.tau else "new"
        rows.append(row)
    for p, status in res["bad"].items():
        rows.append({"level": "photo", "image": str(p.relative_to(folder)), "status": status})
    for j, e in enumerate(res["enc_names"]):
        known = res["enc_p"][j] >= le.tau
        row = {"level": "encounter", "image": "", "encounter": e, "status": "ok"}
        row.update(n_photos=int(res["enc_n"][j]), nearest_cosine=f"{res['enc_near'][j]:.4f}")
        row.update(p_known=f"{res['enc_p'][j]:.4f}", threshold_p=f"{le.tau:.4f}")
        row.update(decision="known" if known else "new", encounter_p_known=row["p_known"])
        row["encounter_decision"] = row["decision"]
        row.update(candidate_cells(res["enc_cs"][j], names, kind), **le.eval_cells())
        rows.append(row)
    return rows


def columns(kind: str) -> list[str]:
    cand = [c for k in range(1, TOPK + 1) for c in (f"cand{k}", f"cand{k}_{kind}")]
    head = ["level", "image", "encounter", "status", "n_photos", "p_known", "decision"]
    tail = ["encounter_p_known", "encounter_decision"]
    tail += [f"eval_{m}{s}" for m in ("tpr", "fpr") for s in ("", "_lo", "_hi")]
    return head + ["threshold_p", "nearest_cosine"] + cand + tail


def write_csv(path: Path, rows: list[dict], kind: str) -> Path:
    with atomic_path(path) as tmp, tmp.open("w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=columns(kind))
        w.writeheader()
        w.writerows(rows)
    return path


def new_results(target, scorer: Scorer, levels: dict, good: list[Path], grp, quiet) -> dict:
    """Photo and encounter scores, ``p_known`` and candidates of the new photos ``good``,
    scored by ``target`` (:func:`open_target`)."""
    sig = target.signals(good, lambda batches, total: _progress(batches, total, quiet))
    raw = scorer.photo_raw(sig)
    enc = np.asarray([grp[p] for p in good], dtype=object).astype(str)
    has = enc != ""
    sub = {k: v[has] for k, v in sig.items()}
    if has.any():
        names, graw, gcs = scorer.encounters(sub, raw[has], enc[has])
        _, gemb = osm.aggregate(sub["embedding"], enc[has], "mean_embedding")
        gn = np.array([int((enc == n).sum()) for n in names])
    else:
        names, graw, gcs, gemb, gn = np.zeros(0, str), np.zeros(0), None, np.zeros((0, 1)), []
    return {
        "good": good,
        "enc": enc,
        "p": levels["photo"].p_known(raw),
        "nearest": scorer.nearest(sig["embedding"]),
        "cs": scorer.class_scores(sig),
        "enc_names": list(names),
        "enc_p": levels["encounter"].p_known(graw),
        "enc_cs": gcs,
        "enc_n": gn,
        "enc_near": scorer.nearest(gemb),
    }


def output_paths(ctx: RunContext, folder: Path, name: str, out, overwrite: bool):
    """``(csv, json)`` paths: ``--output`` (kept unless ``--overwrite``) or a fresh name."""
    if out:
        csv_path = claim(Path(out), overwrite=overwrite)
    else:
        csv_path = fresh_name(ctx.folder / "discriminate", f"{folder.name}_{name}", ".csv")
    json_path = csv_path.with_suffix(".json")
    claim(json_path, overwrite=overwrite)
    return csv_path, json_path


def summary_lines(s: dict) -> list[str]:
    """The printed summary (the same figures as the JSON)."""
    c = s["counts"]
    lines = [
        f"discriminate ({s['attack']}): {c['photos']} photos, {c['photos_known']} known; "
        f"{c['encounters']} encounters, {c['encounters_known']} known; {c['skipped']} skipped",
        f"p_known = {s['p_known']}",
    ]
    for lvl, r in s["operating_point"].items():
        ev = r["eval"]
        lines.append(
            f"{lvl}s: known iff p_known >= {r['threshold_p']:.4f} ({r['chosen_by']}); on the run's "
            f"evaluation individuals ({ev['individuals_known']} known, {ev['individuals_new']} new"
            f" whales): TPR {ev['tpr'][0]:.3f} [{ev['tpr'][1]:.3f}, {ev['tpr'][2]:.3f}], FPR "
            f"{ev['fpr'][0]:.3f} [{ev['fpr'][1]:.3f}, {ev['fpr'][2]:.3f}], AUROC "
            f"{ev['auroc'][0]:.3f} [{ev['auroc'][1]:.3f}, {ev['auroc'][2]:.3f}]"
        )
    lines.append(f"-> {s['csv']} and {s['summary']}")
    return lines


P_KNOWN = (
    "probability that the whale is in the catalog, from the {} score by Platt scaling on the "
    "run's attack set with known and new whales weighted equally (a 50/50 prior)"
)


def check_options(fpr: float, threshold: float | None, unreadable: str, engine: str) -> None:
    if not 0 < fpr < 1:
        raise DataError(f"--fpr {fpr}: a false-positive rate between 0 and 1, e.g. 0.05")
    if threshold is not None and not 0 <= threshold <= 1:
        raise DataError(f"--threshold {threshold}: a probability of known between 0 and 1")
    if unreadable not in ("skip", "error"):
        raise DataError(f"--unreadable {unreadable}: choose skip or error")
    if engine not in ENGINES:
        raise DataError(f"--engine {engine}: choose one of {', '.join(ENGINES)}")


def open_target(ctx: RunContext, engine: str, device: str | None, log):
    """The engine that scores the new photos: the exported target run by ONNX Runtime
    (:class:`~experiments.onnx_target.OnnxTarget`, no torch) or the torch model
    (:class:`~experiments.torch_target.TorchTarget`). ``auto`` takes the exported one when the
    run's bundle is up to date and ``device`` is None or ``cpu``, else torch, saying why."""
    if engine == "onnx" or (engine == "auto" and device in (None, "cpu")):
        from experiments.onnx_target import OnnxTarget

        target, why = OnnxTarget.open(ctx)
        if target is not None:
            return target
        if engine == "onnx":
            raise DataError(f"--engine onnx: {why}")
        log(f"scoring with torch: {why}", file=sys.stderr)
    from experiments.torch_target import TorchTarget

    return TorchTarget(ctx)


def discriminate(
    run: str | Path,
    images: str | Path,
    attack: str = "auto",
    *,
    groups: str | Path | None = None,
    aggregate: str | None = None,
    fpr: float = 0.05,
    threshold: float | None = None,
    output: str | Path | None = None,
    overwrite: bool = False,
    unreadable: str = "skip",
    n_boot: int = 1000,
    device: str | None = None,
    engine: str = "auto",
    quiet: bool = False,
    log=print,
) -> dict:
    """Decide known or new for every photo and encounter under ``images``; write the CSV and
    the JSON summary (see the module doc) and return the summary."""
    check_options(fpr, threshold, unreadable, engine)
    folder = Path(images)
    if not folder.is_dir():
        raise DataError(f"--images {folder}: not a folder; pass the folder of new photos")
    ctx = RunContext.open(run, device)
    if not ctx.checkpoint.is_file():
        raise DataError(
            f"--run {run}: no checkpoint {ctx.checkpoint}; pass a finished fit's folder"
        )
    if attack == "auto":
        attack = "cosine" if is_embedding_target(ctx.model_args) else "yeom"
    name = ALIASES.get(attack, attack)
    csv_path, json_path = output_paths(ctx, folder, name, output, overwrite)
    good, bad = scan(folder, {Path(groups)} if groups else None, unreadable)
    for p, status in bad.items():
        log(f"skipped {p.relative_to(folder)}: {status.replace('_', ' ')}", file=sys.stderr)
    if not good:
        raise DataError(f"--images {folder}: no readable photos ({', '.join(sorted(IMAGE_EXT))})")
    grp = groups_for(good, folder, Path(groups) if groups else None)
    target = open_target(ctx, engine, device, log)
    sig = target.final_signals()
    scorer = make_scorer(ctx, sig, name, aggregate)
    levels = {
        lvl: fit_level(lvl, level_sets(ctx, sig, scorer, lvl), fpr, threshold, n_boot)
        for lvl in ("photo", "encounter")
    }
    t0 = time.perf_counter()
    res = new_results(target, scorer, levels, good, grp, quiet) | {"bad": bad}
    per = (time.perf_counter() - t0) / len(good)
    kind = "cosine" if scorer.by_cosine else "prob"
    write_csv(csv_path, csv_rows(folder, res, levels, ctx.class_names, kind), kind)
    summary = {
        "run": str(ctx.folder),
        "images": str(folder),
        "csv": str(csv_path),
        "summary": str(json_path),
        "attack": scorer.name,
        "p_known": P_KNOWN.format(scorer.name),
        "candidates": "nearest training photo's cosine per identity"
        if scorer.by_cosine
        else "softmax probability per identity",
        "aggregate": scorer.rule,
        "engine": target.engine,
        "operating_point": {lvl: lv.report for lvl, lv in levels.items()},
        "counts": {
            "photos": len(good),
            "photos_known": int((res["p"] >= levels["photo"].tau).sum()),
            "encounters": len(res["enc_names"]),
            "encounters_known": int((res["enc_p"] >= levels["encounter"].tau).sum()),
            "skipped": len(bad),
        },
        "skipped": {str(p.relative_to(folder)): s for p, s in bad.items()},
        "seconds_per_photo": per,
    }
    write_json(json_path, summary)
    for line in summary_lines(summary):
        log(line)
    return summary


def parser():
    """The ``cli.py discriminate`` argument parser."""
    p = command_parser("discriminate", __doc__)
    p.add_argument("--run", type=str, required=True, help="finished run folder")
    p.add_argument("--images", type=str, required=True, help="folder of new photos")
    p.add_argument(
        "--catalog",
        type=str | None,
        default=None,
        help="embedding runs: the catalog of known whales (Where's Whale-do folder)",
    )
    p.add_argument(
        "--attack",
        type=str,
        default="auto",
        help=f"score behind p_known: auto (cosine for embedding targets, else yeom) or one of "
        f"{', '.join(SIGNAL_ATTACKS)}",
    )
    p.add_argument(
        "--groups",
        type=str | None,
        default=None,
        help="CSV with columns image, group (else: one subfolder per encounter)",
    )
    p.add_argument(
        "--aggregate",
        type=str | None,
        default=None,
        help="encounter rule: mean (default), max or mean_embedding (default with cosine)",
    )
    p.add_argument("--fpr", type=float, default=0.05, help="target FPR on new individuals")
    p.add_argument(
        "--threshold", type=float | None, default=None, help="p_known threshold (overrides --fpr)"
    )
    p.add_argument(
        "--output", "--out", type=str | None, default=None, help="output CSV (default: fresh)"
    )
    p.add_argument("--overwrite", type=bool, default=False, help="replace an existing --output")
    p.add_argument(
        "--unreadable", type=str, default="skip", help="unreadable image: skip (listed) | error"
    )
    p.add_argument("--n_boot", type=int, default=1000, help="bootstrap replicates for the CIs")
    p.add_argument("--device", type=str | None, default=None, help="cpu, cuda or None (auto)")
    p.add_argument(
        "--engine",
        type=str,
        default="auto",
        help="auto (the exported target when up to date, else torch) | onnx | torch",
    )
    p.add_argument("--quiet", type=bool, default=False, help="no progress bar")
    return p


def main(argv: list[str]) -> dict:
    """Entry point of ``python cli.py discriminate``; an embedding ``--run`` goes to
    :mod:`experiments.reid_discriminate`."""
    from experiments.embedding_run import embedding_run_in

    if embedding_run_in(argv):
        from experiments import reid_discriminate

        return reid_discriminate.main(argv)
    a = parser().parse_args(argv)
    if a.catalog is not None:
        raise DataError(f"--catalog {a.catalog}: only for embedding runs; --run {a.run} is not one")

    def log(msg, file=None):
        print(msg, file=file or sys.stdout)

    return discriminate(
        a.run,
        a.images,
        a.attack,
        groups=a.groups,
        aggregate=a.aggregate,
        fpr=a.fpr,
        threshold=a.threshold,
        output=a.output,
        overwrite=a.overwrite,
        unreadable=a.unreadable,
        n_boot=a.n_boot,
        device=a.device,
        engine=a.engine,
        quiet=a.quiet,
        log=log,
    )
