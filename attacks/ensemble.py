"""Ensemble MIA (whale paper, sections 3.4 and 5.4).

ID1 is split into ``n_subsets`` disjoint groups of individuals (down to two individuals per
subset; see :func:`split_identities`). For each subset ``k`` a target model is trained on that subset's ID1-train photos, and
an attack is fitted on its own attack set: the subset's ID1-val photos (members) against as many
ID2 individuals, drawn at random (non-members), balanced by photo count. Every attack then scores the whole evaluation
set (ID1-test + ID3) through its own target, and a rule combines the ``K`` outputs:

* ``any`` (the paper's): member iff at least one attack says member;
* ``majority``: member iff more than half say member;
* ``mean_score``: member iff the mean of the per-attack margins ``score_k - tau_k`` is >= 0.

:func:`combine` is pure; :func:`run_ensemble` trains the subsets' targets.
"""

from __future__ import annotations

import time
import warnings
from pathlib import Path

import numpy as np

from attacks.metrics import balance
from attacks.registry import get
from attacks.signals import load_signals, membership, subset

RULES = ("any", "majority", "mean_score")


def combine(
    scores: np.ndarray, thresholds: np.ndarray, rule: str = "any"
) -> tuple[np.ndarray, np.ndarray]:
    """Combine ``K`` attacks' scores (K, N) with their thresholds (K,).

    Returns ``(decision (N,) bool, ensemble score (N,) float64)``. The score orders samples
    consistently with the rule: ``any`` -> max margin, ``majority`` -> number of votes
    (+ 0.49 tanh(mean margin) to break ties; member iff >= floor(K/2) + 0.5), ``mean_score``
    -> mean margin (member iff >= 0); margins are ``score_k - tau_k``; ``any``: member iff >= 0.
    """
    s = np.asarray(scores, dtype=np.float64)
    t = np.asarray(thresholds, dtype=np.float64).reshape(-1, 1)
    if s.ndim != 2 or len(t) != len(s):
        raise ValueError(f"scores (K, N) and thresholds (K,) expected, got {s.shape}, {t.shape}")
    margin = s - t
    votes = margin >= 0
    k = len(s)
    if rule == "any":
        return votes.any(0), margin.max(0)
    if rule == "majority":
        n = votes.sum(0)
        return n * 2 > k, n + np.tanh(margin.mean(0)) * 0.49
    if rule == "mean_score":
        m = margin.mean(0)
        return m >= 0, m
    raise ValueError(f"ensemble rule={rule!r}: choose one of {RULES}")


