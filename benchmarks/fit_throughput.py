"""Fit throughput: the demo classifier trained by a real Lightning ``Trainer`` on the whale
datamodule, against the raw train step of the same model on in-memory tensors.

    python benchmarks/fit_throughput.py [--epochs 8] [--threads 2] [--device cpu] [--full]

Both sides train the demo model (``configs/fit/demo.yaml``: ``ImageClassifier`` resnet18, overfit
preset, Adam 3e-4, batch 32, 48 px; ``--full``: resnet50 at 224 px on 256 px photos) on the
training photos of the demo's generated synthetic whales (written once under ``--data-dir``,
default ``data_cache/``):

* fit: ``Trainer.fit(model, datamodule)`` with the datamodule's own defaults (loader, decoding,
  workers), the leakage monitor, validation, logger, checkpointing, progress bar and model summary
  off. A small callback records ``on_train_epoch_start``/``on_train_epoch_end``;
* raw: the same model, optimizer (``configure_optimizers``) and batch size over the same photos
  held as one in-memory tensor: ``x[idx].to(device)``, forward, cross-entropy, ``backward()``,
  ``step()``.

The two sides alternate epoch by epoch in one process (a callback placed after the epoch timer
runs one raw epoch after each fit epoch), so a busy machine hurts neither more. One warm-up epoch
each, then ``--epochs`` timed epochs each (``--rounds`` repeats the whole fit). Prints samples/s
of both (total samples / total time of the timed epochs) and the ratio fit / raw (goal >= 0.9);
writes
``benchmarks/results/fit_throughput_vs_raw_loop.json``.
"""

from __future__ import annotations

import argparse
import logging
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path

import pytorch_lightning as pl
import torch
import torch.nn.functional as F
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # run as a script: the repository root is importable

from benchmarks.common import add_common_args, apply_threads, sync, write_result  # noqa: E402
from datamodules.catalogs import SyntheticWhalesReader  # noqa: E402
from datamodules.splits import SplitSettings  # noqa: E402
from datamodules.whale import LoaderSettings, WhaleDataModule  # noqa: E402
from experiments.side_models.training import quiet_trainer  # noqa: E402
from lightning_modules.classifier import ImageClassifier  # noqa: E402

DEMO = ROOT / "configs" / "fit" / "demo.yaml"


def demo_settings(full: bool = False) -> tuple[dict, dict]:
    """``(data, model init_args)`` of ``configs/fit/demo.yaml``; ``data`` holds the ``reader``'s
    init_args (generator settings), ``split`` and ``loader``. ``full``: resnet50 at 224 px on
    256 px photos (the paper's architecture and input size)."""
    cfg = yaml.safe_load(DEMO.read_text())
    init = cfg["data"]["init_args"]
    data = {
        "reader": dict(init["reader"]["init_args"]),
        "split": dict(init.get("split") or {}),
        "loader": dict(init.get("loader") or {}),
    }
    model = dict(cfg["model"]["init_args"])
    if full:
        data["loader"]["image_size"] = 224
        data["reader"]["image_size"] = 256
        model["arch"] = "resnet50"
    return data, model


def make_datamodule(data_args: dict, data_dir: str | Path) -> WhaleDataModule:
    """The demo datamodule with its catalog under ``data_dir/<settings key>`` (generated once)."""
    reader = SyntheticWhalesReader(**data_args["reader"])
    return WhaleDataModule(
        reader,
        root=str(Path(data_dir) / reader.key()),
        split=SplitSettings(**data_args["split"]),
        loader=LoaderSettings(**data_args["loader"]),
    )


def make_model(model_args: dict, num_classes: int) -> ImageClassifier:
    args = dict(model_args)
    opt = args.pop("optimizer", None)
    factory = None
    if opt:
        module, name = opt["class_path"].rsplit(".", 1)
        cls = getattr(__import__(module, fromlist=[name]), name)
        kw = dict(opt.get("init_args") or {})

        def factory(params):
            return cls(params, **kw)

    return ImageClassifier(num_classes=num_classes, optimizer=factory, **args)


class EpochTimer(pl.Callback):
    """Wall time of each training epoch (``on_train_epoch_start`` to ``on_train_epoch_end``).

    Put it last in the callback list, so that its end time includes the other callbacks' epoch
    end work. ``stop_after``: stop the fit after that many epochs (so ``max_epochs`` can be
    large and nothing keyed to the last epoch runs).
    """

    def __init__(self, stop_after: int | None = None):
        self.times: list[float] = []
        self.stop_after = stop_after
        self._t0 = 0.0

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        sync(pl_module.device)
        self._t0 = time.perf_counter()

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        sync(pl_module.device)
        self.times.append(time.perf_counter() - self._t0)
        if self.stop_after is not None and len(self.times) >= self.stop_after:
            trainer.should_stop = True


def quiet_lightning() -> None:
    for name in ("pytorch_lightning", "lightning.pytorch", "lightning_fabric"):
        logging.getLogger(name).setLevel(logging.ERROR)
    warnings.filterwarnings("ignore", message=".*does not have many workers.*")
    warnings.filterwarnings("ignore", message=".*LeakageMonitor.*")


def timed_fit(
    dm: WhaleDataModule,
    model: ImageClassifier,
    epochs: int,
    device: str,
    root_dir: str | Path,
    callbacks: list[pl.Callback] | None = None,
    after: list[pl.Callback] | None = None,
) -> list[float]:
    """Fit for 1 warm-up + ``epochs`` epochs; returns the timed epochs' wall times (s).

    ``callbacks`` run inside the timed epochs, ``after`` after the timer (outside them)."""
    timer = EpochTimer(stop_after=1 + epochs)
    trainer = quiet_trainer(
        device,
        max_epochs=10_000,  # the timer stops the fit: no "last epoch" work in the timed ones
        default_root_dir=str(root_dir),
        callbacks=[*(callbacks or []), timer, *(after or [])],
    )
    trainer.fit(model, datamodule=dm)
    return timer.times[1:]


