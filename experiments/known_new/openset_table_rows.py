"""One point of the open-set table of docs/results.md (``cli.py openset_table``, and each point
of ``cli.py openset_trend``): train a target on a NOAA catalog's ID1 ``train`` photos, extract its
signals for every manifest row, and score known vs new encounters with the scorer ``cli.py
discriminate`` uses (:class:`attacks.known_new.Scorer`).

Encounter scores are the mean of their photos' scores on the calibration scale (e.g. minus the
log of Yeom's loss) and the mean of their class scores; the metrics per (target, attack) are
AUROC and TPR at 5% FPR of the evaluation encounters, BAKS and BAUS at the threshold that had
5% FPR on the attack set's encounters, and re-identification top-1 / top-5 of the known ones,
each ``[point, lo, hi]`` with 95% bootstrap intervals resampled by individual. Torch, Lightning
and the datamodule load only when a target is trained.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from attacks.group_bootstrap import bootstrap_ci
from attacks.known_new import Scorer, encounter_rows
from attacks.metrics import auc, tpr_at_fpr
from attacks.open_set import reid_topk, topk
from attacks.open_set import threshold_at_fpr as tau_at_fpr
from attacks.signals import save_signals, subset
from datamodules.errors import DataError
from datamodules.manifest import encounter_key

#: target name -> (model.head, data.loader.resize)
TARGETS = {
    "softmax-letterbox": ("softmax", "letterbox"),
    "softmax-squash": ("softmax", "squash"),
    "arcface-letterbox": ("arcface", "letterbox"),
    "arcface-squash": ("arcface", "squash"),
}
#: attacks scored on every target (the registry's names)
ATTACKS = ("yeom", "salem", "baseline_msp", "baseline_nn_cosine")
#: split protocols of the table (``data.split.split_protocol``)
PROTOCOLS = ("group", "time", "photo", "paper")
FPR = 0.05


@dataclass
class TableOptions:
    """The options of one table (``cli.py openset_table``; ``openset_trend`` sets one per
    point): the catalog, protocols, targets and attacks, the training and the bootstrap."""

    root: str
    output: str
    protocols: list[str] = field(default_factory=lambda: ["group", "time"])
    targets: list[str] = field(default_factory=lambda: list(TARGETS))
    image_size: int = 96
    epochs: int = 30
    time_cutoff: str | None = None
    n_boot: int = 1000
    seed: int = 0
    cache_dir: str = "/tmp/openset_table_cache"
    attacks: list[str] = field(default_factory=lambda: list(ATTACKS))
    known_fraction: float = 1.0
    max_encounters: int | None = None


def add_training_options(p, defaults: TableOptions) -> None:
    """The options of the catalog and of every target's training and scoring of ``cli.py
    openset_table`` and ``cli.py openset_trend`` (``defaults``: their values)."""
    p.add_argument("--root", type=str, required=True, help="NOAA catalog (metadata.csv + images/)")
    p.add_argument(
        "--time_cutoff",
        type=str | None,
        default=defaults.time_cutoff,
        help="time protocol cutoff date (default: the first third of the dates)",
    )
    p.add_argument("--n_boot", type=int, default=defaults.n_boot, help="bootstrap replicates")
    p.add_argument("--seed", type=int, default=defaults.seed, help="split and training seed")
    p.add_argument(
        "--cache_dir", type=str, default=defaults.cache_dir, help="decoded-image cache folder"
    )


def check_options(root: str, output: str, counts: list, fractions: list = ()) -> None:
    """Every check before slow work, one DataError line naming the option: ``root`` a folder,
    ``output`` new, each ``(option, value)`` of ``counts`` (sizes, epochs, replicates) >= 1 and
    of ``fractions`` in (0, 1]."""
    if not Path(root).is_dir():
        raise DataError(f"--root {root}: not a folder; pass a NOAA catalog (metadata.csv)")
    if Path(output).exists():
        raise DataError(
            f"--output {output}: already exists; give a new folder (nothing overwritten)."
        )
    for option, value in counts:
        if value < 1:
            raise DataError(f"--{option} {value}: give a whole number of at least 1")
    for option, value in fractions:
        if not 0 < value <= 1:
            raise DataError(f"--{option} {value}: give a share above 0 and at most 1, e.g. 0.5")


def datamodule(opts: TableOptions, protocol: str, resize: str, head: str):
    """The :class:`~datamodules.whale.WhaleDataModule` of one (protocol, target): top views,
    encounter-disjoint groups, every photo of a new whale kept."""
    from datamodules.catalogs import NoaaReader
    from datamodules.splits import SplitSettings
    from datamodules.whale import LoaderSettings, WhaleDataModule

    split = SplitSettings(
        seed=opts.seed,
        group_by="encounter_id",
        split_protocol=protocol,
        time_cutoff=opts.time_cutoff,
        balance_nonmembers=False,  # every photo of a new whale: more encounters to judge
        member_fraction=opts.known_fraction,
        max_train_groups=opts.max_encounters,
    )
    loader = LoaderSettings(
        image_size=opts.image_size,
        resize=resize,
        batch_size=32,
        eval_batch_size=64,
        num_workers=0,
        train_augment=True,
        augment_on_device=True,
        verify_images=False,
        cache_dir=opts.cache_dir,
        sampler="individuals" if head == "arcface" else "shuffle",
        m_per_individual=4,
    )
    return WhaleDataModule(NoaaReader(viewpoint="top"), root=opts.root, split=split, loader=loader)


def train_target(opts: TableOptions, dm, head: str, root: Path):
    """resnet18 from scratch on the ID1 train photos (Adam 1e-3, regularized preset)."""
    import pytorch_lightning as pl
    import torch

    from experiments.side_models.training import quiet_trainer
    from lightning_modules.classifier import ImageClassifier

    pl.seed_everything(opts.seed, workers=True, verbose=False)
    model = ImageClassifier(
        dm.num_classes,
        arch="resnet18",
        preset="regularized",
        dropout=0.2,
        head=head,
        optimizer=lambda params: torch.optim.Adam(params, lr=1e-3),
    )
    trainer = quiet_trainer(max_epochs=opts.epochs, default_root_dir=str(root))
    trainer.fit(model, datamodule=dm)
    return model.eval()


def scorer_for(name: str, attack, sig: dict) -> Scorer:
    """The scorer of the fitted ``attack`` (:class:`attacks.known_new.Scorer`, the one ``cli.py
    discriminate`` uses): encounters by the mean of their photos' scores and class scores; the
    nearest-neighbour rows score identities by the most similar training photo of each class."""
    n_classes = int(sig["logits"].shape[1])
    by_cosine = name == "baseline_nn_cosine"
    return Scorer.from_signals(attack, name, sig, n_classes, "mean", by_cosine)


def _ci(opts: TableOptions, metric, enc: dict) -> list[float]:
    """[point, lo, hi] of ``metric(idx, member)`` over encounters, resampled by individual."""
    idx = np.arange(len(enc["member"]), dtype=np.float64)
    out = bootstrap_ci(
        metric, idx, enc["member"], enc["identity"], n_boot=opts.n_boot, seed=opts.seed
    )
    return [round(float(v), 3) for v in out]


def metrics(opts: TableOptions, att: dict, ev: dict) -> dict:
    """The table's columns for one (target, attack): ``ev`` encounters (:func:`attacks.
    known_new.encounter_rows`), the threshold from the ``att`` encounters."""
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

    def reid(k: int):
        return pick(lambda i, y: reid_topk(cls[i[y]], lab[i[y]], (k,))[f"reid_top{k}"])

    return {
        "n_known": int(ev["member"].sum()),
        "n_new": int((1 - ev["member"]).sum()),
        "auroc": _ci(opts, pick(lambda i, y: auc(s[i], y)), ev),
        "tpr_at_5fpr": _ci(opts, pick(lambda i, y: tpr_at_fpr(s[i], y, FPR)), ev),
        "baks": _ci(opts, pick(baks), ev),
        "baus": _ci(opts, pick(lambda i, y: per_id(s[i[~y]] < tau, i[~y])), ev),
        "reid_top1": _ci(opts, reid(1), ev),
        "reid_top5": _ci(opts, reid(5), ev),
    }


def score_target(opts: TableOptions, sig: dict, groups: np.ndarray) -> dict:
    """Every attack of ``opts.attacks`` fitted on the attack set of one target's signals ``sig``
    (encounters ``groups`` (N,)) -> ``{attack: metrics}``."""
    from attacks.registry import get

    out = {}
    for name in opts.attacks:
        attack = get(name).for_run(sig) if name == "baseline_nn_cosine" else get(name)()
        att_sig, ev_sig = subset(sig, "attack"), subset(sig, "eval")
        attack.fit(att_sig)
        scorer = scorer_for(name, attack, sig)
        sets = {}
        for key, part in (("attack", att_sig), ("eval", ev_sig)):
            sets[key] = encounter_rows(scorer, part, groups[sig["set"] == key])
        out[name] = metrics(opts, sets["attack"], sets["eval"])
    return out


def run_one(opts: TableOptions, protocol: str, target: str, out: Path) -> dict:
    """Train, extract and score one (protocol, target) in ``out`` (its ``signals_*.npz`` and
    ``split_manifest_*.json``); returns its table row with ``attacks`` -> metrics."""
    from lightning_modules.extraction import extract_rows

    head, resize = TARGETS[target]
    dm = datamodule(opts, protocol, resize, head)
    rows = dm.plan()
    dm.setup("fit")
    t0 = time.perf_counter()
    model = train_target(opts, dm, head, out / f"{protocol}_{target}")
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
        "attacks": score_target(opts, sig, groups),
    }


def fmt(ci) -> str:
    """``point [lo, hi]`` with 2 decimals (``n/a`` when the point is not finite)."""
    p, lo, hi = ci
    return "n/a" if not np.isfinite(p) else f"{p:.2f} [{lo:.2f}, {hi:.2f}]"
