"""``python cli.py discriminate --run <run> --images <folder>``: is each new photo, and each
encounter, a whale of the catalog (known), a new one, or can the run not tell (undecided)? And
which catalog whales should a person check first?

Writes a folder (``--output``, default a fresh ``<run>/discriminate/<images folder>[-K]/``; a
non-empty one needs ``--overwrite``) with ``photos.csv``, ``encounters.csv``,
``candidates.csv``, ``operating_point.json`` and a contact sheet (``contact_sheet.html``).

* ``photos.csv``: one row per file under ``--images`` (recursively): ``photo`` (relative path),
  ``encounter``, ``p_known`` (3 decimals), ``rank`` (1 = most likely known), ``decision``
  (``known | new | undecided | skipped``), ``flag`` (``out_of_distribution``, ``viewpoint``,
  ``unreadable``, ``not_image`` or empty), ``note``. An encounter is a subfolder
  ``<folder>/<encounter>/*.jpg``, a ``--groups`` CSV (columns ``image``, ``group``, optional
  ``viewpoint``), or, for loose photos, a capture-time group (``--capture_gap`` minutes); else a
  loose photo is its own encounter. Unreadable files keep their encounter and are ``skipped``.
* ``encounters.csv``: ``encounter``, ``n_photos``, ``n_known_photos``, ``p_known``, ``rank``,
  ``decision``, ``rule`` (``--aggregate``: the ``mean`` or ``max`` of its photos' scores, their
  ``mean_embedding``, or ``vote``, the majority of its photos' decisions), ``margin`` (encounter
  ``p_known`` minus its threshold), ``flag``, ``note`` (says why when the decision differs from
  most of its photos').
* ``candidates.csv``: per encounter the 5 most likely catalog whales: ``individual``, ``score``
  (``score_kind``: softmax ``prob`` or ``cosine``), ``catalog_photo`` (that whale's training
  photo most similar to the encounter's photos) and ``query_photo`` (the photo that matched it).
* ``operating_point.json``: per level (photo, encounter) the threshold on ``p_known`` (chosen on
  the run's attack set for ``--fpr``, or ``--threshold``), its TPR, FPR and AUROC on the run's
  evaluation whales with 95% bootstrap intervals by individual, ``separable``; the rule, the
  ``warning`` (also the first printed line and on stderr), ``forced`` and the counts.

``p_known`` is the Platt-calibrated probability that the whale is in the catalog, from the
``--attack`` score, known and new whales weighted equally (a 50/50 prior). A level whose own
evaluation cannot separate known from new (AUROC interval reaching 0.5, TPR interval reaching
the FPR or the --fpr target, or TPR 0) decides ``undecided`` with a warning;
``--force_decisions`` decides anyway. A photo whose embedding is farther from every training photo than 99% of the run's held-out
photos are (nearest-photo cosine below their 1st percentile) is ``out_of_distribution`` and
``undecided``. ``<run>/fit_health.json`` with ``"at_chance": true`` adds a warning.

An embedding ``--run`` (``cli.py fit --config beluga_reid_cpu.yaml``) needs ``--catalog``, the
known whales' catalog: see :mod:`experiments.known_new.embedding_engine` (the same outputs).
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Literal

import numpy as np

from datamodules.errors import DataError
from experiments.known_new.classifier_scorer import (  # noqa: F401  (run_encounters: public)
    AGGREGATE_CHOICES,
    ATTACK_CHOICES,
    fit_run,
    run_encounters,
)
from experiments.known_new.decisions import (
    fit_health_warning,
    level_warning,
    ood_floor,
    ood_rule,
)
from experiments.known_new.output_folder import level_entry, one_warning, output_folder
from experiments.known_new.scan import IMAGE_EXT, add_photo_options, encounters_of, scan  # noqa: F401
from experiments.known_new.tables import (
    candidate_table,
    counts,
    encounter_table,
    photo_table,
    rule_text,
)
from experiments.run.config_files import add_flag, command_parser, parse_options
from experiments.run.folder import RunContext

#: --engine: what scores the new photos (see :func:`open_target`)
ENGINES = ("auto", "onnx", "torch")
LEVELS = ("photo", "encounter")


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


def open_target(ctx: RunContext, engine: str, device: str | None, log):
    """The engine that scores the new photos: the exported target run by ONNX Runtime
    (:class:`~experiments.target.onnx_engine.OnnxTarget`, no torch) or the torch model
    (:class:`~experiments.target.torch_engine.TorchTarget`). ``auto`` takes the exported one when the
    run's bundle is up to date and ``device`` is None or ``cpu``, else torch, saying why."""
    if engine == "onnx" or (engine == "auto" and device in (None, "cpu")):
        from experiments.target.onnx_engine import OnnxTarget

        target, why = OnnxTarget.open(ctx)
        if target is not None:
            return target
        if engine == "onnx":
            raise DataError(f"--engine onnx: {why}")
        log(f"scoring with torch: {why}", file=sys.stderr)
    from experiments.target.torch_engine import TorchTarget

    return TorchTarget(ctx)


