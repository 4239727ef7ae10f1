"""``python cli.py attack --run <run folder> [--config attack.yaml]``: every attack on a finished
run, each into ``<run>/attacks/<name>/``, a summary in ``<run>/attacks/report.md``.

Steps: (1) rebuild the target from ``checkpoints/last.ckpt`` (``weights_only=True``) and write
``<run>/signals/final.npz`` (all manifest rows, with penultimate embeddings); (2) fit each
signal attack on the balanced attack set (ID1-val + ID2), freeze it, score the evaluation set
(ID1-test + ID3) and evaluate it balanced; (3) the label-only attack queries the model on images;
(4) the ensemble trains one target per subset of ID1; (5) the two open-set baselines; (6) the
reports, TensorBoard under ``<run>/attacks/``.

``torchrun --nproc_per_node N cli.py attack ...`` shards step (1) over N processes (rank 0 writes
the file), then rank 0 alone runs steps (2)-(6).
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from attacks.metrics import balance, best_threshold
from attacks.registry import get
from attacks.report import evaluate, write_attack, write_summary
from attacks.signals import META_FIELDS, load_signals, membership, save_signals, subset


@dataclass
class ShadowSettings:
    """Train the attack on a shadow model's signals instead of the target's (Figure 8).

    ``run``: a second finished run folder (e.g. another split seed or catalog) whose attack set
    is used; otherwise a shadow is trained here on ID2 with ``arch`` (None = target's arch).
    """

    enabled: bool = False
    arch: str | None = None
    epochs: int = 20
    batch_size: int = 32
    seed: int = 1
    run: str | None = None


@dataclass
class YeomSettings:
    enabled: bool = True
    signal: str = "loss_pred"


@dataclass
class SalemSettings:
    """ML-Leaks MLP 64-32-2 over sorted top-k posteriors, on target and/or shadow signals."""

    enabled: bool = True
    topk: int = 3
    epochs: int = 300
    lr: float = 0.01
    threshold: str = "argmax"
    on_target: bool = True
    shadow: ShadowSettings = field(default_factory=ShadowSettings)


@dataclass
class LabelOnlySettings:
    """HopSkipJump boundary distance. ``max_per_role``: cap of members and of non-members per
    set (attack and evaluation) to bound the query cost; None keeps all (balanced)."""

    enabled: bool = True
    method: str = "ours"
    max_iter: int = 50
    init_eval: int = 100
    max_eval: int = 10000
    init_size: int = 100
    max_queries: int | None = None
    max_per_role: int | None = None
    chunk: int = 1024
    seed: int = 0


@dataclass
class EnsembleSettings:
    """Ensemble MIA: ``n_subsets`` targets over disjoint ID1 subsets; ``epochs``/``batch_size``
    None = the run's own; with ``match_steps`` the epochs are scaled up so each subset's target
    gets as many optimisation steps as the run's; ``base``: the per-subset signal attack.
    ``subsets``: train only these subset indices' targets, save their signals and stop (one task
    of a job array: ``[$SLURM_ARRAY_TASK_ID]``); ``reuse``: load saved subset signals instead of
    retraining (the combining job after the array)."""

    enabled: bool = True
    n_subsets: int = 2
    max_subsets: int | None = None
    rules: list[str] = field(default_factory=lambda: ["any", "majority", "mean_score"])
    base: str = "yeom"
    epochs: int | None = None
    match_steps: bool = True
    batch_size: int | None = None
    seed: int = 0
    subsets: list[int] | None = None
    reuse: bool = False


@dataclass
class AttackSettings:
    yeom: YeomSettings = field(default_factory=YeomSettings)
    salem: SalemSettings = field(default_factory=SalemSettings)
    label_only: LabelOnlySettings = field(default_factory=LabelOnlySettings)
    ensemble: EnsembleSettings = field(default_factory=EnsembleSettings)
    baselines: bool = True
    balanced: bool = True
    seed: int = 0
    device: str | None = None
    compare: list[str] = field(default_factory=list)
    output: str = "attacks"


def _balanced(sig: dict, seed: int) -> dict:
    return {k: v[balance(membership(sig), seed)] for k, v in sig.items()}


def final_signals(ctx, force: bool = False) -> tuple[dict, float]:
    """``<run>/signals/final.npz`` (every manifest row, with embeddings) and the forward-pass
    time per sample in seconds (stored in ``final_timing.json``).

    Inside an initialised ``torch.distributed`` group (``cli.py attack`` under ``torchrun``) every
    rank must call it: each scores its shard of the rows, every rank gets all of them back, and
    rank 0 alone writes the two files (the time is then wall time over all rows, all ranks).
    """
    from lightning_modules.extraction import extract_rows, is_rank_zero, rank_world

    path = ctx.folder / "signals" / "final.npz"
    timing = path.with_name("final_timing.json")
    if path.is_file() and timing.is_file() and not force:
        return load_signals(path), json.loads(timing.read_text())["seconds_per_sample"]
    t0 = time.perf_counter()
    model = ctx.model()
    sig = extract_rows(model, ctx.rows, ctx.loader, ctx.device, embed=getattr(model, "embed", None))
    per = (time.perf_counter() - t0) / max(1, len(ctx.rows))
    world = rank_world()[1]
    if is_rank_zero():
        save_signals(path, sig)
        info = {"seconds_per_sample": per, "device": ctx.device, "world_size": world}
        timing.write_text(json.dumps(info))
    if world > 1:
        import torch.distributed as dist

        dist.barrier()  # the files exist for every rank once it returns
    return sig, per


def extract_distributed(run: str | Path, device: str | None = None) -> bool:
    """``cli.py attack`` started by ``torchrun`` (``RANK`` and ``WORLD_SIZE`` > 1 set): join the
    group (gloo on CPU, NCCL on ``cuda:LOCAL_RANK``), write ``signals/final.npz`` sharded over the
    ranks (:func:`final_signals`) and leave the group. True on rank 0, which then runs the
    attacks on its own; the other ranks are done."""
    import torch
    import torch.distributed as dist

    from attacks.training import RunContext

    local = int(os.environ.get("LOCAL_RANK", "0"))
    if device is None:
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda":
        device = f"cuda:{local}"
    cuda = device.startswith("cuda")
    if cuda:
        torch.cuda.set_device(torch.device(device))
    dist.init_process_group("nccl" if cuda else "gloo")
    try:
        final_signals(RunContext.open(run, device))
        rank = dist.get_rank()
    finally:
        dist.destroy_process_group()
    return rank == 0


def _signal_attack(name, attack, fit_sig, ev, fwd, settings, info, out, writer, seed):
    t0 = time.perf_counter()
    attack.fit(fit_sig)
    t_fit = time.perf_counter() - t0
    t0 = time.perf_counter()
    sc = attack.score(ev)
    per = (time.perf_counter() - t0) / max(1, len(sc))
    m, sel = evaluate(
        sc,
        membership(ev),
        attack.score_threshold,
        identity=ev["identity"],
        label=ev["label"],
        pred=ev["pred"],
        balanced=settings.balanced,
        seed=seed,
    )
    info = {
        **info,
        "train_seconds": t_fit,
        "score_seconds_per_sample": per,
        "discrimination_seconds_per_sample": per + fwd,
        "n_fit": len(fit_sig["index"]),
    }
    write_attack(
        out / name,
        name,
        m,
        sc[sel],
        membership(ev)[sel],
        info,
        {"sample_id": ev["sample_id"][sel]},
        writer,
    )
    return m, info


def nn_cosine_scores(gallery: np.ndarray, queries: np.ndarray) -> np.ndarray:
    """Max cosine similarity of each query embedding (N, D) to the gallery (M, D): (N,)."""
    g = gallery / (np.linalg.norm(gallery, axis=1, keepdims=True) + 1e-12)
    q = queries / (np.linalg.norm(queries, axis=1, keepdims=True) + 1e-12)
    return (q @ g.T).max(1)


class _Threshold:
    """A baseline detector: fixed score field/function, threshold swept on the attack set."""

    def __init__(self, fn):
        self.fn, self.threshold = fn, None

    def fit(self, sig):
        self.threshold, _ = best_threshold(self.fn(sig), membership(sig))
        return self

    def score(self, sig):
        return self.fn(sig)

    @property
    def score_threshold(self):
        return self.threshold


def run_attacks(run: str | Path, settings: AttackSettings | None = None, log=print) -> dict:
    """Run every enabled attack on ``run``; returns ``{name: metrics}`` (also in summary.json)."""
    import torch

    from attacks.training import RunContext

    s = settings or AttackSettings()
    t_start = time.perf_counter()
    ctx = RunContext.open(run, s.device)
    out = ctx.folder / s.output
    out.mkdir(parents=True, exist_ok=True)
    (out / "attack_config.json").write_text(json.dumps(asdict(s), indent=2))
    # whatever run.py writes is in ``out``; ``output`` keeps transfer runs beside the main one
    torch.manual_seed(s.seed)
    if s.ensemble.subsets is not None:  # one job-array task: these subsets' targets, nothing else
        from attacks.ensemble import train_subsets

        train_subsets(ctx, out / "ensemble", _ensemble_cfg(ctx, s), s.ensemble.subsets, log)
        return {}
    sig, fwd = final_signals(ctx)
    att, ev = subset(sig, "attack"), subset(sig, "eval")
    att_b = _balanced(att, s.seed) if s.balanced else att
    results, infos = {}, {}
    try:
        from torch.utils.tensorboard import SummaryWriter

        writer = SummaryWriter(str(out / "tensorboard"))
    except Exception:  # tensorboard missing: reports still get written
        writer = None
    common = {"signals": str(ctx.folder / "signals" / "final.npz")}

    def done(name, m, info):
        results[name], infos[name] = m, info
        log(f"attack {name}: acc {m['acc']:.3f} auc {m['auc']:.3f} fpr {m['fpr']:.3f}")

    if s.yeom.enabled:
        m, i = _signal_attack(
            "yeom",
            get("yeom")(signal=s.yeom.signal),
            att_b,
            ev,
            fwd,
            s,
            {**common, "signal": s.yeom.signal, "fit_on": "target attack set"},
            out,
            writer,
            s.seed,
        )
        done("yeom", m, i)
    if s.salem.enabled:
        kw = dict(
            topk=s.salem.topk,
            epochs=s.salem.epochs,
            lr=s.salem.lr,
            threshold=s.salem.threshold,
            seed=s.seed,
        )
        if s.salem.on_target:
            m, i = _signal_attack(
                "salem",
                get("salem")(**kw),
                att_b,
                ev,
                fwd,
                s,
                {**common, **kw, "fit_on": "target attack set"},
                out,
                writer,
                s.seed,
            )
            done("salem", m, i)
        sh = s.salem.shadow
        if sh.enabled:
            from attacks.shadow import shadow_run_signals, train_shadow

            t0 = time.perf_counter()
            sdir = out / "salem_shadow" / "shadow"
            if sh.run:
                ssig, sinfo = shadow_run_signals(sh.run, sdir, s.device)
            else:
                full, sinfo = train_shadow(
                    ctx,
                    sdir,
                    arch=sh.arch,
                    epochs=sh.epochs,
                    seed=sh.seed,
                    batch_size=sh.batch_size,
                )
                ssig = subset(full, "attack")
            ssig = _balanced(ssig, s.seed) if s.balanced else ssig
            t_shadow = time.perf_counter() - t0
            target_arch = ctx.model_args.get("arch")
            name = (
                "salem_shadow" if sinfo["arch"] == target_arch else f"salem_shadow_{sinfo['arch']}"
            )
            m, i = _signal_attack(
                name,
                get("salem")(**kw),
                ssig,
                ev,
                fwd,
                s,
                {**common, **kw, "fit_on": "shadow", "shadow": sinfo, "target_arch": target_arch},
                out,
                writer,
                s.seed,
            )
            i["train_seconds"] += t_shadow
            done(name, m, i)
    if s.label_only.enabled:
        m, i = _label_only(ctx, sig, s, out, writer)
        done("label_only", m, i)
    if s.ensemble.enabled:
        for name, (m, i) in _ensemble(ctx, sig, s, out, writer, log).items():
            done(name, m, i)
    if s.baselines:
        msp = _Threshold(lambda x: np.asarray(x["max_prob"], dtype=np.float64))
        m, i = _signal_attack(
            "baseline_msp",
            msp,
            att_b,
            ev,
            fwd,
            s,
            {**common, "score": "max softmax probability"},
            out,
            writer,
            s.seed,
        )
        done("baseline_msp", m, i)
        if "embedding" in sig:
            gal = sig["embedding"][sig["split"] == "train"]
            nn_ = _Threshold(lambda x: nn_cosine_scores(gal, x["embedding"]))
            m, i = _signal_attack(
                "baseline_nn_cosine",
                nn_,
                att_b,
                ev,
                fwd,
                s,
                {
                    **common,
                    "score": "max cosine similarity to ID1-train "
                    "embeddings (= -nearest-neighbour cosine distance)",
                },
                out,
                writer,
                s.seed,
            )
            done("baseline_nn_cosine", m, i)
    tr = sig["split"] == "train"
    te = sig["split"] == "test"
    context = {
        "run": str(ctx.folder),
        "arch": ctx.model_args.get("arch"),
        "preset": ctx.model_args.get("preset"),
        "n_classes": len(ctx.class_names),
        "signals": common["signals"],
        "train_acc": float((sig["pred"][tr] == sig["label"][tr]).mean()),
        "test_acc": float((sig["pred"][te] == sig["label"][te]).mean()),
        "group_by": ctx.data_args.get("split", {}).get("group_by"),
        "seconds": time.perf_counter() - t_start,
        "manifest_hash": ctx.header.get("hash"),
    }
    context["overfitting_level"] = context["train_acc"] - context["test_acc"]
    extra = ""
    ens_md = out / "ensemble" / "report.md"
    if ens_md.is_file():
        extra = "## Ensemble\n\nSee [ensemble/report.md](ensemble/report.md)."
    path = write_summary(out, results, infos, context, [Path(c) for c in s.compare], extra, writer)
    if writer is not None:
        for k in ("train_acc", "test_acc", "overfitting_level"):
            writer.add_scalar(f"target/{k}", context[k], 0)
        writer.close()
    log(f"attack report: {path} ({context['seconds']:.1f} s)")
    return results


def _label_only(ctx, sig, s: AttackSettings, out: Path, writer):
    """Boundary distances on a balanced (capped) attack and evaluation subset, then threshold."""
    from attacks.label_only import boundary_distances

    lo = s.label_only
    rng = np.random.default_rng(lo.seed)
    pick = []
    for set_name in ("attack", "eval"):
        for role in ("member", "nonmember"):
            idx = np.flatnonzero((sig["set"] == set_name) & (sig["role"] == role))
            pick.append(idx)
    n_att = min(len(pick[0]), len(pick[1]))
    n_ev = min(len(pick[2]), len(pick[3]))
    if lo.max_per_role:
        n_att, n_ev = min(n_att, lo.max_per_role), min(n_ev, lo.max_per_role)
    chosen = [
        np.sort(rng.choice(p, n, replace=False)) for p, n in zip(pick, (n_att, n_att, n_ev, n_ev))
    ]
    sel = np.concatenate(chosen)
    rows = [ctx.rows[i] for i in sig["index"][sel]]
    model = ctx.model()
    x = ctx.images(rows).to(ctx.device)
    hsj = dict(
        max_iter=lo.max_iter,
        init_eval=lo.init_eval,
        max_eval=lo.max_eval,
        init_size=lo.init_size,
        max_queries=lo.max_queries,
        chunk=lo.chunk,
        seed=lo.seed,
    )
    dist, secs = boundary_distances(model, x, len(ctx.class_names), method=lo.method, **hsj)
    lsig = {k: sig[k][sel] for k in (*META_FIELDS, "index", "label", "pred")}
    lsig.update(
        boundary_distance=dist["distance"], queries=dist["queries"], hsj_success=dist["success"]
    )
    ldir = out / "label_only"
    save_signals(ldir / "distances.npz", lsig)
    att, ev = subset(lsig, "attack"), subset(lsig, "eval")
    attack = get("label_only")()
    t0 = time.perf_counter()
    attack.fit(att)
    t_fit = time.perf_counter() - t0
    sc = attack.score(ev)
    m, _ = evaluate(
        sc,
        membership(ev),
        attack.score_threshold,
        identity=ev["identity"],
        label=ev["label"],
        pred=ev["pred"],
        balanced=False,
    )
    n = len(sel)
    info = {
        "method": lo.method,
        **hsj,
        "n_attack": int(2 * n_att),
        "n_eval": int(2 * n_ev),
        "queries_mean": float(dist["queries"].mean()),
        "queries_max": int(dist["queries"].max()),
        "hsj_success_rate": float(np.mean(dist["success"])),
        "distance_seconds": secs,
        # the attack set's distances are the training cost; evaluation per sample is the query
        # cost per sample (same estimator for both sets)
        "train_seconds": secs * (2 * n_att) / n + t_fit,
        "discrimination_seconds_per_sample": secs / n,
        "distances": str(ldir / "distances.npz"),
    }
    write_attack(ldir, "label_only", m, sc, membership(ev), info, None, writer)
    return m, info


def _ensemble_cfg(ctx, s: AttackSettings) -> dict:
    e = s.ensemble
    return {
        "n_subsets": e.n_subsets,
        "max_subsets": e.max_subsets,
        "rules": e.rules,
        "base": e.base,
        "epochs": e.epochs or int(ctx.config.get("trainer", {}).get("max_epochs") or 10),
        "match_steps": e.match_steps,
        "batch_size": e.batch_size or int(ctx.data_args.get("loader", {}).get("batch_size", 32)),
        "seed": e.seed,
        "reuse": e.reuse,
    }


def _ensemble(ctx, sig, s: AttackSettings, out: Path, writer, log) -> dict:
    from attacks.ensemble import run_ensemble

    e, cfg = s.ensemble, _ensemble_cfg(ctx, s)
    epochs = cfg["epochs"]
    edir = out / "ensemble"
    res = run_ensemble(ctx, edir, cfg, sig, log=log)
    y = res["is_member"]
    ev_sig = {k: v[np.isin(sig["index"], res["eval_index"])] for k, v in sig.items()}
    sel = balance(y, s.seed) if s.balanced else np.arange(len(y))
    outd = {}
    from attacks.open_set import attack_metrics

    rows_md = []
    for rule, r in res["rules"].items():
        name = f"ensemble_{rule}"
        # decision margin: the combined score is >= 0 exactly for members except for majority
        tau = 0.0 if rule != "majority" else (res["n_subsets"] // 2 + 1) - 0.5
        m, _ = evaluate(
            r["score"],
            y,
            tau,
            identity=ev_sig["identity"],
            label=ev_sig["label"],
            pred=ev_sig["pred"],
            balanced=s.balanced,
            seed=s.seed,
        )
        assert np.array_equal(r["score"][sel] >= tau, r["decision"][sel]), rule
        info = {
            "rule": rule,
            "base": res["base"],
            "n_subsets": res["n_subsets"],
            "epochs": epochs,
            "train_seconds": res["train_seconds"],
            "discrimination_seconds_per_sample": res["combine_seconds_per_sample"]
            + res["n_subsets"]
            * json.loads((ctx.folder / "signals" / "final_timing.json").read_text())[
                "seconds_per_sample"
            ],
        }
        write_attack(edir / rule, name, m, r["score"][sel], y[sel], info, None, writer)
        outd[name] = (m, info)
        rows_md.append(
            f"| ensemble `{rule}` ({res['n_subsets']} subsets) | {m['acc']:.3f} | "
            f"{m['fpr']:.3f} | {m['tpr']:.3f} | {m['auc']:.3f} |"
        )
    single = res["single"]
    ssel = balance(single["is_member"], s.seed) if s.balanced else np.arange(len(single["score"]))
    sm = attack_metrics(single["score"][ssel], single["is_member"][ssel], single["threshold"])
    table6 = [
        "| subset | individuals | epochs | train acc | test acc | overfitting level |",
        "|---|---|---|---|---|---|",
    ]
    for t in res["subsets"]:
        ids = ", ".join(t["individuals"][:6]) + (" ..." if len(t["individuals"]) > 6 else "")
        table6.append(
            f"| {t['subset']} | {ids} | {t['epochs']} | {t['train_acc']:.3f} | "
            f"{t['test_acc']:.3f} | "
            f"{t['overfitting_level']:.3f} |"
        )
    md = [
        "# Ensemble MIA",
        "",
        f"{res['n_subsets']} disjoint subsets of ID1, one target ({ctx.model_args.get('arch')}, "
        f"{epochs} run epochs, scaled to equal steps: {e.match_steps}) and one `{res['base']}` "
        "attack per subset. Each attack's threshold is "
        "fitted on its own attack set (its subset's ID1-val + as many random ID2 individuals).",
        "",
        "## Overfitting level per subset (Table 6 style)",
        "",
        *table6,
        "",
        "## Ensemble vs single model (evaluation set, balanced)",
        "",
        "| attack | acc | FPR | TPR | AUC |",
        "|---|---|---|---|---|",
        f"| single target, `{res['base']}` | {sm['acc']:.3f} | {sm['fpr']:.3f} | "
        f"{sm['tpr']:.3f} | {sm['auc']:.3f} |",
        *rows_md,
        "",
    ]
    (edir / "report.md").write_text("\n".join(md))
    (edir / "ensemble.json").write_text(
        json.dumps(
            {
                "subsets": res["subsets"],
                "single": sm,
                "thresholds": res["thresholds"].tolist(),
                "rules": {k: v[0] for k, v in outd.items()},
            },
            indent=2,
            default=str,
        )
    )
    return outd


def main(argv: list[str]) -> dict:
    """Entry point of ``python cli.py attack``."""
    from jsonargparse import ActionConfigFile, ArgumentParser

    parser = ArgumentParser(prog="cli.py attack", description=__doc__.splitlines()[0])
    parser.add_argument("--config", action=ActionConfigFile, help="attack settings YAML")
    parser.add_argument("--run", type=str, required=True, help="finished run folder")
    parser.add_class_arguments(AttackSettings, None)
    cfg = parser.parse_args(argv)
    inst = parser.instantiate_classes(cfg)
    settings = AttackSettings(**{k: inst[k] for k in AttackSettings.__dataclass_fields__})
    torchrun = "RANK" in os.environ and int(os.environ.get("WORLD_SIZE", "1")) > 1
    if torchrun and not extract_distributed(cfg.run, settings.device):
        return {}
    return run_attacks(cfg.run, settings)
