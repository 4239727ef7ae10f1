"""Training throughput of the population embedding: the cached frozen-stage epoch against full
fine-tuning and against its own forward/backward floor, side by side in one run.

    python benchmarks/embedding_throughput.py [--epochs 2] [--threads 2] [--device cpu] [--full]

The recipe is ``configs/fit/beluga_reid_cpu.yaml``'s: :class:`ReIDEmbedding` (EfficientNet-Lite0
with the packaged weights, the first 6 stages frozen, GeM, a 512-d neck, sub-center ArcFace,
AdamW with two learning rates) on a :class:`PopulationDataModule` (3 fixed views per photo at
256 x 96 px, batch 64), here over a generated synthetic population written to a temporary folder
(default 32 whales x 2 encounters x 2 photos: 384 views, 6 batches; ``--full`` 200 x 3 x 2).
Every side trains the same views, model settings and batch size, whole batches only:

* cache build (untimed by the epochs, reported on its own): the frozen stages' activations of
  every training view, computed once (the photos' decoded views are read before it);
* cached: ``Trainer.fit`` epochs with the activation cache warm (the datamodule serves the cached
  float16 activations, the model trains the remaining stages), as ``cli.py fit`` trains;
* floor: a raw torch loop over the same cached activations held in one in-memory tensor (no
  Lightning, no DataLoader): ``x[idx]``, forward of the trainable stages, GeM, neck and ArcFace
  loss, ``backward()``, AdamW ``step()``;
* every step: one ``Trainer.fit`` epoch with the same frozen stages computed on every batch from
  the images (no activation cache), after ``--warmup-batches`` untimed batches;
* all stages: the same with ``frozen_stages=0`` (every stage trains: full fine-tuning).

The cached and floor sides alternate epoch by epoch in one process (as in
``benchmarks/fit_throughput.py``), one warm-up epoch each, then ``--epochs`` timed epochs each.
Prints samples/s of every side, cached/floor (goal >= 0.8) and the speed-up of caching
(cached / every step, cached / all stages); writes
``benchmarks/results/embedding_throughput.json``. On a machine shared with other work run it with
``OMP_WAIT_POLICY=PASSIVE`` (as ``run_all.py`` does): spinning OpenMP threads make every side
several times slower there.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
import warnings
from pathlib import Path

import pytorch_lightning as pl
import torch
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # run as a script: the repository root is importable

from benchmarks.common import add_common_args, apply_threads, sync, write_result  # noqa: E402
from benchmarks.fit_throughput import (  # noqa: E402
    Interleave,
    RawLoop,
    quiet_lightning,
    timed_fit,
)
from datamodules.catalogs import SyntheticWhalesReader  # noqa: E402
from datamodules.errors import DataError  # noqa: E402
from datamodules.population import PopulationDataModule  # noqa: E402
from datamodules.views import ViewSettings  # noqa: E402
from experiments.side_models.training import quiet_trainer  # noqa: E402
from lightning_modules.embedding import ReIDEmbedding  # noqa: E402

CONFIG = ROOT / "configs" / "fit" / "beluga_reid_cpu.yaml"
GOAL = ">= 0.8"
#: population sizes: whales, encounters per whale, photos per encounter, photo side (px)
SIZES = {
    "default": {"individuals": 32, "encounters": 2, "photos": 2, "photo_size": 128},
    "full": {"individuals": 200, "encounters": 3, "photos": 2, "photo_size": 128},
}


def recipe(a: argparse.Namespace) -> tuple[dict, dict]:
    """``(data, model init_args)`` of the CPU config, with the sizes of ``a`` over them."""
    cfg = yaml.safe_load(CONFIG.read_text())
    data = dict(cfg["data"]["init_args"])
    views = dict(data["views"])
    views.update({k: getattr(a, k) for k in ("height", "width") if getattr(a, k)})
    data["views"] = views
    if a.batch_size:
        data["batch_size"] = a.batch_size
    return data, dict(cfg["model"]["init_args"])


def make_datamodule(data: dict, a: argparse.Namespace, tmp: Path) -> PopulationDataModule:
    """The recipe's datamodule over a synthetic population written under ``tmp/cat`` (once),
    with its view and activation caches in ``tmp/views``; no whales held apart."""
    size = SIZES["full" if a.full else "default"] | {
        k: v for k in ("individuals", "encounters", "photos") if (v := getattr(a, k))
    }
    reader = SyntheticWhalesReader(
        n_individuals=size["individuals"],
        encounters_per_individual=size["encounters"],
        photos_per_encounter=size["photos"],
        image_size=size["photo_size"],
    )
    return PopulationDataModule(
        reader,
        root=str(tmp / "cat"),
        views=ViewSettings(**data["views"]),
        batch_size=data["batch_size"],
        cache_dir=str(tmp / "views"),
        seed=data["seed"],
    )


class EveryStep(ReIDEmbedding):
    """The recipe without the activation cache: the datamodule serves images and the frozen
    stages run (without gradient) on every batch."""

    def setup(self, stage: str) -> None:
        self.serves_frozen = False


def make_model(
    model_args: dict, num_classes: int, cls: type[ReIDEmbedding] = ReIDEmbedding, **overrides
) -> ReIDEmbedding:
    """A seeded ``cls`` of the recipe (``overrides``: e.g. ``frozen_stages``)."""
    pl.seed_everything(0, verbose=False)
    return cls(num_classes=num_classes, **(model_args | overrides))


def recipe_optimizer(model: ReIDEmbedding) -> torch.optim.AdamW:
    """The AdamW of :meth:`ReIDEmbedding.configure_optimizers` (same groups, learning rates and
    weight decay), without its schedule (which needs a trainer)."""
    hp, net = model.hparams, model.net
    trainable = list(net.trainable.parameters())
    head = [*net.pool.parameters(), *net.neck.parameters(), *model.head.parameters()]
    groups = [
        {"params": [p for p in trainable if p.ndim > 1], "lr": hp.backbone_lr},
        {"params": [p for p in trainable if p.ndim <= 1], "lr": hp.backbone_lr},
        {"params": head, "lr": hp.head_lr},
    ]
    for g, decay in zip(groups, (hp.weight_decay, 0.0, 0.0)):
        g["weight_decay"] = decay
    return torch.optim.AdamW([g for g in groups if g["params"]])


class FloorLoop(RawLoop):
    """The bare training loop of the trainable stages over in-memory frozen activations
    ``x`` (N, C', h, w) float16 and labels ``y`` (N,): one epoch of whole batches per call,
    with the recipe's AdamW and ArcFace loss."""

    whole_batches = True

    def make_optimizer(self, model: ReIDEmbedding) -> torch.optim.AdamW:
        return recipe_optimizer(model)

    def loss(self, idx: torch.Tensor) -> torch.Tensor:
        """ArcFace loss of the trainable stages on the activations of rows ``idx``."""
        a = self.x[idx].to(self.device, non_blocking=True).float()
        return self.model.head.loss(self.model.net.embed_frozen(a), self.y[idx].to(self.device))


class AfterWarmup(pl.Callback):
    """Wall time of one epoch after its first ``warmup`` batches (those untimed), and the
    number of batches timed."""

    def __init__(self, warmup: int):
        self.warmup, self.seconds, self.batches, self._t0 = warmup, 0.0, 0, None

    def _start(self, pl_module) -> None:
        sync(pl_module.device)
        self._t0 = time.perf_counter()

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        if self.warmup == 0:
            self._start(pl_module)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if batch_idx + 1 == self.warmup:
            self._start(pl_module)

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        sync(pl_module.device)
        self.seconds = time.perf_counter() - self._t0
        self.batches = trainer.num_training_batches - self.warmup


def one_epoch_sps(dm, model, warmup: int, device: str, root: Path) -> dict:
    """samples/s of one ``Trainer.fit`` epoch of ``model`` on ``dm`` after ``warmup`` batches."""
    timer = AfterWarmup(warmup)
    trainer = quiet_trainer(device, max_epochs=1, default_root_dir=str(root), callbacks=[timer])
    trainer.fit(model, datamodule=dm)
    samples = timer.batches * dm.batch_size
    return {"samples_per_s": samples / timer.seconds, "seconds": timer.seconds, "samples": samples}


def cached_activations(dm: PopulationDataModule, model: ReIDEmbedding) -> dict:
    """Decode the training views, then build the activation cache; times of both (s) and the
    activations (N*V, C', h, w) float16 with their labels (N*V,)."""
    rows = dm.rows("train")
    t0 = time.perf_counter()
    dm.view_array(rows)
    t1 = time.perf_counter()
    dm.attach_frozen(model.net.frozen_features, model.frozen_key())
    x = dm.inputs(rows)
    t2 = time.perf_counter()
    y = torch.tensor([r["label"] for r in rows]).repeat_interleave(len(x) // len(rows))
    return {"x": x, "y": y, "view_decode_s": t1 - t0, "cache_build_s": t2 - t1}


def cached_vs_floor(dm, model_args: dict, epochs: int, device: str, root: Path) -> dict:
    """The cached Lightning epochs and the floor loop, alternating (1 warm-up epoch each)."""
    act = cached_activations(dm, make_model(model_args, dm.num_classes))
    x, y = act.pop("x"), act.pop("y")
    floor = FloorLoop(make_model(model_args, dm.num_classes), x, y, dm.batch_size, device)
    inter = Interleave(floor)
    cached_t = timed_fit(
        dm, make_model(model_args, dm.num_classes), epochs, device, root, after=[inter]
    )
    samples = (len(y) // dm.batch_size) * dm.batch_size
    floor_t = inter.times[1:]
    return act | {
        "train_views": len(y),
        "samples_per_epoch": samples,
        "activation_shape": list(x.shape[1:]),
        "cached_epoch_s": cached_t,
        "floor_epoch_s": floor_t,
        "cached_samples_per_s": samples * len(cached_t) / sum(cached_t),
        "floor_samples_per_s": samples * len(floor_t) / sum(floor_t),
    }


def parse(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--epochs", type=int, default=2, help="timed cached and floor epochs")
    ap.add_argument("--warmup-batches", type=int, default=1, help="untimed fine-tune batches")
    ap.add_argument("--individuals", type=int, default=None, help="whales in the population")
    ap.add_argument("--encounters", type=int, default=None, help="encounters per whale")
    ap.add_argument("--photos", type=int, default=None, help="photos per encounter")
    ap.add_argument("--height", type=int, default=None, help="view height (px; config's)")
    ap.add_argument("--width", type=int, default=None, help="view width (px; config's)")
    ap.add_argument("--batch-size", type=int, default=None, help="batch size (config's)")
    ap.add_argument(
        "--no-all-stages", action="store_true", help="skip the frozen_stages=0 fine-tune epoch"
    )
    add_common_args(ap)
    a = ap.parse_args(argv)
    if a.epochs < 1 or a.warmup_batches < 0:
        ap.error("give --epochs 1 or more and --warmup-batches 0 or more")
    return a


def measure(a: argparse.Namespace, tmp: Path) -> tuple[dict, dict]:
    """Every side on one population under ``tmp``; ``(figures, model settings)``."""
    data, model_args = recipe(a)
    dm = make_datamodule(data, a, tmp)
    batches = len(dm.rows("train")) * dm.views.views // dm.batch_size
    if a.warmup_batches >= batches:
        raise DataError(
            f"--warmup-batches={a.warmup_batches}: an epoch has {batches} batches; give fewer."
        )
    res = cached_vs_floor(dm, model_args, a.epochs, a.device, tmp / "fit")
    n = dm.num_classes
    fresh = make_datamodule(data, a, tmp)  # serves images (the views are read from the cache)
    every = make_model(model_args, n, EveryStep)
    res["every_step"] = one_epoch_sps(fresh, every, a.warmup_batches, a.device, tmp / "fit")
    if not a.no_all_stages:
        whole = make_model(model_args, n, frozen_stages=0)
        res["all_stages"] = one_epoch_sps(fresh, whole, a.warmup_batches, a.device, tmp / "fit")
    res.update(classes=n, batch_size=dm.batch_size, views=data["views"])
    return res, model_args


def report(res: dict, model_args: dict) -> dict:
    """Print the figures; returns the result's details."""
    cached, floor = res["cached_samples_per_s"], res["floor_samples_per_s"]
    res["cached_over_floor"] = cached / floor
    res["cached_over_every_step"] = cached / res["every_step"]["samples_per_s"]
    line = f"every step {res['every_step']['samples_per_s']:.1f}"
    if "all_stages" in res:
        res["cached_over_all_stages"] = cached / res["all_stages"]["samples_per_s"]
        line += f", all stages trained {res['all_stages']['samples_per_s']:.1f}"
    v = res["views"]
    print(
        f"{model_args['arch']} frozen_stages={model_args['frozen_stages']}, {v['height']}x"
        f"{v['width']} px, {res['train_views']} views of {res['classes']} whales, batch "
        f"{res['batch_size']}: cache build {res['cache_build_s']:.1f} s (view decode "
        f"{res['view_decode_s']:.1f} s)\n samples/s: floor {floor:.1f}, cached {cached:.1f}, "
        f"{line}\n cached/floor = {res['cached_over_floor']:.3f} (goal {GOAL}), caching "
        f"speed-up x{res['cached_over_every_step']:.2f} over every step"
        + (f", x{res['cached_over_all_stages']:.2f} over all stages" if "all_stages" in res else "")
    )
    keys = ("arch", "weights", "frozen_stages", "embedding_dim")
    return (
        {"value_is": "cached epoch samples/s / floor samples/s"}
        | {k: model_args[k] for k in keys}
        | res
    )


def main(argv: list[str] | None = None) -> dict:
    a = parse(argv)
    threads = apply_threads(a.threads)
    quiet_lightning()
    # the frozen stages stay in eval mode on purpose; a Lightning-internal deprecation
    warnings.filterwarnings("ignore", message=".*module\\(s\\) in eval mode.*")
    warnings.filterwarnings("ignore", message=".*LeafSpec.*")
    with tempfile.TemporaryDirectory(prefix="embedding_throughput_") as tmp:
        try:
            res, model_args = measure(a, Path(tmp))
        except DataError as exc:  # bad sizes: one line, exit status 2
            print(f"error: {exc}", file=sys.stderr)
            raise SystemExit(2) from None
    details = report(res, model_args) | {"epochs_timed": a.epochs, "full": a.full}
    return write_result(
        "embedding_cached_epoch_vs_floor",
        details["cached_over_floor"],
        "x (cached Lightning epoch samples/s / raw in-memory train-step samples/s)",
        GOAL,
        details,
        argv,
        a.out or str(ROOT / "benchmarks" / "results" / "embedding_throughput.json"),
        threads=threads,
        device=a.device,
    )


if __name__ == "__main__":
    main()
