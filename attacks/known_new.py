"""Known or new whale, as a membership attack on a classifier's signals (pure numpy): a fitted
attack's score on a scale a logistic fit suits (:func:`feature`), the class (candidate) scores,
encounter aggregation (:class:`Scorer`), and per level (photo, encounter) the Platt map to
``p_known``, its threshold and its evaluation (:mod:`attacks.known_new_levels`).

One fit, one decision::

    known_new = KnownNew.fit(attack, run_signals, run_encounters, name="yeom", n_classes=C)
    out = known_new.decide(query_signals, query_encounters, floor=floor)

``run_signals`` are a run's final signals (:mod:`attacks.signals`: rows of the ``train``,
``attack`` and ``eval`` sets with ``role``, ``identity``, ``label``, ``embedding`` (N, D) and
what the attack scores); encounters are (N,) strings, one per row (rows of one encounter share
an identity). Scores are higher for known whales.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from attacks import open_set as osm
from attacks.knn import nearest_cosine
from attacks.known_new_levels import (
    Level,
    decide,
    fit_level,
    vote_level,
    vote_shares,
)
from attacks.signals import membership, subset


def feature(name: str, score: np.ndarray) -> np.ndarray:
    """A monotone rescaling of attack ``name``'s score (N,) on which a logistic fit is well
    specified: minus the log of the loss for ``yeom`` (its score is minus a loss, which piles up
    near 0) and for ``baseline_msp`` (the loss of the top class is ``-log max_prob``), the logit
    of Salem's probability; cosine similarities as they are. The ranking, and so every AUROC, is
    unchanged."""
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
    """A fitted attack (``score(signals) -> (N,)``, higher = known), the gallery of training
    photos and how candidates and encounters are scored: by softmax probabilities, or with
    ``by_cosine`` by the nearest training photo of each class; encounters by ``rule``
    (:data:`attacks.open_set.AGGREGATES`)."""

    attack: object
    name: str
    gallery: np.ndarray  # (M, D) embeddings of the training photos
    gallery_label: np.ndarray  # (M,)
    n_classes: int
    rule: str
    by_cosine: bool = field(default=False)
    gallery_index: np.ndarray | None = None  # (M,) manifest row of each training photo

    @classmethod
    def from_signals(
        cls, attack, name: str, sig: dict, n_classes: int, rule: str, by_cosine: bool
    ) -> Scorer:
        """The scorer whose gallery is the ``train`` rows of ``sig`` (with ``embedding``,
        ``label`` and ``index``)."""
        train = sig["split"] == "train"
        index = np.asarray(sig["index"][train]) if "index" in sig else None
        return cls(
            attack,
            name,
            np.asarray(sig["embedding"][train], dtype=np.float64),
            np.asarray(sig["label"][train]),
            n_classes,
            rule,
            by_cosine,
            index,
        )

    def photo_raw(self, sig: dict) -> np.ndarray:
        """The attack's score (N,) on the scale the probability is fitted on (:func:`feature`)."""
        return feature(self.name, np.asarray(self.attack.score(sig), dtype=np.float64))

    def nearest(self, emb: np.ndarray) -> np.ndarray:
        """Cosine (N,) of each embedding (N, D) to its nearest training photo."""
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

    def encounters(
        self, sig: dict, raw: np.ndarray, enc: np.ndarray, classes: bool = True
    ) -> tuple:
        """``(names (G,), raw score (G,), class scores (G, C))`` of the encounters ``enc`` (N,)
        of the rows of ``sig`` with photo scores ``raw`` (N,); class scores ``None`` unless
        ``classes`` (they cost N x C, which fitting a threshold does not need)."""
        if self.rule == "mean_embedding":
            names, e = osm.aggregate(sig["embedding"], enc, "mean_embedding")
            graw = self.nearest(e)
            if not classes:
                return names, graw, None
            if self.by_cosine:
                return (
                    names,
                    graw,
                    osm.class_similarity(e, self.gallery, self.gallery_label, self.n_classes),
                )
            return names, graw, osm.aggregate(self.class_scores(sig), enc, "mean")[1]
        names, graw = osm.aggregate(raw, enc, self.rule)
        if not classes:
            return names, graw, None
        rule = "mean" if not self.by_cosine else self.rule
        return names, graw, osm.aggregate(self.class_scores(sig), enc, rule)[1]

    def level_sets(self, sig: dict, enc: np.ndarray, level: str) -> dict:
        """``{set: (raw score, is_member, identity)}`` of the attack and eval sets of ``sig``,
        one row per photo or per encounter (``enc`` (N,) of every row of ``sig``)."""
        out = {}
        for name in ("attack", "eval"):
            s = subset(sig, name)
            if level == "encounter":
                rows = encounter_rows(self, s, enc[sig["set"] == name], classes=False)
                raw, y, ident = rows["score"], rows["member"], rows["identity"]
            else:
                raw, y, ident = self.photo_raw(s), membership(s), s["identity"]
            out[name] = (raw, np.asarray(y).astype(int), np.asarray(ident))
        return out

    def held_out_nearest(self, sig: dict) -> np.ndarray:
        """Nearest-training-photo cosine (N',) of the rows of ``sig`` not in ``train`` (its
        attack and evaluation sets): the reference of an out-of-distribution guard."""
        return self.nearest(np.asarray(sig["embedding"])[sig["split"] != "train"])