def check_options(fpr: float, threshold: float | None, n_boot: int, capture_gap) -> None:
    """The numeric options (choices are refused while parsing)."""
    if not 0 < fpr < 1:
        raise DataError(f"--fpr {fpr}: a false-positive rate between 0 and 1, e.g. 0.05")
    if threshold is not None and not 0 <= threshold <= 1:
        raise DataError(f"--threshold {threshold}: a probability of known between 0 and 1")
    if not 10 <= n_boot <= 100000:
        raise DataError(f"--n_boot {n_boot}: give 10 to 100000 bootstrap replicates")
    if capture_gap is not None and not capture_gap > 0:
        raise DataError(f"--capture_gap {capture_gap}: minutes between encounters, e.g. 30")


def score_photos(target, known_new, good: list[Path], enc_of: dict, a) -> dict:
    """Scores, ``p_known``, decisions and the out-of-distribution guard of the new photos
    (:meth:`attacks.known_new.KnownNew.decide`), with their paths, encounters and embeddings."""
    sig = target.signals(good, lambda batches, total: _progress(batches, total, a.quiet))
    enc = np.asarray([enc_of[p] for p in good], dtype=object).astype(str)
    res = {"good": good, "enc": enc, "emb": np.asarray(sig["embedding"], dtype=np.float64)}
    res.update(known_new.decide(sig, enc, floor=a.floor, force=a.force_decisions))
    res["flag"] = np.where(res["ood"], "out_of_distribution", "").astype(object)
    res["note"] = np.array(
        [
            f"nearest training photo cosine {c:.3f} < {a.floor:.3f}" if o else ""
            for c, o in zip(res["nearest"], res["ood"])
        ],
        dtype=object,
    )
    return res


def level_warnings(levels: dict, forced: bool) -> list[str]:
    return [
        level_warning(lvl, lv.report["why_not"], forced)
        for lvl, lv in levels.items()
        if not lv.separable
    ]


def prepare(a) -> tuple:
    """Every check before slow work: ``(run, images folder, output folder)``."""
    check_options(a.fpr, a.threshold, a.n_boot, a.capture_gap)
    folder = Path(a.images)
    if not folder.is_dir():
        raise DataError(f"--images {folder}: not a folder; pass the folder of new photos")
    if a.groups is not None and not Path(a.groups).is_file():
        raise DataError(f"--groups {a.groups}: file not found")
    ctx = RunContext.open(a.run, a.device)
    if not ctx.checkpoint.is_file():
        raise DataError(
            f"--run {a.run}: no checkpoint {ctx.checkpoint}; pass a finished fit's folder"
        )
    return ctx, folder, output_folder(ctx.folder, folder, a.output, a.overwrite)


def discriminate(run, images, attack: str = "auto", *, log=print, **options) -> dict:
    """:func:`run_discriminate` from Python: ``options`` are the command's (``output``,
    ``fpr``, ``quiet``, ...), the rest take their command-line defaults."""
    a = parser().parse_args(["--run", str(run), "--images", str(images), "--attack", attack])
    unknown = set(options) - set(vars(a))
    if unknown:
        raise TypeError(f"discriminate: unknown options {sorted(unknown)}")
    for k, v in options.items():
        setattr(a, k, v)
    return run_discriminate(a, log)


