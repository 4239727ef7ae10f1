"""The calibrated attacks of the detector audit: reference detectors, their queries, LiRA and RMIA.

Every detector of the audit (target, shadow, reference ``k``) is queried once on every image of
the split (target and shadow sides) and the answers are saved in its run folder as
``signals/pool.npz`` (predictions, ground truth, manifest columns) with ``signals/pool.json``
(query time and the exact ``sample_id`` list it trained on). The per-image signal ``phi`` is
:func:`attacks.detection.scalar_signal.detection_phi`.

Two games (``docs/calibrated_attacks.md``, "Detectors"):

* **target game** (evaluation): the target's images; ``cal_phi`` from the target; references:
  column 0 the shadow (OUT for every target image: it trained on shadow images only), columns
  1..K the extra references (IN where they trained on the image).
* **shadow game** (fitting the thresholds and RMIA's population): the shadow's images;
  ``cal_phi`` from the shadow; references: column 0 the target, columns 1..K the extra references,
  all OUT (neither trained on a shadow image).

Membership and IN flags come from the ``training`` lists the models recorded, and are checked
against the manifest. Extra references live in ``<target run>/references/<key>/ref_<k>/`` (a
cache: a finished one is loaded, not retrained).
"""

from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path

import numpy as np

from attacks.detection.scalar_signal import detection_phi
from attacks.metric_intervals import ci_summary
from attacks.metrics import threshold_metrics
from attacks.registry import get
from attacks.report_tables import ci_table
from attacks.signals import balanced, load_signals, membership, save_signals
from datamodules.errors import DataError
from experiments.run.outputs import write_json
from lightning_modules.detector import predict_detections

POOL = Path("signals") / "pool.npz"
POOL_INFO = Path("signals") / "pool.json"
META = ("sample_id", "file", "group", "side", "split")


# ---- queries ---------------------------------------------------------------------------------
def write_pool(run_dir: Path, model, dm) -> dict:
    """Query ``model`` on every manifest row of ``dm`` (the attack's post-processing); save
    ``signals/pool.npz`` (predictions, ``gt_*``, manifest columns) and ``signals/pool.json``
    (``query_seconds``, ``training``: the sample ids the model trained on). Returns the arrays."""
    rows = dm.rows()
    t0 = time.perf_counter()
    arrays = predict_detections(model, dm.signal_loader(rows))
    secs = time.perf_counter() - t0
    sel = [rows[i] for i in arrays["index"]]
    pool = {
        **{f: np.array([r[f] for r in sel], dtype=str) for f in META},
        **arrays,
        **dm.ground_truth(sel),
    }
    save_signals(Path(run_dir) / POOL, pool)
    info = {
        "role": dm.role,
        "reference_index": dm.reference_index if dm.role == "reference" else None,
        "query_seconds": round(secs, 3),
        "n_images": len(sel),
        "training": sorted(r["sample_id"] for r in dm.training_rows()),
    }
    write_json(Path(run_dir) / POOL_INFO, info)
    return pool


def open_detector(run_dir: Path):
    """``(model, datamodule)`` of a finished detector run: its ``config.yaml`` rebuilt and the
    weights of ``checkpoints/last.ckpt`` loaded."""
    import torch

    from experiments.fitting.suite_cli import suite_cli

    ckpt = Path(run_dir) / "checkpoints" / "last.ckpt"
    if not ckpt.is_file() or not (Path(run_dir) / "config.yaml").is_file():
        raise DataError(f"{run_dir}: no config.yaml or checkpoints/last.ckpt; pass a finished run.")
    cli = suite_cli(
        ["--config", str(Path(run_dir) / "config.yaml"), "--trainer.logger=false"], run=False
    )
    state = torch.load(ckpt, map_location="cpu", weights_only=False)["state_dict"]
    cli.model.load_state_dict(state)
    cli.datamodule.plan()
    return cli.model, cli.datamodule


