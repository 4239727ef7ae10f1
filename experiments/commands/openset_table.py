"""Known or new, per encounter, on a real NOAA catalog: the open-set table of docs/results.md.

For each split protocol (``group``: encounter-disjoint, random individuals; ``time``: catalog
before a date cutoff, queries after it) and each target (softmax or ArcFace head, photos squashed
or letterboxed), it trains a target on the ID1 ``train`` photos, extracts its signals for every
manifest row and scores the photos with the attacks (Yeom, Salem, max softmax, nearest
neighbour to the gallery of training photos). The photo scores of one encounter are averaged into
one encounter score (the mean keeps every photo's vote; a single bad frame cannot decide it, as it
can under the max) by the scorer ``cli.py discriminate`` uses
(:class:`experiments.known_new.classifier_scorer.Scorer`: scores on its calibration scale, e.g. minus the
log of Yeom's loss), and the evaluation encounters (ID1 ``test``: later or held-out encounters of
known whales; ID3: whales never seen) give:

* AUROC and TPR at 5% FPR of known vs new;
* BAKS and BAUS at the threshold that had 5% FPR on the attack set's encounters (ID1 ``val`` +
  ID2), with BAKS also asking for the right top-1 identity;
* re-identification top-1 / top-5 of the known encounters: by the mean class probabilities, or,
  for the nearest-neighbour rows, by the most similar gallery photo of each class.

Intervals are 95% bootstrap intervals resampled by individual (:func:`attacks.group_bootstrap.
bootstrap_ci`). Run (about 20-40 min on 2 CPU cores)::

    nice -n 5 python -m experiments.commands.openset_table --root ../shared/data/beluga_whaledo_dev \
        --output /tmp/openset_table

``--known_fraction`` and ``--max_encounters`` shrink the catalog of known whales (seeded; the
new whales stay as they are); ``experiments.commands.openset_trend`` varies them, the image size and the
epochs one at a time. It writes ``table.md``, ``table.json`` and each target's ``signals_*.npz`` and
``split_manifest_*.json`` into ``--output`` (a new folder; an existing one is refused).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import pytorch_lightning as pl
import torch

from attacks.group_bootstrap import bootstrap_ci
from attacks.metrics import auc, tpr_at_fpr
from attacks.open_set import group_labels, reid_topk, topk
from attacks.open_set import threshold_at_fpr as tau_at_fpr
from attacks.registry import get
from attacks.signals import save_signals, subset
from datamodules.catalogs import NoaaReader
from datamodules.manifest import encounter_key
from datamodules.splits import SplitSettings
from datamodules.whale import LoaderSettings, WhaleDataModule
from experiments.known_new.classifier_scorer import Scorer
from experiments.side_models.training import quiet_trainer
from lightning_modules.classifier import ImageClassifier
from lightning_modules.extraction import extract_rows

#: target name -> (model.head, data.loader.resize)
TARGETS = {
    "softmax-letterbox": ("softmax", "letterbox"),
    "softmax-squash": ("softmax", "squash"),
    "arcface-letterbox": ("arcface", "letterbox"),
    "arcface-squash": ("arcface", "squash"),
}
#: attacks scored on every target (the registry's names)
ATTACKS = ("yeom", "salem", "baseline_msp", "baseline_nn_cosine")
FPR = 0.05


def parse(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--root", required=True, help="NOAA catalog (metadata.csv + images/)")
    p.add_argument("--output", required=True, help="new folder for the table and signals")
    p.add_argument("--protocols", nargs="+", default=["group", "time"])
    p.add_argument("--targets", nargs="+", default=list(TARGETS), choices=list(TARGETS))
    p.add_argument("--image_size", type=int, default=96)
    p.add_argument("--epochs", type=int, default=30)
    p.add_argument("--time_cutoff", default=None, help="time protocol cutoff (default: 1/3)")
    p.add_argument("--n_boot", type=int, default=1000)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--cache_dir", default="/tmp/openset_table_cache")
    p.add_argument("--attacks", nargs="+", default=list(ATTACKS), choices=list(ATTACKS))
    p.add_argument(
        "--known_fraction",
        type=float,
        default=1.0,
        help="share of the known (ID1) whales kept in the catalog (seeded; 1: all)",
    )
    p.add_argument(
        "--max_encounters",
        type=int,
        default=None,
        help="at most this many training encounters of each known whale (seeded; default all)",
    )
    return p.parse_args(argv)


def datamodule(args, protocol: str, resize: str, head: str) -> WhaleDataModule:
    split = SplitSettings(
        seed=args.seed,
        group_by="encounter_id",
        split_protocol=protocol,
        time_cutoff=args.time_cutoff,
        balance_nonmembers=False,  # every photo of a new whale: more encounters to judge
        member_fraction=args.known_fraction,
        max_train_groups=args.max_encounters,
    )
    loader = LoaderSettings(
        image_size=args.image_size,
        resize=resize,
        batch_size=32,
        eval_batch_size=64,
        num_workers=0,
        train_augment=True,
        augment_on_device=True,
        verify_images=False,
        cache_dir=args.cache_dir,
        sampler="individuals" if head == "arcface" else "shuffle",
        m_per_individual=4,
    )
    return WhaleDataModule(NoaaReader(viewpoint="top"), root=args.root, split=split, loader=loader)


def train_target(args, dm: WhaleDataModule, head: str, root: Path) -> ImageClassifier:
    """resnet18 from scratch on the ID1 train photos (Adam 1e-3, regularized preset)."""
    pl.seed_everything(args.seed, workers=True, verbose=False)
    model = ImageClassifier(
        dm.num_classes,
        arch="resnet18",
        preset="regularized",
        dropout=0.2,
        head=head,
        optimizer=lambda params: torch.optim.Adam(params, lr=1e-3),
    )
    trainer = quiet_trainer(max_epochs=args.epochs, default_root_dir=str(root))
    trainer.fit(model, datamodule=dm)
    return model.eval()


def scorer_for(name: str, attack, sig: dict) -> Scorer:
    """The scorer ``cli.py discriminate`` uses (:class:`experiments.known_new.classifier_scorer.Scorer`)
    for the fitted ``attack``: scores on its calibration scale, encounters by the mean of their
    photos' scores and class scores; the nearest-neighbour rows score identities by the most
    similar training photo of each class."""
    train = sig["split"] == "train"
    return Scorer(
        attack,
        name,
        np.asarray(sig["embedding"][train], dtype=np.float64),
        np.asarray(sig["label"][train]),
        int(sig["logits"].shape[1]),
        "mean",
        by_cosine=name == "baseline_nn_cosine",
    )


def encounters(scorer: Scorer, sig: dict, groups: np.ndarray) -> dict:
    """Encounter rows of ``sig`` by the shared scorer: score, class scores, membership,
    identity, label."""
    names, score, cls = scorer.encounters(sig, scorer.photo_raw(sig), groups)
    return {
        "score": score,
        "cls": cls,
        "member": group_labels((sig["role"] == "member").astype(int), groups)[1],
        "identity": group_labels(sig["identity"], groups)[1],
        "label": group_labels(sig["label"], groups)[1],
        "name": names,
    }


def _ci(args, metric, enc: dict) -> list[float]:
    """[point, lo, hi] of ``metric(idx, member)`` over encounters, resampled by individual."""
    idx = np.arange(len(enc["member"]), dtype=np.float64)
    out = bootstrap_ci(
        metric, idx, enc["member"], enc["identity"], n_boot=args.n_boot, seed=args.seed
    )
    return [round(float(v), 3) for v in out]


def metrics(args, att: dict, ev: dict) -> dict:
    """The table's columns for one (target, attack): ``ev`` encounters, ``tau`` from ``att``."""
    tau = tau_at_fpr(att["score"], att["member"], FPR)
    s, cls, lab, ident = ev["score"], ev["cls"], ev["label"], ev["identity"]
    pred = topk(cls, 1)[0][:, 0]

    def per_id(ok: np.ndarray, i: np.ndarray) -> float:
        """Mean over individuals of ``ok`` (aligned with rows ``i``)."""
        ids = np.unique(ident[i])
        return float(np.mean([ok[ident[i] == k].mean() for k in ids])) if len(ids) else np.nan

    def pick(f):
        return lambda idx, y: f(idx.astype(int), y.astype(bool))

    def baks(i, y):
        m = i[y]
        return per_id((s[m] >= tau) & (pred[m] == lab[m]), m)

    return {
        "n_known": int(ev["member"].sum()),
        "n_new": int((1 - ev["member"]).sum()),
        "auroc": _ci(args, pick(lambda i, y: auc(s[i], y)), ev),
        "tpr_at_5fpr": _ci(args, pick(lambda i, y: tpr_at_fpr(s[i], y, FPR)), ev),
        "baks": _ci(args, pick(baks), ev),
        "baus": _ci(args, pick(lambda i, y: per_id(s[i[~y]] < tau, i[~y])), ev),
        "reid_top1": _ci(
            args, pick(lambda i, y: reid_topk(cls[i[y]], lab[i[y]], (1,))["reid_top1"]), ev
        ),
        "reid_top5": _ci(
            args, pick(lambda i, y: reid_topk(cls[i[y]], lab[i[y]], (5,))["reid_top5"]), ev
        ),
    }


