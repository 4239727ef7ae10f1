"""The scorer of ``cli.py discriminate`` on a classifier run, shared with
:mod:`experiments.commands.openset_table`: an attack fitted on the run's attack set, the photo and
encounter scores on the scale the probability is fitted on, the class (candidate) scores, and
per level (photo, encounter) the Platt map to ``p_known``, its threshold and its evaluation.
Torch-free (the run's signals are numpy arrays)."""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field

import numpy as np

from attacks import open_set as osm
from attacks.group_bootstrap import bootstrap_cis
from attacks.knn import nearest_cosine
from attacks.signals import balanced, membership, subset
from datamodules.errors import DataError
from datamodules.manifest import encounter_key
from experiments.known_new.decisions import increasing, separable
from experiments.run.folder import RunContext, is_embedding_target

#: --attack -> (module, class); the module is imported alone (not the whole registry)
ATTACKS = {
    "yeom": ("attacks.yeom", "YeomAttack"),
    "salem": ("attacks.salem", "SalemAttack"),
    "baseline_msp": ("attacks.baselines", "MaxSoftmaxBaseline"),
    "cosine": ("attacks.baselines", "NearestNeighbourCosine"),
}
ALIASES = {"baseline_nn_cosine": "cosine"}
#: every accepted ``--attack`` (the one list its Literal type and checks derive from)
ATTACK_CHOICES = ("auto", *ATTACKS, *ALIASES)
#: every accepted ``--aggregate``: ``auto`` (mean, or mean_embedding with cosine scores), the
#: score rules of :func:`attacks.open_set.aggregate`, and ``vote`` (the majority of the photos'
#: decisions, see :func:`vote_level`)
AGGREGATE_CHOICES = ("auto", *osm.AGGREGATES, "vote")
SIGNAL_ATTACKS = tuple(ATTACKS) + tuple(ALIASES)


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
    gallery_index: np.ndarray | None = None  # (M,) manifest row of each training photo

    def photo_raw(self, sig: dict) -> np.ndarray:
        """The attack's score (N,) on the scale the probability is fitted on (:func:`feature`)."""
        return feature(self.name, np.asarray(self.attack.score(sig), dtype=np.float64))

    def nearest(self, emb: np.ndarray) -> np.ndarray:
        """Cosine (N,) of each embedding to its nearest training photo."""
        if len(emb) == 0 or len(self.gallery) == 0:
            return np.full(len(emb), np.nan)
        return nearest_cosine(emb, self.gallery)

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
        np.asarray(sig["index"][train]),
    )


# ---- calibration and the operating point, per level --------------------------------------------
@dataclass
class Level:
    """One level (``photo`` or ``encounter``): its Platt map to ``p_known``, the threshold on
    ``p_known``, the report of its rates on the attack and evaluation sets and whether those
    rates say it can separate known from new (:func:`~experiments.known_new.decisions.
    separable`)."""

    name: str
    platt: osm.Platt
    tau: float
    report: dict

    def p_known(self, raw: np.ndarray) -> np.ndarray:
        return self.platt(raw)

    @property
    def separable(self) -> bool:
        return bool(self.report["separable"])


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
    platt = increasing(osm.fit_platt(raw_a, y_a), raw_a)
    p_a, p_e = platt(raw_a), platt(raw_e)
    tau = float(threshold) if threshold is not None else osm.threshold_at_fpr(p_a, y_a, fpr)
    chosen = f"FPR {fpr} on the attack set" if threshold is None else "--threshold"
    sets = {"attack": (p_a, y_a, id_a), "eval": (p_e, y_e, id_e)}
    report = evaluate(sets, tau, chosen, fpr if threshold is None else None, n_boot)
    return Level(name, platt, tau, report)


def evaluate(sets: dict, tau: float, chosen_by: str, fpr_target, n_boot: int) -> dict:
    """The report of threshold ``tau`` on ``{set: (p_known, is_member, identity)}``: rates on
    the attack set, TPR, FPR and AUROC on the eval set with bootstrap intervals by individual,
    and whether they can separate (:func:`~experiments.known_new.decisions.separable`)."""
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


class VoteLevel(Level):
    """The ``vote`` encounter level: its ``p_known`` is the share of the encounter's photos
    called known at the photo threshold; known iff more than half are."""

    def p_known(self, share: np.ndarray) -> np.ndarray:
        return np.asarray(share, dtype=np.float64)


def vote_shares(p: np.ndarray, tau: float, enc: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(names (G,), share (G,))``: per encounter, the share of photo ``p`` (N,) >= ``tau``."""
    return osm.aggregate((np.asarray(p) >= tau).astype(np.float64), enc, "mean")


def vote_level(ctx: RunContext, sig: dict, scorer: Scorer, photo: Level, n_boot: int) -> Level:
    """The encounter level of ``--aggregate vote`` (the majority of the photo decisions),
    evaluated like the others on the run's encounters; it cannot separate when its photo level
    cannot."""
    sets = {}
    for name in ("attack", "eval"):
        s = subset(sig, name)
        enc = run_encounters(ctx, s)
        _, share = vote_shares(photo.p_known(scorer.photo_raw(s)), photo.tau, enc)
        y = osm.group_labels(membership(s), enc)[1].astype(int)
        sets[name] = (share, y, np.asarray(osm.group_labels(s["identity"], enc)[1]))
    tau = float(np.nextafter(0.5, 1.0))  # more than half
    report = evaluate(sets, tau, "the majority of its photos' decisions", None, n_boot)
    if report["separable"] and not photo.separable:
        report.update(separable=False, why_not="its photo level cannot separate")
    return VoteLevel("encounter", osm.Platt(1.0, 0.0), tau, report)


def held_out_nearest(scorer: Scorer, sig: dict) -> np.ndarray:
    """Nearest-training-photo cosine (N,) of the run's photos it was not trained on (its attack
    and evaluation sets): the reference of the out-of-distribution guard."""
    held = sig["split"] != "train"
    return scorer.nearest(np.asarray(sig["embedding"])[held])