def ensure_pool(run_dir: Path) -> tuple[dict, dict]:
    """The run's pool queries and their info, queried from the checkpoint when not saved yet."""
    run_dir = Path(run_dir)
    if not (run_dir / POOL).is_file():
        write_pool(run_dir, *open_detector(run_dir))
    return load_signals(run_dir / POOL), json.loads((run_dir / POOL_INFO).read_text())


# ---- reference detectors ---------------------------------------------------------------------
def reference_key(config: str, fit_args: list[str], target_run: Path, seed: int) -> str:
    """Cache key of the references: the config text, the fit arguments, the target's split
    manifest and the seed of the halves."""
    text = json.dumps(
        [
            Path(config).read_text(),
            list(fit_args),
            (Path(target_run) / "split_manifest.csv").read_text(),
            seed,
        ]
    )
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def reference_args(fit_args: list[str], k: int, seed: int) -> list[str]:
    """The fit arguments of reference ``k``: the target's, with role, index and seeds."""
    return [
        *fit_args,
        "--data.init_args.role",
        "reference",
        "--data.init_args.reference_index",
        str(k),
        "--data.init_args.reference_seed",
        str(seed),
        "--seed_everything",
        str(1000 * seed + k + 1),
    ]


def references(config, fit_args, s, target_run: Path, fit_run, log=print) -> list[dict]:
    """The ``s.n_references`` extra references: trained by ``fit_run`` (the audit's one fit) into
    the cache, or loaded from it. Returns per reference ``{run, pool, info, train_seconds,
    cached}``."""
    folder = Path(target_run) / "references" / reference_key(config, fit_args, target_run, s.seed)
    out = []
    for k in range(s.n_references):
        run = folder / f"ref_{k}"
        cached = (run / POOL).is_file() or (run / "checkpoints" / "last.ckpt").is_file()
        if not cached:
            if run.exists() and any(run.iterdir()):
                raise DataError(f"{run}: an unfinished reference; delete the folder to retrain it.")
            log(f"calibrated: training reference {k} into {run}")
            fit_run(config, reference_args(fit_args, k, s.seed), run, pool=True)
        pool, info = ensure_pool(run)
        metrics = json.loads((run / "detector_metrics.json").read_text())
        out.append(
            {
                "run": str(run),
                "pool": pool,
                "info": info,
                "train_seconds": float(metrics.get("fit_seconds", float("nan"))),
                "cached": cached,
            }
        )
    return out


# ---- the two games ---------------------------------------------------------------------------
def game_signals(player: tuple[dict, dict], refs: list[tuple[dict, dict]], side: str, iou: float):
    """Signals of one game: the ``side`` images of ``player`` ``(pool, info)`` with ``role``
    (member iff in the player's training list), ``cal_phi`` (N, 1), ``ref_phi`` (N, R, 1) and
    ``ref_in`` (N, R) (True iff in reference r's training list)."""
    pool, info = player
    rows = np.flatnonzero(pool["side"] == side)
    ids = pool["sample_id"][rows]
    member = np.isin(ids, info["training"])
    if not np.array_equal(member, pool["split"][rows] == "in"):
        raise DataError(f"the {side} detector's training list disagrees with its split manifest.")
    phi = detection_phi(pool, iou)[rows]
    ref_phi, ref_in = [], []
    for rpool, rinfo in refs:
        where = {sid: i for i, sid in enumerate(rpool["sample_id"])}
        missing = [sid for sid in ids if sid not in where]
        if missing:
            raise DataError(f"a reference was not queried on {missing[0]}; re-query its pool.")
        ref_phi.append(detection_phi(rpool, iou)[[where[sid] for sid in ids]])
        ref_in.append(np.isin(ids, rinfo["training"]))
    sig = {k: pool[k][rows] for k in META}
    sig["role"] = np.where(member, "member", "nonmember")
    sig["cal_phi"] = phi[:, None]
    sig["ref_phi"] = np.stack(ref_phi, 1)[:, :, None] if refs else np.zeros((len(rows), 0, 1))
    sig["ref_in"] = np.stack(ref_in, 1) if refs else np.zeros((len(rows), 0), bool)
    return sig