def in_memory(dm: WhaleDataModule) -> tuple[torch.Tensor, torch.Tensor]:
    """The training photos as decoded by the datamodule's own training loader, in memory."""
    xs, ys = [], []
    for x, y, _ in dm.train_dataloader():
        xs.append(x)
        ys.append(y)
    return torch.cat(xs), torch.cat(ys)


class RawLoop:
    """The bare training loop of ``model`` over in-memory ``x``, ``y``: one epoch per call.
    Subclasses change :meth:`make_optimizer` and :meth:`loss`; ``whole_batches`` drops the last
    partial batch."""

    whole_batches = False

    def __init__(self, model, x, y, batch_size: int, device: str, seed: int = 0):
        self.model = model.to(device).train()
        self.opt = self.make_optimizer(model)
        self.x, self.y, self.batch_size, self.device = x, y, batch_size, device
        self.g = torch.Generator().manual_seed(seed)

    def make_optimizer(self, model) -> torch.optim.Optimizer:
        """The model's own optimizer (:meth:`configure_optimizers`, without a schedule)."""
        opt = model.configure_optimizers()
        return opt["optimizer"] if isinstance(opt, dict) else opt

    def loss(self, idx: torch.Tensor) -> torch.Tensor:
        """Cross-entropy of the batch of rows ``idx``."""
        xb = self.x[idx].to(self.device, non_blocking=True)
        yb = self.y[idx].to(self.device, non_blocking=True)
        return F.cross_entropy(self.model(xb), yb)

    def epoch(self) -> float:
        """One shuffled epoch of :meth:`loss`, backward, step over batches; seconds."""
        opt, b = self.opt, self.batch_size
        sync(self.device)
        t0 = time.perf_counter()
        perm = torch.randperm(len(self.y), generator=self.g)
        for i in range(0, len(perm) - b + 1 if self.whole_batches else len(perm), b):
            loss = self.loss(perm[i : i + b])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        sync(self.device)
        return time.perf_counter() - t0


class Interleave(pl.Callback):
    """After each fit epoch (and after the epoch timer), run one raw epoch: the two sides then
    alternate epoch by epoch under the same machine load."""

    def __init__(self, raw: RawLoop):
        self.raw = raw
        self.times: list[float] = []

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        with torch.enable_grad():
            self.times.append(self.raw.epoch())


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--epochs", type=int, default=8, help="timed epochs per side and round")
    ap.add_argument("--rounds", type=int, default=1, help="fits (each with its raw loop)")
    ap.add_argument("--data-dir", default=str(ROOT / "data_cache"), help="synthetic catalog cache")
    add_common_args(ap)
    a = ap.parse_args(argv)
    threads = apply_threads(a.threads)
    quiet_lightning()
    data_args, model_args = demo_settings(a.full)
    dm = make_datamodule(data_args, a.data_dir)
    n_classes = dm.num_classes
    x, y = in_memory(dm)
    n = len(y)
    fit_t, raw_t = [], []
    with tempfile.TemporaryDirectory(prefix="fit_throughput_") as tmp:
        for _ in range(a.rounds):
            torch.manual_seed(0)
            raw = RawLoop(make_model(model_args, n_classes), x, y, dm.batch_size, a.device)
            pl.seed_everything(0, verbose=False)
            dm_fit = make_datamodule(data_args, a.data_dir)
            inter = Interleave(raw)
            fit_t += timed_fit(
                dm_fit, make_model(model_args, n_classes), a.epochs, a.device, tmp, after=[inter]
            )
            raw_t += inter.times[1:]
    # paired epochs: the ratio of total times, and the median of the per-epoch ratios
    raw_sps, fit_sps = n * len(raw_t) / sum(raw_t), n * len(fit_t) / sum(fit_t)
    ratio = fit_sps / raw_sps
    median_ratio = statistics.median(r / f for r, f in zip(raw_t, fit_t))
    print(
        f"{model_args['arch']} {data_args['loader']['image_size']} px, {n} training photos, batch "
        f"{dm.batch_size}: raw loop {raw_sps:.1f} samples/s, Lightning fit {fit_sps:.1f} "
        f"samples/s, ratio fit/raw = {ratio:.3f} (goal >= 0.9)"
    )
    details = {
        "arch": model_args["arch"],
        "preset": model_args.get("preset"),
        "image_size": data_args["loader"]["image_size"],
        "photo_size": data_args["reader"]["image_size"],
        "batch_size": dm.batch_size,
        "train_samples": n,
        "epochs_timed": a.epochs,
        "rounds": a.rounds,
        "fit_samples_per_s": fit_sps,
        "raw_samples_per_s": raw_sps,
        "median_epoch_ratio": median_ratio,
        "fit_epoch_s": fit_t,
        "raw_epoch_s": raw_t,
        "num_workers": dm.num_workers,
        "datamodule_has_cache_dir": hasattr(dm, "cache_dir"),
        "datamodule_cache_dir": str(getattr(dm, "cache_dir", None)),
        "full": a.full,
    }
    result = write_result(
        "fit_throughput_vs_raw_loop",
        ratio,
        "x (Lightning fit samples/s / raw in-memory train-step samples/s)",
        ">= 0.9",
        details,
        argv,
        a.out,
        threads=threads,
        device=a.device,
    )
    return result


if __name__ == "__main__":
    main()