def run_discriminate(a, log=print) -> dict:
    """Decide known, new or undecided for every photo and encounter under ``a.images`` (parsed
    options, see :func:`parser`); write the output folder and return ``operating_point.json``."""
    from experiments.known_new.output_folder import write_outputs

    ctx, folder, out = prepare(a)
    good, bad = scan(folder, {Path(a.groups)} if a.groups else None, a.unreadable)
    if not good:
        raise DataError(f"--images {folder}: no readable photos ({', '.join(sorted(IMAGE_EXT))})")
    enc_of, _, notes = encounters_of([*good, *bad], folder, a.groups, a.capture_gap)
    target = open_target(ctx, a.engine, a.device, log)
    sig = target.final_signals()
    options = {"fpr": a.fpr, "threshold": a.threshold, "n_boot": a.n_boot}
    known_new = fit_run(ctx, sig, a.attack, a.aggregate, **options)
    scorer, levels = known_new.scorer, known_new.levels
    a.floor = ood_floor(scorer.held_out_nearest(sig))
    t0 = time.perf_counter()
    res = score_photos(target, known_new, good, enc_of, a)
    res["note"] = [n or notes[p] for n, p in zip(res["note"], good)]
    per = (time.perf_counter() - t0) / len(good)
    tau = {lvl: lv.tau for lvl, lv in levels.items()}
    aggregate = "vote" if known_new.vote else scorer.rule
    tables = {
        "photos": photo_table(res, bad, folder, enc_of),
        "encounters": encounter_table(res, bad, enc_of, tau["encounter"], aggregate),
        "candidates": candidate_table(ctx, scorer, res, folder),
    }
    warnings = [w for w in [fit_health_warning(ctx.folder)] if w]
    warnings += level_warnings(levels, a.force_decisions)
    op = {
        "run": str(ctx.folder),
        "images": str(Path(folder).resolve()),
        "output": str(out),
        "engine": target.engine,
        "attack": scorer.name,
        "aggregate": aggregate,
        "rule": rule_text(scorer.name, aggregate, tau),
        "out_of_distribution_rule": ood_rule("training photo", a.floor),
        "p_known": P_KNOWN.format(scorer.name),
        "warning": one_warning(warnings),
        "warnings": warnings,
        "forced": bool(a.force_decisions),
        "capture_gap_minutes": a.capture_gap,
        "counts": counts(tables, bad),
        "seconds_per_photo": per,
    }
    for lvl, lv in levels.items():
        op[lvl] = level_entry({**lv.report, **lv.report["eval"]}, a.fpr)
        op[lvl].pop("eval", None)
    write_outputs(out, tables, op, log)
    return op


P_KNOWN = (
    "probability that the whale is in the catalog, from the {} score by Platt scaling on the "
    "run's attack set with known and new whales weighted equally (a 50/50 prior)"
)


def parser():
    """The ``cli.py discriminate`` argument parser (classifier runs)."""
    p = command_parser("discriminate", __doc__)
    p.add_argument("--run", type=str, required=True, help="finished run folder")
    add_photo_options(p)
    p.add_argument(
        "--catalog",
        type=str | None,
        default=None,
        help="embedding runs: the catalog of known whales (Where's Whale-do folder)",
    )
    p.add_argument(
        "--attack",
        type=Literal[ATTACK_CHOICES],
        default="auto",
        help="score behind p_known (auto: cosine for embedding targets, else yeom)",
    )
    p.add_argument(
        "--aggregate",
        type=Literal[AGGREGATE_CHOICES],
        default="auto",
        help="encounter rule (auto: mean_embedding with cosine, else mean; vote: the majority "
        "of its photos' decisions)",
    )
    p.add_argument("--fpr", type=float, default=0.05, help="target FPR on new individuals")
    p.add_argument(
        "--threshold", type=float | None, default=None, help="p_known threshold (overrides --fpr)"
    )
    p.add_argument("--device", type=str | None, default=None, help="cpu, cuda or None (auto)")
    p.add_argument(
        "--engine",
        type=Literal[ENGINES],
        default="auto",
        help="auto: the exported target when up to date, else torch",
    )
    add_flag(p, "quiet", "no progress bar")
    return p


def main(argv: list[str]) -> dict:
    """Entry point of ``python cli.py discriminate``; an embedding ``--run`` goes to
    :mod:`experiments.known_new.embedding_engine`."""
    from experiments.run.embedding_folder import embedding_run_in

    if embedding_run_in(argv):
        from experiments.known_new import embedding_engine as reid_discriminate

        return reid_discriminate.main(argv)
    a = parse_options(parser(), argv)
    if a.catalog is not None:
        raise DataError(f"--catalog {a.catalog}: only for embedding runs; --run {a.run} is not one")

    def log(msg, file=None):
        print(msg, file=file or sys.stdout)

    return run_discriminate(a, log)