def bookkeeping(names: list[str], game: dict) -> dict:
    """Which target images each reference saw (IN) and did not (OUT), by ``sample_id``."""
    return {
        n: {
            "in": sorted(game["sample_id"][game["ref_in"][:, r]].tolist()),
            "out": sorted(game["sample_id"][~game["ref_in"][:, r]].tolist()),
        }
        for r, n in enumerate(names)
    }


# ---- attacks ---------------------------------------------------------------------------------
def attack_specs(s, n_refs: int) -> list[tuple[str, str, dict]]:
    """``(row, registered attack, args)`` of the calibrated rows for ``n_refs`` references
    (the shadow plus the extra ones). Online LiRA needs IN references (``n_refs >= 2``)."""
    rmia = {"offline": True, "a": s.a, "gamma": s.gamma, "seed": s.seed}
    specs = [("lira_offline", "lira_offline", {"variance": s.variance})]
    if n_refs >= 2:
        specs.append(("lira_online", "lira_online", {"variance": s.variance}))
    specs.append(("rmia_k1", "rmia", {**rmia, "max_refs": 1}))
    if n_refs >= 2:
        specs.append((f"rmia_k{n_refs}", "rmia", {**rmia, "max_refs": n_refs}))
    return specs


def run_calibrated(target_game: dict, shadow_game: dict, s, n_boot: int) -> dict[str, dict]:
    """Every calibrated row: fitted on the shadow game (online LiRA: threshold 0, the likelihood
    ratio 1 of balanced classes), evaluated on the target game's images balanced as the other
    rows. Returns metrics with ``ci`` (bootstrap by image group) and ``seconds`` per row."""
    ev = balanced(target_game, seed=0)
    y = membership(ev)
    results = {}
    n_refs = target_game["ref_phi"].shape[1]
    for row, name, args in attack_specs(s, n_refs):
        t0 = time.perf_counter()
        attack = get(name)(**args)
        if name == "lira_online":
            attack.threshold = 0.0
        else:
            attack.fit(shadow_game)
        scores = attack.score(ev)
        m = threshold_metrics(scores, y, attack.score_threshold, name=row)
        m["seconds"] = round(time.perf_counter() - t0, 3)
        m["n_references"] = int(args.get("max_refs") or n_refs)
        m["ci"] = ci_summary(scores, y, attack.score_threshold, ev["group"], n_boot=n_boot)
        m["args"] = args
        results[row] = m
    return results


def calibrated_section(config, fit_args, s, runs: tuple[Path, Path], out: Path, fit_run, n_boot):
    """Queries, references, both games and the calibrated rows of one audit; writes
    ``<out>/calibrated/`` (game signals, ``references.json``). Returns ``{rows, cost,
    references}``."""
    target_run, shadow_run = (Path(r) for r in runs)
    t0 = time.perf_counter()
    target, shadow = ensure_pool(target_run), ensure_pool(shadow_run)
    extra = references(config, fit_args, s, target_run, fit_run)
    ready = time.perf_counter() - t0
    refs = [(r["pool"], r["info"]) for r in extra]
    names = ["shadow"] + [f"ref_{k}" for k in range(len(extra))]
    target_game = game_signals(target, [shadow, *refs], "target", s.iou)
    shadow_game = game_signals(shadow, [target, *refs], "shadow", s.iou)
    folder = out / "calibrated"
    save_signals(folder / "target_game.npz", target_game)
    save_signals(folder / "shadow_game.npz", shadow_game)
    t1 = time.perf_counter()
    rows = run_calibrated(target_game, shadow_game, s, n_boot)
    shadow_fit = json.loads((shadow_run / "detector_metrics.json").read_text())["fit_seconds"]
    cost = {
        "reference_train_seconds": [float(shadow_fit)] + [r["train_seconds"] for r in extra],
        "reference_query_seconds": [shadow[1]["query_seconds"]]
        + [r["info"]["query_seconds"] for r in extra],
        "target_query_seconds": target[1]["query_seconds"],
        "extra_references_cached": [r["cached"] for r in extra],
        "references_ready_seconds_this_call": round(ready, 1),
        "attacks_seconds": round(time.perf_counter() - t1, 1),
    }
    refs_json = {
        "references": names,
        "runs": [str(shadow_run)] + [r["run"] for r in extra],
        "training": {n: info["training"] for n, (_, info) in zip(names, [shadow, *refs])},
        "target_game": bookkeeping(names, target_game),
        "shadow_game": bookkeeping(["target", *names[1:]], shadow_game),
    }
    write_json(folder / "references.json", refs_json)
    return {"rows": rows, "cost": cost, "references": names}