def score_target(args, sig: dict, groups: np.ndarray) -> dict:
    """Every attack on one target's signals -> {attack: metrics}."""
    out = {}
    for name in args.attacks:
        attack = get(name).for_run(sig) if name == "baseline_nn_cosine" else get(name)()
        att_sig, ev_sig = subset(sig, "attack"), subset(sig, "eval")
        attack.fit(att_sig)
        scorer = scorer_for(name, attack, sig)
        sets = {}
        for key, part in (("attack", att_sig), ("eval", ev_sig)):
            sets[key] = encounters(scorer, part, groups[sig["set"] == key])
        out[name] = metrics(args, sets["attack"], sets["eval"])
    return out


def run_one(args, protocol: str, target: str, out: Path) -> dict:
    head, resize = TARGETS[target]
    dm = datamodule(args, protocol, resize, head)
    rows = dm.plan()
    dm.setup("fit")
    t0 = time.perf_counter()
    model = train_target(args, dm, head, out / f"{protocol}_{target}")
    secs = time.perf_counter() - t0
    sig = extract_rows(model, rows, dm.signal_loader, "cpu", embed=model.embed)
    groups = np.array([encounter_key(rows[i]) for i in sig["index"]])
    save_signals(out / f"signals_{protocol}_{target}.npz", sig)
    (out / f"split_manifest_{protocol}_{target}.json").write_text(
        json.dumps(dm.manifest_header(), indent=1, default=str)
    )
    train = sig["split"] == "train"
    known_test = sig["split"] == "test"
    return {
        "protocol": protocol,
        "target": target,
        "train_seconds": round(secs, 1),
        "train_acc": float((sig["pred"][train] == sig["label"][train]).mean()),
        "test_photo_acc": float((sig["pred"][known_test] == sig["label"][known_test]).mean()),
        "n_individuals": dm.manifest_header()["n_individuals"],
        "n_train_photos": int(train.sum()),
        "n_train_encounters": len(set(groups[train])),
        "time_cutoff": dm.manifest_header().get("time_cutoff"),
        "attacks": score_target(args, sig, groups),
    }


