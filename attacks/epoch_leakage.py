"""Per-epoch leakage summary of one signal file: accuracies, overfitting gap, KL against its
permutation null, and every cheap attack (no training) at both audit levels.

Pure numpy over the arrays of :mod:`attacks.signals`; the leakage monitor logs its output.

Audit levels:

* **identity level** (the whale question): members are photos of individuals the target knows
  (ID1), non-members photos of individuals it never saw (ID2 in the attack set, ID3 in the
  evaluation set); label-free signals. The threshold is fitted on the (balanced) attack set and
  frozen for the (balanced) evaluation set.
* **sample level** (the classic audit, the one DP protects): members are the target's training
  photos (ID1-train), non-members held-out photos of the same individuals with their true labels
  (ID1-val, ID1-test). The threshold is fitted on ID1-val against one half of the training photos
  and frozen for ID1-test against the other half.
"""

from __future__ import annotations

import warnings

import numpy as np

from attacks.baselines import nn_cosine_scores
from attacks.dp_audit import audit_attacks
from attacks.metrics import histogram_kl, kl_permutation_null, threshold_metrics
from attacks.registry import entries, get
from attacks.signals import accuracy, balanced, membership, select, subset


def cheap_attacks() -> dict[str, tuple[str, str]]:
    """The cheap attacks the leakage monitor scores: metric stem (the attack's short name) ->
    (registered attack, level), every attack registered with ``cheap=<level>``, in registry
    order. ``yeom`` and ``msp`` rank photos identically (loss_pred = -log max softmax): their
    curves coincide and the figure labels them together. ``label_only`` is scored only when the
    signals carry ``boundary_distance`` (opt-in: it queries the model)."""
    return {e.short: (e.name, e.cheap) for e in entries("classifier") if e.cheap}


def audit_stems() -> tuple[str, ...]:
    """The attacks of the DP audit (``leak/eps_lb``): every cheap attack the signals allow, each
    fitted and counted at the sample level, whose members are the training photos DP-SGD
    protects; the sample-level ones first (ties of :func:`best_audit_attack` go to the first)."""
    cheap = cheap_attacks()
    return tuple(sorted(cheap, key=lambda stem: cheap[stem][1] != "sample"))


def __getattr__(name: str):
    """``CHEAP_ATTACKS`` and ``AUDIT_ATTACKS``: :func:`cheap_attacks` and :func:`audit_stems`
    of the attacks registered now."""
    if name == "CHEAP_ATTACKS":
        return cheap_attacks()
    if name == "AUDIT_ATTACKS":
        return audit_stems()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


#: the per-attack metrics logged as ``leak/<stem>_<metric>``
ATTACK_METRICS = ("auc", "adv", "tpr@1%fpr", "acc")