# ---- report ----------------------------------------------------------------------------------
def _pct(x) -> str:
    return "n/a" if x is None or not np.isfinite(x) else f"{100 * x:.2f}"


def calibrated_markdown(table1: dict[str, dict], cal: dict | None, shadow_fit_s: float) -> str:
    """Markdown: the calibrated rows, the confidence intervals of every row side by side, and
    the cost (reference training, queries, attack) of every row."""
    parts = []
    if cal:
        n_extra = len(cal["references"]) - 1
        parts += [
            "## Calibrated attacks (LiRA, RMIA)\n",
            f"References: the shadow detector (OUT for every target image) and {n_extra} extra "
            "reference detectors, each trained on half of the target's images (IN for those). "
            "Thresholds and RMIA's population come from the shadow game; online LiRA decides at "
            "likelihood ratio 1. Signal: logit of the mean best matching score of the image's "
            "ground-truth objects (IoU >= 0.5, right class).\n",
            "| attack | references | Attack Acc | Average Recall | AUC | TPR@1%FPR | non-members |",
            "|---|---|---|---|---|---|---|",
        ]
        for row, m in cal["rows"].items():
            parts.append(
                f"| {row} | {m['n_references']} | {_pct(m['acc'])} | {_pct(m['balanced_acc'])} "
                f"| {_pct(m['auc'])} | {_pct(m['tpr@1%fpr'])} | {m['n_nonmembers']} |"
            )
        parts.append("")
    every = {**table1, **(cal["rows"] if cal else {})}
    parts += [
        "## Confidence intervals (95%, bootstrap by image)\n",
        ci_table({}, {row: m["ci"] for row, m in every.items() if "ci" in m}).replace(
            "(individuals)", "(image groups)", 1
        ),
        "",
        "## Cost\n",
        cost_table(table1, cal, shadow_fit_s),
    ]
    return "\n".join(parts) + "\n"


def cost_table(table1: dict[str, dict], cal: dict | None, shadow_fit_s: float) -> str:
    """Markdown: per row, the models it needs beside the target, their training time, the
    query time and the attack's own time (seconds)."""
    lines = [
        "| attack | models beside the target | their training (s) | queries (s) | attack (s) |",
        "|---|---|---|---|---|",
    ]
    for row, m in table1.items():
        lines.append(f"| {row} | shadow | {shadow_fit_s:.1f} | at fit | {m['seconds']:.1f} |")
    if cal:
        c = cal["cost"]
        for row, m in cal["rows"].items():
            k = m["n_references"]
            train = sum(c["reference_train_seconds"][:k])
            query = c["target_query_seconds"] + sum(c["reference_query_seconds"][:k])
            lines.append(
                f"| {row} | shadow + {k - 1} references | {train:.1f} | {query:.1f} | "
                f"{m['seconds']:.2f} |"
            )
    return "\n".join(lines)
