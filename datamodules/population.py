"""A population catalog as the training set of a re-identification embedding.

Every individual of the catalog (``min_photos`` or more photos) is a class; the embedding learns
from them what tells individuals apart, and is then used on other whales (a catalog of known
individuals, new photos). ``holdout_individuals`` whales are held apart, seeded: they never train
and serve as the reference population that known/new scores are calibrated against, and as the
validation set (retrieval across encounters).

Photos are served as fixed views (:mod:`datamodules.views`). When the model freezes its first
stages it hands their function to :meth:`PopulationDataModule.attach_frozen`; the loaders then
serve the frozen-stage activations of every view (float16, computed once and cached on disk,
keyed by the frozen weights, the input size and the photos) instead of images, so that an epoch
runs only the stages that train.
"""

from __future__ import annotations

import csv
import io
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytorch_lightning as pl
import torch
from pytorch_lightning.utilities import rank_zero_info
from torch.utils.data import DataLoader, TensorDataset

from datamodules.catalogs import CatalogReader
from datamodules.epoch_shuffle import EpochShuffle
from datamodules.errors import DataError
from datamodules.hashing import FileHasher
from datamodules.images import normalize_batch
from datamodules.manifest import _atomic_write
from datamodules.views import ArrayCache, ViewSettings, decode_views, key_of

MANIFEST = "population_manifest.csv"
COLUMNS = ("file", "identity", "encounter", "role", "label")


