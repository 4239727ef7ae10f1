"""The words and guards around ``cli.py discriminate``'s decisions (both engines): the warnings
of a level that cannot separate and of a fit that ended at chance, the out-of-distribution
guard, and the note of an encounter that disagrees with its photos. Whether a level can
separate and the ``known | new | undecided`` rule are in :mod:`attacks.known_new_levels`."""

from __future__ import annotations

from pathlib import Path

import numpy as np

#: the ``decision`` column's values
DECISIONS = ("known", "new", "undecided", "skipped")
#: the out-of-distribution guard: a photo whose nearest-photo cosine is below this quantile of
#: the same statistic on the run's own held-out photos is ``out_of_distribution``
OOD_QUANTILE = 0.01


def level_warning(level: str, why: str, forced: bool) -> str:
    """The one-line warning of a level whose operating point cannot separate."""
    then = (
        "deciding anyway (--force_decisions)"
        if forced
        else "its decisions are undecided (--force_decisions decides anyway)"
    )
    return f"warning: the {level} operating point cannot separate known from new whales ({why}); {then}"


def fit_health_warning(run_folder: Path) -> str | None:
    """The warning of ``<run>/fit_health.json`` when the fit ended at chance on its own data
    (:func:`experiments.callbacks.fit_health.read_health`)."""
    from experiments.callbacks.fit_health import HEALTH_FILE, read_health

    health = read_health(run_folder) or {}
    path = Path(run_folder) / HEALTH_FILE
    if "unreadable" in health:
        return f"warning: {path} is unreadable; the fit's health is unknown"
    if health.get("at_chance") is True:
        return (
            f"warning: the fit ended at chance level on its own training data ({path}); its "
            "scores say nothing about known or new whales"
        )
    return None


def ood_floor(held_out_nearest: np.ndarray) -> float:
    """The out-of-distribution floor: the :data:`OOD_QUANTILE` quantile of the nearest-photo
    cosine of photos the model was not trained on but that are like its data; NaN if none."""
    v = np.asarray(held_out_nearest, dtype=np.float64)
    v = v[np.isfinite(v)]
    return float(np.quantile(v, OOD_QUANTILE)) if len(v) else float("nan")


def ood_rule(reference: str, floor: float) -> str:
    """The out-of-distribution rule in words."""
    return (
        f"a photo is out_of_distribution (decision undecided) when the cosine of its embedding "
        f"to the nearest {reference} is below {floor:.3f}, the {OOD_QUANTILE:.0%} quantile of "
        "the same statistic on the run's own held-out photos"
    )


def vote_note(n_known: int, n_new: int, decision: str, margin: float, rule: str) -> str:
    """The note of an encounter whose decision differs from the majority of its photos'
    decisions (empty when it agrees or its photos have no majority)."""
    if decision not in ("known", "new") or n_known == n_new:
        return ""
    majority = "known" if n_known > n_new else "new"
    if majority == decision:
        return ""
    side = "below" if margin < 0 else "at or above"
    return (
        f"{n_known} of {n_known + n_new} photos known; the {rule} score is {abs(margin):.3f} "
        f"{side} the encounter threshold"
    )


def encounter_decisions(
    photo_enc: np.ndarray, photo_dec: np.ndarray, names: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """``(n_known (G,), n_new (G,))`` photo decisions of each encounter of ``names``."""
    e, d = np.asarray(photo_enc).astype(str), np.asarray(photo_dec).astype(str)
    known = np.array([int(((e == n) & (d == "known")).sum()) for n in names], dtype=int)
    new = np.array([int(((e == n) & (d == "new")).sum()) for n in names], dtype=int)
    return known, new
