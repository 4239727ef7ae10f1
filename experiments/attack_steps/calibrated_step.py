"""The calibrated attacks of ``cli.py attack`` (LiRA online/offline, RMIA) at the sample and
identity levels, their reference models (the report's uncertainty/risk section is :mod:`experiments.attack_steps.results`).

Sample level: ID1 photos, members = the target's training photos, non-members = its held-out
(val, test) photos of the same individuals; the attack is fitted on one seeded half of the ID1
individuals and evaluated on the other. Identity level: the run's attack set (fit) and
evaluation set, as for the other attacks. See ``docs/calibrated_attacks.md``.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from attacks.lira import logit_confidence
from attacks.signals import load_signals, save_signals, select, subset
from experiments.run.folder import RunContext
from experiments.side_models.reference import (
    cache_key,
    describe,
    load_references,
    train_reference,
    validate,
)
from lightning_modules.augmented import augmented_logits


def reference_folders(ctx: RunContext, s, reference_runs: list[str], log=print) -> list[Path]:
    """Folders holding the references: ``reference_runs`` (validated) or this run's cache,
    where the missing ones of ``s.index`` (all when None) are trained first."""
    if reference_runs:
        folders = [Path(f) for f in reference_runs]
        for f in folders:
            validate(f, ctx, s)
        return folders
    folder = ctx.folder / "references" / cache_key(ctx, s)
    folder.mkdir(parents=True, exist_ok=True)
    describe(ctx, s, folder)
    for k in s.index if s.index is not None else range(s.n_models):
        for level in s.levels:
            train_reference(ctx, s, level, k, folder, log)
    return [folder]


def target_views(ctx: RunContext, s) -> tuple[np.ndarray, float]:
    """The target's augmented logits (N, A, C) over every manifest row, cached in
    ``signals/augmented_flip<f>_shift<s>.npz``, and the query time per sample (s)."""
    path = ctx.folder / "signals" / f"augmented_flip{int(s.flip)}_shift{s.shift}.npz"
    if path.is_file():
        z = load_signals(path)
        return z["aug_logits"], float(z["seconds_per_sample"][0])
    t0 = time.perf_counter()
    _, logits = augmented_logits(
        ctx.model(), ctx.loader(ctx.rows), ctx.device, flip=s.flip, shift=s.shift
    )
    per = (time.perf_counter() - t0) / max(1, len(ctx.rows))
    save_signals(path, {"aug_logits": logits, "seconds_per_sample": np.full(len(logits), per)})
    return logits, per


def level_signals(sig: dict, target: np.ndarray, refs: list[dict], level: str) -> dict:
    """``sig`` plus ``cal_phi`` (N, A), ``ref_phi`` (N, K, A), ``ref_in`` (N, K): the true-label
    logit confidence at the sample level, the label-free (max-class) one at the identity level."""
    label = None
    idx = np.asarray(sig["index"])
    if level == "sample":
        lab = np.asarray(sig["label"])
        label = np.where(lab >= 0, lab, np.asarray(target)[idx].mean(1).argmax(-1))[:, None]
    phi = logit_confidence(target[idx], label)
    ref_phi = np.stack([logit_confidence(r["aug_logits"][idx], label) for r in refs], 1)
    ref_in = np.stack([np.asarray(r["in_mask"], bool)[idx] for r in refs], 1)
    return {**sig, "cal_phi": phi, "ref_phi": ref_phi, "ref_in": ref_in}


def sample_sets(sig: dict, class_names: list[str], seed: int) -> tuple[dict, dict]:
    """Sample-level ``(fit, eval)`` rows: ID1 photos with ``role`` member iff ``split == train``,
    split by a seeded half of the individuals (fit on one half, evaluate on the other)."""
    known = np.isin(sig["identity"], class_names) & np.isin(sig["split"], ["train", "val", "test"])
    rows = select(sig, known)
    rows["role"] = np.where(rows["split"] == "train", "member", "nonmember")
    names = np.array(sorted(set(rows["identity"])))
    rng = np.random.default_rng(seed)
    fit_ids = set(rng.permutation(names)[: len(names) // 2])
    in_fit = np.array([i in fit_ids for i in rows["identity"]])
    return select(rows, in_fit), select(rows, ~in_fit)


def _jobs_for_level(inp, job_cls, level: str, fit: dict, ev: dict, cost: dict) -> list:
    """The LiRA and RMIA jobs of one level (and Yeom/Salem at the sample level)."""
    s, k = inp.settings.calibrated, inp.settings.calibrated.n_models
    base = {**inp.common, "level": level, "n_references": k, **cost}
    specs = [(f"{level}_lira_offline", "lira_offline", {"variance": s.variance})]
    if level == "sample":  # identity level: no reference may be IN for an evaluated individual
        specs.append((f"{level}_lira_online", "lira_online", {"variance": s.variance}))
    for kk in sorted({min(x, k) for x in s.rmia_refs}):
        args = {
            "offline": True,
            "a": s.a,
            "gamma": s.gamma,
            "max_refs": kk,
            "seed": inp.settings.seed,
        }
        specs.append((f"{level}_rmia_k{kk}", "rmia", args))
    if level == "sample" and s.compare:
        specs.append((f"{level}_yeom", "yeom", {"signal": "loss_true"}))
        ss = inp.settings.salem
        specs.append(
            (
                f"{level}_salem",
                "salem",
                {
                    "topk": ss.topk,
                    "epochs": ss.epochs,
                    "lr": ss.lr,
                    "threshold": ss.threshold,
                    "seed": inp.settings.seed,
                },
            )
        )
    jobs = []
    for name, attack, args in specs:
        n_ref = args.get("max_refs") or (k if attack.startswith(("lira", "rmia")) else 0)
        prep = sum(cost["reference_train_seconds"][:n_ref]) if n_ref else 0.0
        info = {**base, **args, "n_references": n_ref, "fit_on": f"{level}-level fit rows"}
        job = job_cls(
            name,
            attack,
            args,
            inp.fit_rows(fit),
            ev,
            info,
            inp.settings.balanced,
            prep_seconds=prep,
            query_seconds=cost["target_query_seconds_per_sample"],
        )
        jobs.append(job)
    return jobs


def calibrated_jobs(inp, job_cls) -> list:
    """Jobs of every enabled level; the references are trained (or loaded) first."""
    s = inp.settings.calibrated
    if not s.enabled:
        return []
    ctx = inp.ctx
    t0 = time.perf_counter()
    folders = reference_folders(ctx, s, inp.settings.reference_runs, inp.log)
    t1 = time.perf_counter()
    target, per = target_views(ctx, s)
    t2 = time.perf_counter()
    inp.log(
        f"calibrated: references ready in {t1 - t0:.1f} s (trained or loaded from the cache), "
        f"target's augmented queries in {t2 - t1:.1f} s"
    )
    this_call = {"references_seconds_this_call": t1 - t0, "target_views_seconds_this_call": t2 - t1}
    jobs = []
    for level in s.levels:
        refs, infos = load_references(folders, level, s.n_models)
        cost = {
            "reference_train_seconds": [i["train_seconds"] for i in infos],
            "reference_query_seconds": [i["query_seconds"] for i in infos],
            "target_query_seconds_per_sample": per,
            "references": [str(f) for f in folders],
            **this_call,
        }
        sig = level_signals(inp.sig, target, refs, level)
        if level == "sample":
            fit, ev = sample_sets(sig, ctx.class_names, inp.settings.seed)
        else:
            fit, ev = subset(sig, "attack"), subset(sig, "eval")
        jobs += _jobs_for_level(inp, job_cls, level, fit, ev, cost)
    return jobs