def encounter_rows(scorer: Scorer, sig: dict, enc: np.ndarray, classes: bool = True) -> dict:
    """One row per encounter of labelled signals ``sig`` (G encounters of ``enc`` (N,)) by
    ``scorer``: ``name``, ``score`` (G,), ``cls`` (G, C) class scores (``None`` unless
    ``classes``), ``member`` (G,) 0/1, ``identity`` (G,), ``label`` (G,)."""
    names, score, cls = scorer.encounters(sig, scorer.photo_raw(sig), enc, classes)
    return {
        "name": names,
        "score": score,
        "cls": cls,
        "member": osm.group_labels(membership(sig), enc)[1],
        "identity": osm.group_labels(sig["identity"], enc)[1],
        "label": osm.group_labels(sig["label"], enc)[1],
    }


@dataclass
class KnownNew:
    """A fitted known/new scorer: the :class:`Scorer` and its ``photo`` and ``encounter``
    levels (:class:`~attacks.known_new_levels.Level`; with ``vote`` an encounter is known iff
    more than half of its photos are)."""

    scorer: Scorer
    levels: dict[str, Level]
    vote: bool = False

    @classmethod
    def fit(
        cls,
        attack,
        sig: dict,
        enc: np.ndarray,
        *,
        name: str,
        n_classes: int,
        rule: str = "mean",
        by_cosine: bool = False,
        vote: bool = False,
        fpr: float = 0.05,
        threshold: float | None = None,
        n_boot: int = 1000,
    ) -> KnownNew:
        """Fit both levels on a run's signals ``sig`` with encounters ``enc`` (N,): the fitted
        ``attack`` (named ``name``, for :func:`feature`) scores the photos, the ``train`` rows
        are the gallery, each level's Platt map and threshold (``fpr`` on the new whales of the
        attack set, or ``threshold`` on ``p_known``) come from the attack set and its rates
        from the eval set (``n_boot`` bootstrap replicates). Raises ValueError when a set lacks
        known or new whales."""
        enc = np.asarray(enc)
        scorer = Scorer.from_signals(attack, name, sig, n_classes, rule, by_cosine)
        photo = fit_level("photo", scorer.level_sets(sig, enc, "photo"), fpr, threshold, n_boot)
        if vote:
            shares = {}
            for set_name in ("attack", "eval"):
                s, e = subset(sig, set_name), enc[sig["set"] == set_name]
                _, share = vote_shares(photo.p_known(scorer.photo_raw(s)), photo.tau, e)
                y = osm.group_labels(membership(s), e)[1].astype(int)
                shares[set_name] = (share, y, np.asarray(osm.group_labels(s["identity"], e)[1]))
            encounter = vote_level(shares, photo, n_boot)
        else:
            sets = scorer.level_sets(sig, enc, "encounter")
            encounter = fit_level("encounter", sets, fpr, threshold, n_boot)
        return cls(scorer, {"photo": photo, "encounter": encounter}, vote)

    def decide(
        self, sig: dict, enc: np.ndarray, *, floor: float = float("nan"), force: bool = False
    ) -> dict:
        """Scores and decisions of query photos ``sig`` (N rows: what the attack scores,
        ``embedding`` (N, D) and ``logits`` (N, C)) in encounters ``enc`` (N,).

        Returns ``p`` (N,) photo ``p_known``, ``nearest`` (N,) nearest-training-photo cosine,
        ``ood`` (N,) bool (``nearest < floor``), ``dec`` (N,) ``known | new | undecided``
        (out-of-distribution photos undecided), ``enc_names`` (G,), ``enc_p`` (G,), ``enc_cs``
        (G, C) class scores, ``enc_dec`` (G,). A level that cannot separate decides
        ``undecided`` unless ``force``."""
        photo, encounter = self.levels["photo"], self.levels["encounter"]
        raw = self.scorer.photo_raw(sig)
        names, graw, gcs = self.scorer.encounters(sig, raw, enc)
        p = photo.p_known(raw)
        if self.vote:
            graw = vote_shares(p, photo.tau, enc)[1]
        enc_p = encounter.p_known(graw)
        nearest = self.scorer.nearest(sig["embedding"])
        dec = decide(p, photo.tau, photo.separable or force)
        ood = nearest < floor
        dec[ood] = "undecided"
        return {
            "p": p,
            "nearest": nearest,
            "ood": ood,
            "dec": dec,
            "enc_names": list(names),
            "enc_p": enc_p,
            "enc_cs": gcs,
            "enc_dec": decide(enc_p, encounter.tau, encounter.separable or force),
        }