def level_sets(signals: dict, level: str, seed: int = 0) -> tuple[dict, dict] | None:
    """``(fit rows, evaluation rows)`` of one audit level (see the module docstring), both
    balanced between members and non-members; None when a side lacks members or non-members."""
    if level == "identity":
        att, ev = subset(signals, "attack"), subset(signals, "eval")
    else:
        split, has = signals["split"], signals["label"] >= 0
        if "loss_true" in signals:  # rows whose true label the target has (no NaN loss)
            has = has & np.isfinite(np.asarray(signals["loss_true"], dtype=np.float64))
        train = np.flatnonzero(split == "train")
        half = np.zeros(len(split), dtype=bool)
        half[np.random.default_rng(seed).permutation(train)[: len(train) // 2]] = True
        sig = dict(signals)
        sig["role"] = np.where(split == "train", "member", "nonmember")
        att = select(sig, ((split == "val") | half) & has)
        ev = select(sig, ((split == "test") | ((split == "train") & ~half)) & has)
    for rows in (att, ev):
        if len(np.unique(membership(rows))) < 2:
            return None
    return att, ev


def attack_metrics(
    stem: str, signals: dict, sets: tuple[dict, dict], seed: int = 0
) -> dict[str, float] | None:
    """One cheap attack fitted on ``sets[0]``, scored on ``sets[1]`` (balanced): its
    ``leak/<stem>_*`` metrics (plus the ``attack/*`` headline for ``yeom``); None when the
    signals lack a field it reads."""
    name, _ = cheap_attacks()[stem]
    att, ev = sets
    if stem == "label_only":  # only the rows whose boundary distance was measured
        if "boundary_distance" not in signals:
            return None
        att, ev = (select(s, np.isfinite(s["boundary_distance"])) for s in (att, ev))
        if min(len(np.unique(membership(s))) for s in (att, ev)) < 2:
            return None
    cls = get(name)
    if not set(cls.requires) <= set(signals):
        return None
    attack = cls.for_run(signals).fit(balanced(att, seed))
    ev = balanced(ev, seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # few rows per epoch: low-FPR figures are coarse
        m = threshold_metrics(attack.score(ev), membership(ev), attack.score_threshold)
    out = {f"leak/{stem}_{k}": float(m[k if k != "adv" else "advantage"]) for k in ATTACK_METRICS}
    if stem == "yeom":
        out.update({f"attack/{k}": float(m[k]) for k in ("acc", "auc", "tpr@1%fpr", "fpr")})
    return out


def _loo_nn_cosine(att: dict, ev: dict) -> tuple[np.ndarray, np.ndarray]:
    """Sample-level nearest-neighbour cosine: the gallery is the fit rows' members (training
    photos that are never evaluated). Fit rows: similarity to the gallery without the row itself
    (leave one out, or every member would score 1; -1 for a lone photo); eval rows: to the whole
    gallery."""
    mem = membership(att).astype(bool)
    gallery = np.asarray(att["embedding"], dtype=np.float64)[mem]
    gallery = gallery / (np.linalg.norm(gallery, axis=1, keepdims=True) + 1e-12)
    q = np.asarray(att["embedding"], dtype=np.float64)
    sims = (q / (np.linalg.norm(q, axis=1, keepdims=True) + 1e-12)) @ gallery.T
    sims[np.flatnonzero(mem), np.arange(len(gallery))] = -1.0  # the lowest cosine
    return sims.max(1), nn_cosine_scores(gallery, ev["embedding"])


def audit_scores(stem: str, signals: dict, sets: tuple[dict, dict]) -> tuple | None:
    """``(fit scores, fit is_member, eval scores, eval is_member)`` of one cheap attack on the
    sample-level ``sets`` (:func:`level_sets`), all rows (unbalanced: more rows, tighter
    intervals); None when the signals lack a field it reads."""
    att, ev = sets
    if stem == "label_only":
        if "boundary_distance" not in signals:
            return None
        att, ev = (select(s, np.isfinite(s["boundary_distance"])) for s in (att, ev))
        if min(len(np.unique(membership(s))) for s in (att, ev)) < 2:
            return None
    cls = get(cheap_attacks()[stem][0])
    if not set(cls.requires) <= set(signals):
        return None
    if stem == "nn_cosine":
        fit, score = _loo_nn_cosine(att, ev)
    else:
        attack = cls.for_run(signals)
        fit, score = attack.score(att), attack.score(ev)
    return fit, membership(att), score, membership(ev)


def epsilon_audit(
    signals: dict, sets: tuple[dict, dict], stems: tuple[str, ...], delta: float
) -> dict[str, float]:
    """``leak/eps_lb`` (the best) and ``leak/eps_lb_<stem>`` for every attack of ``stems`` in
    :data:`AUDIT_ATTACKS` the signals allow: :func:`attacks.dp_audit.audit_attacks` at 95%,
    Bonferroni over the attacks audited; empty when none is."""
    scored = {}
    for stem in (s for s in audit_stems() if s in stems):
        got = audit_scores(stem, signals, sets)
        if got is not None:
            scored[stem] = got
    if not scored:
        return {}
    res = audit_attacks(scored, delta=delta)
    out = {"leak/eps_lb": float(res["best"]["eps_lb"])}
    out.update({f"leak/eps_lb_{k}": float(v["eps_lb"]) for k, v in res["per_attack"].items()})
    return out


def best_audit_attack(metrics: dict) -> tuple[str | None, float]:
    """``(stem, eps_lb)`` of the attack behind ``leak/eps_lb`` in ``metrics`` (the
    ``leak/eps_lb_<stem>`` scalars; ties go to the first of :data:`AUDIT_ATTACKS`); ``(None,
    value)`` when no attack proves a bound above 0."""
    best = metrics.get("leak/eps_lb", float("nan"))
    per = [(s, metrics.get(f"leak/eps_lb_{s}", float("nan"))) for s in audit_stems()]
    per = [(s, v) for s, v in per if v == v]
    if not per or not max(v for _, v in per) > 0:
        return None, best
    stem, value = max(per, key=lambda sv: sv[1])  # max keeps the first of equal values
    return stem, value


def leakage_metrics(
    signals: dict,
    *,
    kl_bins: int = 20,
    seed: int = 0,
    attacks: tuple[str, ...] | None = None,
    delta: float | None = None,
) -> dict[str, float]:
    """Metrics logged every monitored epoch.

    * ``leak/train_acc``, ``leak/val_acc``, ``leak/test_acc``: eval-mode top-1 accuracy on ID1.
    * ``leak/gap``: overfitting level, train minus test accuracy.
    * ``leak/kl``: KL(members || non-members) of the predicted-label cross-entropy on the
      evaluation set (ID1-test vs ID3), identity level (see ``histogram_kl``), and
      ``leak/kl_null``: the same KL under a permutation null at the same sample sizes
      (:func:`attacks.metrics.kl_permutation_null`), the floor a KL must clear.
    * ``leak/kl_photo`` and ``leak/kl_photo_null``: KL(train || test) of the true-label
      cross-entropy on ID1 (sample level) and its null.
    * ``leak/<stem>_{auc,adv,tpr@1%fpr,acc}`` for every attack of ``attacks`` (default: all of
      :data:`CHEAP_ATTACKS` the signals allow): AUC, attacker advantage (max TPR - FPR), TPR at
      1% FPR and accuracy at the frozen threshold, on the balanced evaluation rows.
    * ``attack/acc``, ``attack/auc``, ``attack/tpr@1%fpr``, ``attack/fpr``: the headline, Yeom
      on ``loss_pred`` at the identity level.
    * ``leak/eps_lb`` (with ``delta``, for DP runs): the empirical lower bound on epsilon of the
      best attack, and ``leak/eps_lb_<stem>`` that of each, every attack of
      :data:`AUDIT_ATTACKS` scored at the sample level (:func:`epsilon_audit`; 95% together).
    """
    out = {
        "leak/train_acc": accuracy(signals, "train"),
        "leak/val_acc": accuracy(signals, "val"),
        "leak/test_acc": accuracy(signals, "test"),
    }
    out["leak/gap"] = out["leak/train_acc"] - out["leak/test_acc"]
    ev = subset(signals, "eval")
    mem = membership(ev).astype(bool)
    tr = signals["loss_true"][signals["split"] == "train"]
    te = signals["loss_true"][signals["split"] == "test"]
    for key, (p, q) in {
        "leak/kl": (ev["loss_pred"][mem], ev["loss_pred"][~mem]),
        "leak/kl_photo": (tr, te),
    }.items():
        out[key] = histogram_kl(p, q, bins=kl_bins)
        out[f"{key}_null"] = kl_permutation_null(p, q, bins=kl_bins, seed=seed)
    levels = {lv: level_sets(signals, lv, seed) for lv in ("identity", "sample")}
    cheap = cheap_attacks()
    stems = attacks if attacks is not None else tuple(cheap)
    for stem in stems:
        level = cheap[stem][1]
        got = None if levels[level] is None else attack_metrics(stem, signals, levels[level], seed)
        if got is not None:
            out.update(got)
    if delta is not None and levels["sample"] is not None:
        out.update(epsilon_audit(signals, levels["sample"], stems, delta))
    return out