def split_identities(names: list[str], n_subsets: int, seed: int = 0) -> list[list[str]]:
    """``names`` shuffled by ``seed`` into ``n_subsets`` near-equal disjoint groups.

    ``n_subsets`` is clipped so every subset keeps at least two individuals: a softmax target
    trained on one individual gives that individual probability 1 for every photo, known or new,
    so it carries no membership signal. The paper's "one individual per subset" therefore becomes
    two individuals per subset here.
    """
    n = max(1, min(int(n_subsets), len(names) // 2))
    if n < int(n_subsets):
        warnings.warn(
            f"ensemble.n_subsets={n_subsets} clipped to {n}: each subset's target needs at least "
            f"two of the {len(names)} known individuals.",
            stacklevel=2,
        )
    order = list(np.random.default_rng(seed).permutation(sorted(names)))
    return [sorted(order[i::n]) for i in range(n)]


def subset_attack_rows(rows: list[dict], ids: list[str], seed: int) -> list[dict]:
    """Attack-set rows for one subset: its ID1-val photos + as many random ID2 individuals."""
    members = [r for r in rows if r["split"] == "val" and r["identity"] in ids]
    id2 = sorted({r["identity"] for r in rows if r["split"] == "attack"})
    rng = np.random.default_rng(seed)
    pick = set(rng.choice(id2, size=min(len(ids), len(id2)), replace=False).tolist())
    return members + [r for r in rows if r["split"] == "attack" and r["identity"] in pick]


def subset_plan(ctx, cfg: dict) -> list[list[str]]:
    """The ensemble's disjoint ID1 subsets (individual names), as :func:`run_ensemble` uses."""
    groups = split_identities(ctx.class_names, cfg.get("n_subsets", 2), int(cfg.get("seed", 0)))
    if cfg.get("max_subsets"):
        groups = groups[: int(cfg["max_subsets"])]
    return groups


def subset_signals(ctx, out_dir: Path, cfg: dict, k: int, ids: list[str]):
    """Train subset ``k``'s target and extract its signals to ``subset_KKK/signals.npz``, or load
    that file when ``cfg["reuse"]`` and it exists (a job-array task trained it).

    Returns ``(signals, train_seconds, epochs, train_rows)``.
    """
    from attacks.training import extract_signals, relabel, train_classifier

    seed = int(cfg.get("seed", 0))
    eval_rows = [r for r in ctx.rows if r["set"] == "eval"]
    path = out_dir / f"subset_{k:03d}" / "signals.npz"
    train_rows = [r for r in ctx.rows if r["split"] == "train" and r["identity"] in ids]
    att_rows = subset_attack_rows(ctx.rows, ids, seed + k)
    own_rows = [r for r in ctx.rows if r["identity"] in ids and r["split"] in ("train", "test")]
    rows_k = relabel(train_rows + att_rows + own_rows + eval_rows, ids)
    seen, uniq = set(), []  # keep each manifest row once (own test rows are also eval rows)
    for r in rows_k:
        if r["sample_id"] not in seen:
            seen.add(r["sample_id"])
            uniq.append(r)
    # same number of optimisation steps as the run's target (a subset has fewer photos)
    n_all = sum(r["split"] == "train" for r in ctx.rows)
    epochs = int(cfg.get("epochs") or 10)
    if cfg.get("match_steps", True):
        epochs = int(np.ceil(epochs * n_all / max(1, len(train_rows))))
    if path.is_file() and cfg.get("reuse", True):
        return load_signals(path), 0.0, epochs, train_rows
    model, secs = train_classifier(
        train_rows,
        ctx.roots,
        ids,
        ctx.model_args,
        image_size=ctx.image_size,
        epochs=epochs,
        batch_size=int(cfg.get("batch_size", 32)),
        seed=seed + k,
        device=ctx.device,
    )
    sig = extract_signals(
        model, uniq, ctx.roots, ctx.image_size, device=ctx.device, embed=False, path=path
    )
    return sig, secs, epochs, train_rows


def train_subsets(ctx, out_dir: Path, cfg: dict, only: list[int], log=print) -> list[Path]:
    """Train and save the signals of subsets ``only`` (indices into :func:`subset_plan`): one
    task of a job array. A later ``run_ensemble`` with ``reuse`` combines every subset."""
    groups = subset_plan(ctx, cfg)
    bad = [k for k in only if not 0 <= int(k) < len(groups)]
    if bad:
        raise ValueError(
            f"ensemble.subsets={only}: indices {bad} out of range; this run has {len(groups)} "
            f"subsets (0..{len(groups) - 1}), so size the job array as --array=0-{len(groups) - 1}."
        )
    paths = []
    for k in only:
        subset_signals(ctx, out_dir, {**cfg, "reuse": False}, int(k), groups[int(k)])
        paths.append(out_dir / f"subset_{int(k):03d}" / "signals.npz")
        log(f"ensemble subset {k} of {len(groups)}: signals saved to {paths[-1]}")
    return paths


def run_ensemble(ctx, out_dir: Path, cfg: dict, single_signals: dict, log=print) -> dict:
    """Train one target + one attack per subset, combine on the evaluation set.

    Args:
        ctx: :class:`attacks.training.RunContext` of the finished run.
        out_dir: ``<run>/attacks/ensemble``; per-subset signals land in ``subset_K/``.
        cfg: ``n_subsets``, ``rules``, ``base`` (a signal attack name, default ``yeom``),
            ``base_args``, ``epochs``, ``match_steps`` (scale ``epochs`` by all-ID1 / subset
            training photos so each subset's target gets as many optimisation steps as the
            run's target; default True), ``batch_size``, ``seed``, ``max_subsets``.
        single_signals: the run's own signals (for the single-model comparison).

    Returns a dict with ``subsets`` (Table 6), per-rule decisions and scores on the evaluation
    rows (``eval_index``), the single model's scores, and timings.
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    seed = int(cfg.get("seed", 0))
    base = cfg.get("base", "yeom")
    base_args = dict(cfg.get("base_args") or {})
    groups = subset_plan(ctx, cfg)
    eval_rows = [r for r in ctx.rows if r["set"] == "eval"]
    eval_index = np.array([i for i, r in enumerate(ctx.rows) if r["set"] == "eval"])
    scores, taus, table = [], [], []
    t_train = 0.0
    for k, ids in enumerate(groups):
        t0 = time.perf_counter()
        sig, secs, epochs, train_rows = subset_signals(ctx, out_dir, cfg, k, ids)
        att_rows = subset_attack_rows(ctx.rows, ids, seed + k)
        sid = {s: i for i, s in enumerate(sig["sample_id"])}
        att_sel = np.array([sid[r["sample_id"]] for r in att_rows])
        att = {kk: v[att_sel] for kk, v in sig.items()}
        att = {kk: v[balance(membership(att), seed + k)] for kk, v in att.items()}
        attack = get(base)(**base_args).fit(att)
        ev_sel = np.array([sid[r["sample_id"]] for r in eval_rows])
        ev = {kk: v[ev_sel] for kk, v in sig.items()}
        scores.append(attack.score(ev))
        taus.append(attack.score_threshold)
        t_train += time.perf_counter() - t0
        tr = (sig["split"] == "train") & np.isin(sig["identity"], ids)
        te = (sig["split"] == "test") & np.isin(sig["identity"], ids)
        tr_acc = float((sig["pred"][tr] == sig["label"][tr]).mean())
        te_acc = float((sig["pred"][te] == sig["label"][te]).mean())
        table.append(
            {
                "subset": k,
                "individuals": ids,
                "n_individuals": len(ids),
                "train_acc": tr_acc,
                "test_acc": te_acc,
                "overfitting_level": tr_acc - te_acc,
                "train_seconds": secs,
                "epochs": epochs,
                "n_train_photos": len(train_rows),
            }
        )
        log(
            f"ensemble subset {k + 1}/{len(groups)}: {len(ids)} individuals, "
            f"overfitting {tr_acc - te_acc:.3f}"
        )
    scores_a, taus_a = np.stack(scores), np.array(taus)
    t0 = time.perf_counter()
    rules = {}
    for rule in cfg.get("rules", list(RULES)):
        dec, sc = combine(scores_a, taus_a, rule)
        rules[rule] = {"decision": dec, "score": sc}
    per_sample = (time.perf_counter() - t0) / max(1, len(eval_rows))
    s_att = subset(single_signals, "attack")
    s_att = {kk: v[balance(membership(s_att), seed)] for kk, v in s_att.items()}
    single = get(base)(**base_args).fit(s_att)
    sev = {k: v[np.isin(single_signals["index"], eval_index)] for k, v in single_signals.items()}
    return {
        "subsets": table,
        "rules": rules,
        "scores": scores_a,
        "thresholds": taus_a,
        "eval_index": eval_index,
        "is_member": np.array([r["role"] == "member" for r in eval_rows]).astype(np.int64),
        "identity": np.array([r["identity"] for r in eval_rows]),
        "single": {
            "score": single.score(sev),
            "threshold": single.score_threshold,
            "is_member": membership(sev),
        },
        "train_seconds": t_train,
        "combine_seconds_per_sample": per_sample,
        "base": base,
        "n_subsets": len(groups),
    }
