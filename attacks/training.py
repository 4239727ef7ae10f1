"""Model-side helpers for the attacks: open a finished run, rebuild its target, train extra
classifiers (shadow models, ensemble members) by the same recipe, and extract signals.

Everything here touches images and weights; the attacks themselves stay pure over signal arrays.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytorch_lightning as pl
import torch
import yaml
from torch.utils.data import DataLoader

from attacks.signals import save_signals
from datamodules.images import ManifestDataset, eval_transform
from datamodules.manifest import read_manifest
from lightning_modules.classifier import WhaleClassifier
from lightning_modules.extraction import attach_metadata, extract_arrays


@dataclass
class RunContext:
    """A finished run folder: its config, manifest, roots and (lazily) its target model."""

    folder: Path
    config: dict
    rows: list[dict]
    header: dict
    device: str = "cpu"
    _model: WhaleClassifier | None = field(default=None, repr=False)

    @classmethod
    def open(cls, folder: str | Path, device: str | None = None) -> RunContext:
        folder = Path(folder)
        if not (folder / "split_manifest.csv").is_file():
            raise FileNotFoundError(
                f"{folder}: not a run folder (no split_manifest.csv). Pass the folder printed by "
                "`python cli.py fit`, e.g. lightning_logs/demo/version_0."
            )
        cfg = yaml.safe_load((folder / "config.yaml").read_text())
        rows, header = read_manifest(folder)
        dev = device or ("cuda" if torch.cuda.is_available() else "cpu")
        return cls(folder, cfg, rows, header, dev)

    @property
    def roots(self) -> dict[str, Path]:
        return {k: Path(v) for k, v in self.header["roots"].items()}

    @property
    def class_names(self) -> list[str]:
        return list(self.header["class_names"])

    @property
    def data_args(self) -> dict:
        return dict(self.config["data"]["init_args"])

    @property
    def model_args(self) -> dict:
        return dict(self.config["model"]["init_args"])

    @property
    def image_size(self) -> int:
        return int(self.data_args.get("loader", {}).get("image_size", 224))

    @property
    def checkpoint(self) -> Path:
        return self.folder / "checkpoints" / "last.ckpt"

    def model(self) -> WhaleClassifier:
        """The target classifier with the run's last weights, in eval mode on ``device``."""
        if self._model is None:
            self._model = load_classifier(self.checkpoint, self.model_args, len(self.class_names))
            self._model.to(self.device).eval()
        return self._model

    def loader(self, rows: list[dict], batch_size: int = 64) -> DataLoader:
        ds = ManifestDataset(rows, self.roots, eval_transform(self.image_size))
        return DataLoader(ds, batch_size=batch_size, shuffle=False, num_workers=0)

    def images(self, rows: list[dict]) -> torch.Tensor:
        """Eval-transformed images (N, 3, S, S) float32 of ``rows``."""
        xs = [x for x, _, _ in self.loader(rows)]
        return torch.cat(xs) if xs else torch.zeros(0, 3, self.image_size, self.image_size)


#: init_args that decide the network's layers (and so the checkpoint's keys)
ARCH_KEYS = (
    "arch",
    "preset",
    "batchnorm",
    "dropout",
    "weight_decay",
    "channels_last",
    "dropout_defense",
    "dropout_defense_p",
)


def model_kwargs(args: dict, num_classes: int, *, with_dp: bool = False) -> dict:
    """Constructor kwargs of :class:`WhaleClassifier` from a saved config's ``init_args``.

    ``with_dp`` also passes the run's ``dp`` block: a DP run's network is Opacus-wrapped (BatchNorm
    replaced, ``net._module.*`` keys), so its checkpoint loads only into the same wrapping. Models
    the attacks train themselves (shadows, ensemble subsets) are trained without DP.
    """
    keys = ARCH_KEYS + (("dp",) if with_dp else ())
    return {"num_classes": num_classes, **{k: args[k] for k in keys if args.get(k) is not None}}


def load_classifier(ckpt: Path, args: dict, num_classes: int) -> WhaleClassifier:
    """Rebuild the classifier (its DP wrapping included) and load ``ckpt`` with
    ``torch.load(weights_only=True)``."""
    model = WhaleClassifier(**model_kwargs(args, num_classes, with_dp=True))
    state = torch.load(ckpt, map_location="cpu", weights_only=True)
    model.load_state_dict(state["state_dict"] if "state_dict" in state else state)
    return model


def optimizer_factory(args: dict):
    """Optimizer factory from a saved ``optimizer`` config (class_path/init_args) or SGD."""
    opt = args.get("optimizer")
    if not opt:
        return None
    module, name = opt["class_path"].rsplit(".", 1)
    cls = getattr(__import__(module, fromlist=[name]), name)
    kw = {k: v for k, v in (opt.get("init_args") or {}).items() if k != "weight_decay"}

    def make(params):
        return cls(params, **kw)

    return make


def relabel(rows: list[dict], identities: list[str]) -> list[dict]:
    """Copies of ``rows`` with ``label`` = position of the identity in ``identities`` (else -1)."""
    pos = {name: i for i, name in enumerate(identities)}
    return [{**r, "label": pos.get(r["identity"], -1)} for r in rows]


def train_classifier(
    train_rows: list[dict],
    roots: dict[str, Path],
    identities: list[str],
    model_args: dict,
    *,
    image_size: int,
    epochs: int,
    batch_size: int = 32,
    seed: int = 0,
    device: str = "cpu",
) -> tuple[WhaleClassifier, float]:
    """Train a fresh :class:`WhaleClassifier` over ``identities`` on ``train_rows`` by the run's
    recipe (arch, preset, optimizer). Returns ``(model in eval mode, seconds)``."""
    pl.seed_everything(seed, workers=True, verbose=False)
    rows = relabel(train_rows, identities)
    model = WhaleClassifier(
        **model_kwargs(model_args, len(identities)), optimizer=optimizer_factory(model_args)
    )
    loader = DataLoader(
        ManifestDataset(rows, roots, eval_transform(image_size)),  # no augmentation
        batch_size=batch_size,
        shuffle=True,
        num_workers=0,
    )
    trainer = pl.Trainer(
        max_epochs=epochs,
        accelerator="gpu" if device.startswith("cuda") else "cpu",
        devices=1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
    )
    t0 = time.perf_counter()
    trainer.fit(model, train_dataloaders=loader)
    return model.to(device).eval(), time.perf_counter() - t0


def extract_signals(
    model: torch.nn.Module,
    rows: list[dict],
    roots: dict[str, Path],
    image_size: int,
    *,
    device: str = "cpu",
    embed: bool = True,
    path: Path | None = None,
) -> dict[str, np.ndarray]:
    """Signal arrays (see :mod:`attacks.signals`) of ``model`` over ``rows``, with embeddings.

    ``rows`` must carry ``label`` in this model's label space (-1 for individuals it never saw).
    Saved to ``path`` when given.
    """
    ds = ManifestDataset(rows, roots, eval_transform(image_size))
    loader = DataLoader(ds, batch_size=64, shuffle=False, num_workers=0)
    arrays = extract_arrays(
        model, loader, device, embed=getattr(model, "embed", None) if embed else None
    )
    signals = attach_metadata(arrays, rows)
    if path is not None:
        save_signals(path, signals)
    return signals