def fmt(ci) -> str:
    p, lo, hi = ci
    return "n/a" if not np.isfinite(p) else f"{p:.2f} [{lo:.2f}, {hi:.2f}]"


def table(results: list[dict]) -> str:
    head = (
        "| protocol | target | attack | known / new enc. | AUROC | TPR@5%FPR | BAKS | BAUS | "
        "re-ID top-1 | re-ID top-5 |\n|---|---|---|---|---|---|---|---|---|---|\n"
    )
    lines = []
    for r in results:
        for name, m in r["attacks"].items():
            cells = [r["protocol"], r["target"], name, f"{m['n_known']} / {m['n_new']}"]
            cells += [fmt(m[k]) for k in ("auroc", "tpr_at_5fpr", "baks", "baus")]
            cells += [fmt(m["reid_top1"]), fmt(m["reid_top5"])]
            lines.append("| " + " | ".join(cells) + " |")
    return head + "\n".join(lines) + "\n"


def main(argv=None) -> None:
    args = parse(argv)
    out = Path(args.output)
    if out.exists():
        raise SystemExit(
            f"--output {out}: already exists; give a new folder (nothing overwritten)."
        )
    out.mkdir(parents=True)
    results = []
    for protocol in args.protocols:
        for target in args.targets:
            results.append(run_one(args, protocol, target, out))
            (out / "table.json").write_text(json.dumps({"args": vars(args), "results": results}))
            (out / "table.md").write_text(table(results))
            print(table(results[-1:]), flush=True)
    print(f"table: {out / 'table.md'}")


if __name__ == "__main__":
    main()