class PopulationDataModule(pl.LightningDataModule):
    """Individuals of ``root`` as classes, minus ``holdout_individuals`` reference whales.

    Args:
        reader: catalog reader (``NoaaReader`` with ``viewpoint: top`` for top-view belugas).
        root: the population catalog folder.
        views: input size and the fixed views per photo (:class:`ViewSettings`).
        min_photos: individuals with fewer photos are left out of training.
        min_encounters: individuals seen in fewer encounters are left out of training (2 keeps
            only whales whose photos teach what stays the same across encounters).
        holdout_individuals: whales held apart (seeded) as reference and validation whales.
        batch_size: training batch size (views).
        cache_dir: folder of the view and activation caches (``null``: none).
        seed: seed of the holdout draw.
    """

    def __init__(
        self,
        reader: CatalogReader,
        root: str | None = None,
        views: ViewSettings = ViewSettings(),
        min_photos: int = 1,
        min_encounters: int = 1,
        holdout_individuals: int = 0,
        batch_size: int = 64,
        cache_dir: str | None = "data_cache/views",
        seed: int = 0,
    ):
        super().__init__()
        views.check()
        if batch_size < 2:
            raise DataError(f"data.batch_size={batch_size}: give at least 2 (batch norm).")
        self.save_hyperparameters()
        self.reader, self.root, self.views = reader, root, views
        self.min_photos, self.holdout = min_photos, holdout_individuals
        self.min_encounters = min_encounters
        self.batch_size, self.seed = batch_size, seed
        self.cache = ArrayCache(cache_dir)
        self._rows: list[dict] | None = None
        self._frozen: tuple[Callable, str] | None = None
        self._arrays: dict[str, torch.Tensor] = {}

    # ---- planning --------------------------------------------------------------------------
    def plan(self) -> list[dict]:
        """Manifest rows (file, identity, encounter, role train | reference, label)."""
        if self._rows is not None:
            return self._rows
        catalog = self.reader.read(self.root)
        self.catalog_root = catalog.root.resolve()
        counts = catalog.identities()
        names = sorted(counts)
        rng = np.random.default_rng(self.seed)
        if self.holdout >= len(names):
            raise DataError(
                f"data.holdout_individuals={self.holdout}: {self.root} has {len(names)} "
                "individuals; hold apart fewer."
            )
        held = set(rng.choice(names, size=self.holdout, replace=False).tolist())
        encounters: dict[str, set] = {}
        for r in catalog.records:
            encounters.setdefault(r.identity, set()).add(r.group or r.file)
        train = sorted(
            n
            for n in names
            if n not in held
            and counts[n] >= self.min_photos
            and len(encounters[n]) >= self.min_encounters
        )
        if len(train) < 2:
            raise DataError(f"{self.root}: fewer than 2 individuals to train on; add photos.")
        label = {n: i for i, n in enumerate(train)}
        rows = []
        for r in catalog.records:
            role = "reference" if r.identity in held else "train" if r.identity in label else None
            if role is not None:
                enc = f"{r.identity}/{r.group or r.file}"
                rows.append(
                    {
                        "file": r.file,
                        "identity": r.identity,
                        "encounter": enc,
                        "role": role,
                        "label": label.get(r.identity, -1),
                    }
                )
        self._rows, self.class_names = rows, train
        return rows

    @property
    def num_classes(self) -> int:
        self.plan()
        return len(self.class_names)

    def rows(self, role: str) -> list[dict]:
        return [r for r in self.plan() if r["role"] == role]

    def write_manifest(self, folder: str | Path) -> Path:
        """``population_manifest.csv`` in ``folder`` (a resumed run must find the same one)."""
        buf = io.StringIO()
        writer = csv.DictWriter(buf, fieldnames=COLUMNS, lineterminator="\n")
        writer.writeheader()
        writer.writerows(self.plan())
        path = Path(folder) / MANIFEST
        if path.exists() and path.read_text() != buf.getvalue():
            raise DataError(
                f"{path}: this run folder holds another population split. Resume with the same "
                "data settings, or start a new run."
            )
        path.parent.mkdir(parents=True, exist_ok=True)
        _atomic_write(path, buf.getvalue())
        return path

    # ---- views and frozen activations ------------------------------------------------------
    def attach_frozen(self, fn: Callable[[torch.Tensor], torch.Tensor], key: str) -> None:
        """Serve ``fn(normalised views)`` (the model's frozen stages, named by ``key``)."""
        self._frozen = (fn, key)
        self._arrays.clear()

    def view_array(self, rows: list[dict]) -> tuple[np.ndarray, str]:
        """uint8 ``(N, V, 3, H, W)`` views of ``rows`` and their cache key."""
        hasher = FileHasher()
        paths = [self.catalog_root / r["file"] for r in rows]
        key = key_of("views", self.views, [hasher(p) for p in paths])
        return self.cache.get(key, lambda: decode_views(paths, self.views)), key

    def inputs(self, rows: list[dict], views: int | None = None) -> torch.Tensor:
        """What the model takes for ``rows``: frozen activations (N*V', C, h, w) float16 when a
        frozen function is attached, else normalised views (N*V', 3, H, W); V' = ``views``."""
        arr, key = self.view_array(rows)
        arr = arr[:, : views or arr.shape[1]]
        flat = torch.from_numpy(np.ascontiguousarray(arr)).flatten(0, 1)
        if self._frozen is None:
            return normalize_batch(flat)
        fn, fkey = self._frozen
        akey = key_of("frozen", fkey, key, arr.shape[1])

        def compute() -> np.ndarray:
            t0 = time.perf_counter()
            out = [fn(normalize_batch(flat[i : i + 64])).half() for i in range(0, len(flat), 64)]
            rank_zero_info(
                f"Frozen-stage activations of {len(flat)} views: {time.perf_counter() - t0:.0f} s "
                "(cached)"
            )
            return torch.cat(out).numpy()

        return torch.from_numpy(self.cache.get(akey, compute))

    # ---- Lightning hooks -------------------------------------------------------------------
    def setup(self, stage: str | None = None) -> None:
        self.plan()
        trainer = getattr(self, "trainer", None)
        if trainer is not None and trainer.is_global_zero and trainer.log_dir:
            self.write_manifest(trainer.log_dir)

    def train_dataloader(self) -> DataLoader:
        rows = self.rows("train")
        x = self.inputs(rows)
        v = len(x) // len(rows)
        y = torch.tensor([r["label"] for r in rows]).repeat_interleave(v)
        gen = torch.Generator().manual_seed(self.seed)
        # a per-epoch seeded order that a resumed run re-enters mid-epoch (datamodules.epoch_shuffle)
        order = EpochShuffle(len(y), self.seed, self.batch_size, gen)
        return DataLoader(
            TensorDataset(x, y, torch.arange(len(y))),
            batch_size=self.batch_size,
            sampler=order,
            drop_last=True,
            generator=gen,
        )

    def val_dataloader(self) -> DataLoader | list:
        rows = self.rows("reference")
        if not rows:
            return []
        x = self.inputs(rows, views=1)
        return DataLoader(TensorDataset(x, torch.arange(len(rows))), batch_size=256)
