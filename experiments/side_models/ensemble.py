"""Ensemble MIA, the experiment (whale paper, sections 3.4 and 5.4): train one target per
disjoint subset of ID1 individuals, fit one attack per subset on its own attack set, and combine
their decisions with the rules of :mod:`attacks.ensemble`.

For subset ``k`` the attack set is the subset's ID1-val photos (members) against as many ID2
individuals, drawn at random (non-members), balanced by photo count. Every attack then scores the
whole evaluation set (ID1-test + ID3) through its own target.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np

from attacks.ensemble import RULES, combine, split_identities
from attacks.metric_intervals import ci_summary
from attacks.registry import get
from attacks.report import evaluate, write_attack
from attacks.report_tables import ci_table
from attacks.signals import accuracy, balanced, load_signals, membership, select, subset
from experiments.side_models.training import extract_signals, relabel, train_classifier


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
        resize=ctx.resize,
        pad_value=ctx.pad_value,
    )
    sig = extract_signals(
        model,
        uniq,
        ctx.roots,
        ctx.image_size,
        device=ctx.device,
        embed=False,
        path=path,
        resize=ctx.resize,
        pad_value=ctx.pad_value,
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


def base_attack(cfg: dict):
    """A fresh instance of the per-subset attack (``base``, ``base_args``)."""
    return get(cfg.get("base", "yeom"))(**dict(cfg.get("base_args") or {}))


def _subset_attack(ctx, out_dir: Path, cfg: dict, k: int, ids: list[str], eval_rows: list[dict]):
    """Subset ``k``'s target and attack: ``(eval scores (N,), threshold, Table 6 row)``."""
    seed = int(cfg.get("seed", 0))
    sig, secs, epochs, train_rows = subset_signals(ctx, out_dir, cfg, k, ids)
    att_rows = subset_attack_rows(ctx.rows, ids, seed + k)
    sid = {s: i for i, s in enumerate(sig["sample_id"])}
    att = balanced(select(sig, np.array([sid[r["sample_id"]] for r in att_rows])), seed + k)
    attack = base_attack(cfg).fit(att)
    ev = select(sig, np.array([sid[r["sample_id"]] for r in eval_rows]))
    own = np.isin(sig["identity"], ids)
    tr_acc, te_acc = accuracy(sig, "train", own), accuracy(sig, "test", own)
    row = {
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
    return attack.score(ev), attack.score_threshold, row


def run_ensemble(ctx, out_dir: Path, cfg: dict, single_signals: dict, log=print) -> dict:
    """Train one target + one attack per subset, combine on the evaluation set.

    Args:
        ctx: :class:`experiments.run.folder.RunContext` of the finished run.
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
    groups = subset_plan(ctx, cfg)
    eval_index = np.flatnonzero([r["set"] == "eval" for r in ctx.rows])
    eval_rows = [ctx.rows[i] for i in eval_index]
    scores, taus, table = [], [], []
    t0 = time.perf_counter()
    for k, ids in enumerate(groups):
        score, tau, row = _subset_attack(ctx, out_dir, cfg, k, ids, eval_rows)
        scores.append(score)
        taus.append(tau)
        table.append(row)
        log(
            f"ensemble subset {k + 1}/{len(groups)}: {len(ids)} individuals, "
            f"overfitting {row['overfitting_level']:.3f}"
        )
    t_train = time.perf_counter() - t0
    scores_a, taus_a = np.stack(scores), np.array(taus)
    t0 = time.perf_counter()
    rules = {}
    for rule in cfg.get("rules", list(RULES)):
        dec, sc = combine(scores_a, taus_a, rule)
        rules[rule] = {"decision": dec, "score": sc}
    per_sample = (time.perf_counter() - t0) / max(1, len(eval_rows))
    s_att = balanced(subset(single_signals, "attack"), seed)
    single = base_attack(cfg).fit(s_att)
    sev = select(single_signals, np.isin(single_signals["index"], eval_index))
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
            "identity": sev["identity"],
        },
        "train_seconds": t_train,
        "combine_seconds_per_sample": per_sample,
        "base": cfg.get("base", "yeom"),
        "n_subsets": len(groups),
    }


def ensemble_config(ctx, s) -> dict:
    """The ensemble's settings (:class:`EnsembleSettings` of ``s``) with the run's defaults."""
    e = s.ensemble
    return {
        "n_subsets": e.n_subsets,
        "max_subsets": e.max_subsets,
        "rules": e.rules,
        "base": e.base,
        "epochs": e.epochs or int(ctx.config.get("trainer", {}).get("max_epochs") or 10),
        "match_steps": e.match_steps,
        "batch_size": e.batch_size or int(ctx.data_setting("loader", "batch_size", 32)),
        "seed": e.seed,
        "reuse": e.reuse,
    }


def ensemble_attacks(
    ctx, sig: dict, s, out: Path, fwd: float, log=print, scored: dict | None = None
) -> dict[str, tuple[dict, dict]]:
    """Run the ensemble and write ``<out>/ensemble/{<rule>/, report.md, ensemble.json}``.

    ``fwd``: the target's forward time per sample (s); each subset target costs one per sample.
    Every rule and the single model get 95% bootstrap intervals by individual (``info["ci"]``,
    :func:`attacks.metric_intervals.ci_summary`, ``s.calibrated.n_boot`` replicates). ``scored``, when
    given, receives ``{ensemble_<rule>: (eval signals, scores (N,), selected rows, threshold,
    info)}`` as :class:`experiments.attack_steps.jobs.Inputs` keeps it (for ``risk.csv``).
    Returns ``{ensemble_<rule>: (metrics, info)}`` on the evaluation set.
    """
    cfg = ensemble_config(ctx, s)
    edir = out / "ensemble"
    res = run_ensemble(ctx, edir, cfg, sig, log=log)
    ev = select(sig, np.isin(sig["index"], res["eval_index"]))
    pos = {int(i): k for k, i in enumerate(res["eval_index"])}
    take = np.array([pos[int(i)] for i in ev["index"]], dtype=np.int64)  # res rows -> ev rows
    y = res["is_member"][take]
    results = {}
    for rule, r in res["rules"].items():
        # decision margin: the combined score is >= 0 exactly for members except for majority
        tau = 0.0 if rule != "majority" else (res["n_subsets"] // 2 + 1) - 0.5
        score = r["score"][take]
        kw = dict(identity=ev["identity"], label=ev["label"], pred=ev["pred"], seed=s.seed)
        m, sel = evaluate(score, y, tau, balanced=s.balanced, name=f"ensemble_{rule}", **kw)
        assert np.array_equal(score[sel] >= tau, r["decision"][take][sel]), rule
        info = {
            "rule": rule,
            "base": res["base"],
            "n_subsets": res["n_subsets"],
            "epochs": cfg["epochs"],
            "train_seconds": res["train_seconds"],
            "fit_seconds": res["train_seconds"],  # the subset targets and their attacks
            "discrimination_seconds_per_sample": res["combine_seconds_per_sample"]
            + res["n_subsets"] * fwd,
            "ci": _ci(score[sel], y[sel], tau, ev["identity"][sel], s),
        }
        write_attack(edir / rule, f"ensemble_{rule}", m, score[sel], y[sel], info)
        results[f"ensemble_{rule}"] = (m, info)
        if scored is not None:
            scored[f"ensemble_{rule}"] = (ev, score, sel, tau, info)
    single = res["single"]
    sm, ssel = evaluate(
        single["score"],
        single["is_member"],
        single["threshold"],
        balanced=s.balanced,
        seed=s.seed,
        name=f"ensemble_single_{res['base']}",
    )
    pick = {k: single[k][ssel] for k in ("score", "is_member", "identity")}
    sm["ci"] = _ci(pick["score"], pick["is_member"], single["threshold"], pick["identity"], s)
    (edir / "report.md").write_text(ensemble_report(ctx, res, cfg, s, sm, results))
    payload = {
        "subsets": res["subsets"],
        "single": sm,
        "thresholds": res["thresholds"].tolist(),
        "rules": {k: v[0] for k, v in results.items()},
        "ci": {k: v[1]["ci"] for k, v in results.items()},
    }
    (edir / "ensemble.json").write_text(json.dumps(payload, indent=2, default=str))
    return results


def _ci(score: np.ndarray, y: np.ndarray, tau: float, identity: np.ndarray, s) -> dict:
    """95% bootstrap intervals by individual of one rule's (or the single model's) balanced
    evaluation rows: :func:`attacks.metric_intervals.ci_summary`."""
    return ci_summary(score, y, tau, identity, n_boot=s.calibrated.n_boot, seed=s.seed)


def ensemble_report(ctx, res: dict, cfg: dict, s, single: dict, results: dict) -> str:
    """Markdown: Table 6 (overfitting per subset) and the ensemble against the single model."""
    table6 = [
        "| subset | individuals | epochs | train acc | test acc | overfitting level |",
        "|---|---|---|---|---|---|",
    ]
    for t in res["subsets"]:
        ids = ", ".join(t["individuals"][:6]) + (" ..." if len(t["individuals"]) > 6 else "")
        table6.append(
            f"| {t['subset']} | {ids} | {t['epochs']} | {t['train_acc']:.3f} | "
            f"{t['test_acc']:.3f} | {t['overfitting_level']:.3f} |"
        )
    rows = [
        f"| ensemble `{info['rule']}` ({res['n_subsets']} subsets) | {m['acc']:.3f} | "
        f"{m['fpr']:.3f} | {m['tpr']:.3f} | {m['auc']:.3f} |"
        for m, info in results.values()
    ]
    return "\n".join(
        [
            "# Ensemble MIA",
            "",
            f"{res['n_subsets']} disjoint subsets of ID1, one target ({ctx.model_args.get('arch')}, "
            f"{cfg['epochs']} run epochs, scaled to equal steps: {s.ensemble.match_steps}) and one "
            f"`{res['base']}` attack per subset. Each attack's threshold is fitted on its own "
            "attack set (its subset's ID1-val + as many random ID2 individuals).",
            "",
            "## Overfitting level per subset (Table 6 style)",
            "",
            *table6,
            "",
            "## Ensemble vs single model (evaluation set, balanced)",
            "",
            "| attack | acc | FPR | TPR | AUC |",
            "|---|---|---|---|---|",
            f"| single target, `{res['base']}` | {single['acc']:.3f} | {single['fpr']:.3f} | "
            f"{single['tpr']:.3f} | {single['auc']:.3f} |",
            *rows,
            "",
            "## Confidence intervals (95%, bootstrap by individual)",
            "",
            ci_table(
                {},
                {f"single target, `{res['base']}`": single["ci"]}
                | {f"ensemble `{info['rule']}`": info["ci"] for _, info in results.values()},
            ),
            "",
        ]
    )
