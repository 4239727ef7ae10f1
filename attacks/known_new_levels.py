"""The operating point of known/new decisions at one level (photo or encounter), pure numpy: the
Platt map of a score to ``p_known`` and its threshold fitted on a calibration (attack) set, its
rates with bootstrap intervals by individual on an evaluation set, and whether those rates can
separate known from new whales at all.

Sets are ``{"attack": (score (N,), is_member (N,) 0/1, identity (N,)), "eval": (...)}``; scores
are higher for known whales. :mod:`attacks.known_new` fits the levels from a run's signals.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from attacks import open_set as osm
from attacks.group_bootstrap import bootstrap_cis


def separable(tpr: list, fpr: list, auroc: list, fpr_target: float | None = None) -> tuple:
    """``(can separate, why not)`` of an operating point from its evaluation ``[point, lo, hi]``
    rates: it cannot when the AUROC interval reaches chance (lower bound <= 0.5), the TPR
    interval reaches the FPR (lower bound <= the evaluation FPR, or <= ``fpr_target`` when the
    threshold was chosen for one) or the TPR is 0. A NaN bound counts as reaching chance (too
    few individuals to tell)."""
    bar = max(fpr[0], fpr_target or 0.0)
    if not tpr[0] > 0:
        return False, f"TPR {tpr[0]:.3f}"
    if not auroc[1] > 0.5:
        return False, f"AUROC {auroc[0]:.3f} [{auroc[1]:.3f}, {auroc[2]:.3f}] reaches chance 0.5"
    if not tpr[1] > bar:
        return False, f"TPR [{tpr[1]:.3f}, {tpr[2]:.3f}] does not exceed FPR {bar:.3f}"
    return True, ""


def increasing(platt: osm.Platt, scores: np.ndarray) -> osm.Platt:
    """``platt``, or a nearly flat increasing map (``p_known`` about 0.5 everywhere) when its
    slope is not positive: a score that ranks new whales above known ones on the calibration
    set must not turn into a probability that reverses the decision rule (score >= threshold)."""
    if platt.a > 0:
        return platt
    sd = float(np.std(np.asarray(scores, dtype=np.float64))) or 1.0
    return osm.Platt(a=1e-6 / sd, b=0.0)


def decide(p_known: np.ndarray, tau: float, can_decide: bool) -> np.ndarray:
    """(N,) ``known`` iff ``p_known`` (N,) ``>= tau``, else ``new``; ``undecided`` everywhere
    when the level cannot decide (:func:`separable`, not forced)."""
    p = np.asarray(p_known, dtype=np.float64)
    if not can_decide:
        return np.full(len(p), "undecided", dtype=object)
    return np.where(p >= tau, "known", "new").astype(object)


@dataclass
class Level:
    """One level (``photo`` or ``encounter``): its Platt map to ``p_known``, the threshold
    ``tau`` on ``p_known``, the report of its rates on the attack and evaluation sets and
    whether those rates can separate known from new (:func:`separable`)."""

    name: str
    platt: osm.Platt
    tau: float
    report: dict

    def p_known(self, raw: np.ndarray) -> np.ndarray:
        """``p_known`` (N,) of scores ``raw`` (N,)."""
        return self.platt(raw)

    @property
    def separable(self) -> bool:
        return bool(self.report["separable"])


class VoteLevel(Level):
    """The ``vote`` encounter level: its ``p_known`` is the share of the encounter's photos
    called known at the photo threshold; known iff more than half are."""

    def p_known(self, share: np.ndarray) -> np.ndarray:
        return np.asarray(share, dtype=np.float64)


def fit_level(name: str, sets: dict, fpr: float, threshold: float | None, n_boot: int) -> Level:
    """Platt map fitted on the attack set (classes weighted equally, kept increasing);
    threshold on ``p_known`` for ``fpr`` on the attack set's new individuals (or
    ``threshold``); TPR, FPR and AUROC on the eval set with bootstrap intervals resampled by
    individual. Raises ValueError when a set lacks known or new rows."""
    raw_a, y_a, id_a = sets["attack"]
    raw_e, y_e, id_e = sets["eval"]
    if y_a.min() == y_a.max() or y_e.min() == y_e.max():
        raise ValueError(f"{name} level: the run's attack and eval sets need known and new whales")
    platt = increasing(osm.fit_platt(raw_a, y_a), raw_a)
    p_a, p_e = platt(raw_a), platt(raw_e)
    tau = float(threshold) if threshold is not None else osm.threshold_at_fpr(p_a, y_a, fpr)
    chosen = f"FPR {fpr} on the attack set" if threshold is None else "--threshold"
    sets = {"attack": (p_a, y_a, id_a), "eval": (p_e, y_e, id_e)}
    report = evaluate(sets, tau, chosen, fpr if threshold is None else None, n_boot)
    return Level(name, platt, tau, report)


def vote_level(shares: dict, photo: Level, n_boot: int) -> VoteLevel:
    """The encounter level that votes: known iff more than half of its photos are known at
    ``photo``'s threshold. ``shares`` holds the sets with the share of known photos (G,) as
    score; it cannot separate when ``photo`` cannot."""
    tau = float(np.nextafter(0.5, 1.0))  # more than half
    report = evaluate(shares, tau, "the majority of its photos' decisions", None, n_boot)
    if report["separable"] and not photo.separable:
        report.update(separable=False, why_not="its photo level cannot separate")
    return VoteLevel("encounter", osm.Platt(1.0, 0.0), tau, report)


def vote_shares(p: np.ndarray, tau: float, enc: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(names (G,), share (G,))``: per encounter, the share of photo ``p`` (N,) >= ``tau``."""
    return osm.aggregate((np.asarray(p) >= tau).astype(np.float64), enc, "mean")


def evaluate(sets: dict, tau: float, chosen_by: str, fpr_target, n_boot: int) -> dict:
    """The report of threshold ``tau`` on ``{set: (p_known, is_member, identity)}``: rates on
    the attack set, TPR, FPR and AUROC ``[point, lo, hi]`` on the eval set with 95% bootstrap
    intervals by individual (seed 0), and whether they can separate (:func:`separable`)."""
    (p_a, y_a, id_a), (p_e, y_e, id_e) = sets["attack"], sets["eval"]

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
    ok, why = separable(list(ci["tpr"]), list(ci["fpr"]), list(ci["auroc"]), fpr_target)
    return {
        "separable": ok,
        "why_not": why,
        "threshold_p": tau,
        "chosen_by": chosen_by,
        "attack_set": {"tpr": tpr_a, "fpr": fpr_a, **counts(y_a, id_a)},
        "eval": {
            **{k: list(v) for k, v in ci.items()},
            "ci": "95% bootstrap, resampled by individual",
            **counts(y_e, id_e),
        },
    }
