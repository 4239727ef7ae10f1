"""Membership inference against a target classifier next to the calibrated open-set score, on the
same query encounters (``cli.py reid --target <target run>``).

The target run (``cli.py fit`` of a whale config, then ``cli.py attack``) trained on the ID1
``train`` photos of its manifest; its evaluation set holds held-out photos of those whales
(members) and photos of whales it never saw (non-members). Each attack wrote its evaluation
scores to ``<target>/attacks/<attack>/scores.npz`` with their ``sample_id``. Here both sides score
the same encounters:

* every attack: the mean of its photo scores per encounter;
* the open-set score of the population embedding: each encounter's mean embedding against the
  target's training photos as the catalog of known whales, calibrated against the embedding run's
  reference whales (:mod:`attacks.reference_calibrated`).

AUROC of known vs new per encounter with 95 % bootstrap intervals by individual, and the
difference (open-set minus attack) with its paired interval (same resampled individuals).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from attacks.group_bootstrap import bootstrap_cis
from attacks.metrics import auc
from attacks.open_set import aggregate
from attacks.reference_calibrated import (
    STATISTICS,
    calibrated_scores,
    encounter_embeddings,
    identity_similarity,
)
from datamodules.catalogs import NoaaReader
from datamodules.errors import DataError
from datamodules.manifest import encounter_key, read_manifest
from experiments.run.embedding_folder import EmbeddingRun
from experiments.run.input_checks import check_run_folder


def attack_scores(target: Path) -> dict[str, dict[str, float]]:
    """``{attack: {sample_id: score}}`` of every attack folder of the target run."""
    out = {}
    for path in sorted((target / "attacks").glob("*/scores.npz")):
        with np.load(path, allow_pickle=False) as z:
            if "sample_id" not in z.files:
                continue
            out[path.parent.name] = dict(zip(z["sample_id"].astype(str), z["score"]))
    if not out:
        raise DataError(
            f"--target {target}: no attacks/*/scores.npz; run `python cli.py attack --run "
            f"{target} --config attack_cpu.yaml` first."
        )
    return out


def _paired(open_set: np.ndarray, mia: np.ndarray, known: np.ndarray, ident, n_boot, seed):
    """AUROCs of both scores and of their difference over the same bootstrap replicates."""
    both = np.stack([open_set, mia], 1)
    metrics = {
        "open_set": lambda s, y: auc(s[:, 0], y),
        "attack": lambda s, y: auc(s[:, 1], y),
        "difference": lambda s, y: auc(s[:, 0], y) - auc(s[:, 1], y),
    }
    ci = bootstrap_cis(metrics, both, known.astype(int), ident, n_boot=n_boot, seed=seed)
    return {k: list(v) for k, v in ci.items()}


def _open_set(er: EmbeddingRun, rows, roots, eval_rows, statistic: str, tta: bool):
    """Encounter names (G,) and open-set scores (G,) of the evaluation rows' encounters."""
    reader = NoaaReader()
    train = [r for r in rows if r["split"] == "train"]
    root = roots["main"]
    cat_emb = er.embed(reader, root, train, tta)
    ev_emb = er.embed(reader, root, eval_rows, tta)
    enc = np.asarray([encounter_key(r) for r in eval_rows])
    names, enc_emb = encounter_embeddings(ev_emb, enc)
    _, cat_sims = identity_similarity(enc_emb, cat_emb, np.asarray([r["identity"] for r in train]))
    _, ref_sims = identity_similarity(enc_emb, *er.reference(tta))
    return names, calibrated_scores(cat_sims, ref_sims, statistic)


def compare(er: EmbeddingRun, target: str | Path, *, statistic="zscore", tta=True,
            n_boot=1000, seed=0) -> dict:  # fmt: skip
    """Per attack: encounter AUROC of the attack and of the open-set score on its encounters."""
    target = check_run_folder(target, "--target")
    rows, header = read_manifest(target)
    roots = {k: Path(v) for k, v in header["roots"].items()}
    if statistic not in STATISTICS:
        raise DataError(f"--statistic {statistic!r}: choose one of {list(STATISTICS)}.")
    eval_rows = [r for r in rows if r["set"] == "eval" and r["catalog"] == "main"]
    by_id = {r["sample_id"]: r for r in eval_rows}
    names, open_scores = _open_set(er, rows, roots, eval_rows, statistic, tta)
    open_by_enc = dict(zip(names, open_scores))
    out = {"target": str(target), "statistic": statistic, "attacks": {}}
    for attack, scores in attack_scores(target).items():
        picked = [(by_id[s], v) for s, v in scores.items() if s in by_id]
        if not picked:
            continue
        enc = np.asarray([encounter_key(r) for r, _ in picked])
        enc_names, mean = aggregate(np.asarray([v for _, v in picked]), enc, "mean")
        first = {encounter_key(r): r for r, _ in picked}
        ident = np.asarray([first[n]["identity"] for n in enc_names])
        known = np.asarray([first[n]["role"] == "member" for n in enc_names])
        if known.all() or not known.any():
            continue
        os_ = np.asarray([open_by_enc[n] for n in enc_names])
        out["attacks"][attack] = {
            "n_known_encounters": int(known.sum()),
            "n_new_encounters": int((~known).sum()),
            **_paired(os_, mean, known, ident, n_boot, seed),
        }
    return out


def markdown(result: dict) -> list[str]:
    """Lines of the comparison table."""
    lines = [
        f"## Membership inference against the target vs the open-set score "
        f"(`{result['statistic']}`), same encounters",
        "",
        f"Target run `{result['target']}`. AUROC per encounter [95 % interval by individual]; "
        "difference = open-set minus attack, paired.",
        "",
        "| attack | known / new encounters | attack AUROC | open-set AUROC | difference |",
        "|---|---|---|---|---|",
    ]
    for name, r in result["attacks"].items():
        cells = [f"{r[k][0]:.3f} [{r[k][1]:.2f}, {r[k][2]:.2f}]"
                 for k in ("attack", "open_set", "difference")]  # fmt: skip
        lines.append(f"| {name} | {r['n_known_encounters']} / {r['n_new_encounters']} | "
                     + " | ".join(cells) + " |")  # fmt: skip
    return lines + [""]
