"""The whale identity datamodule: catalog -> identity-disjoint split -> loaders and signal rows."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytorch_lightning as pl
import torch
from pytorch_lightning.utilities import rank_zero_info, rank_zero_warn
from torch.utils.data import DataLoader

from datamodules.catalogs import Catalog, CatalogReader
from datamodules.epoch_shuffle import EpochShuffle
from datamodules.errors import DataError
from datamodules.identity_batches import IndividualEncounterSampler
from datamodules.image_cache import DecodeSettings, FileHasher, ImageCache
from datamodules.image_check import POLICIES, check_images, write_skipped
from datamodules.images import (
    RESIZE_MODES,
    ManifestDataset,
    augment_batch,
    augment_transform,
    normalize_batch,
    normalize_transform,
)
from datamodules.loader_settings import LoaderSettings
from datamodules.machine import default_workers, environment_versions
from datamodules.manifest import write_manifest
from datamodules.split_leak_checks import verify_manifest
from datamodules.splits import COLUMNS, SplitSettings, plan_splits


class WhaleDataModule(pl.LightningDataModule):
    """Identity-disjoint photo-ID splits for membership inference (whale paper, Table 3).

    Args:
        reader: how to read ``root``: :class:`~datamodules.catalogs.FolderReader` (GREMM),
            ``NoaaReader`` (Where's Whale-do ``metadata.csv``, optional ``viewpoint``),
            ``HappywhaleReader`` (``train.csv``, optional ``species``) or ``SyntheticWhalesReader``
            (the generated catalog; its init_args are the generator settings).
        root: catalog folder (``--data.root``). For the synthetic reader the generated catalog is
            written there (default ``data_cache/<settings key>``).
        split: seed, eligibility, fractions, ``group_by``, balancing and protocol of the split
            (:class:`~datamodules.splits.SplitSettings`; the seed is independent of the training
            seed). ``split_protocol`` None: ``group`` when ``group_by`` is set, else ``photo``.
        loader: image size, batch sizes, workers, augmentation and the decoded-image cache
            (:class:`LoaderSettings`).
        nonmember_reader, nonmember_root: an optional second catalog whose individuals serve as
            non-members (paper, Figure 7); ``split.nonmember_use`` says which role it fills.
    """

    def __init__(
        self,
        reader: CatalogReader,
        root: str | None = None,
        split: SplitSettings = SplitSettings(),
        loader: LoaderSettings = LoaderSettings(),
        nonmember_reader: CatalogReader | None = None,
        nonmember_root: str | None = None,
    ):
        super().__init__()
        for key, r in (("data.reader", reader), ("data.nonmember_reader", nonmember_reader)):
            if r is not None and not isinstance(r, CatalogReader):
                raise DataError(
                    f"{key}={r!r}: give a catalog reader, e.g. {{class_path: "
                    "datamodules.catalogs.FolderReader}, NoaaReader, HappywhaleReader or "
                    "SyntheticWhalesReader."
                )
        if (nonmember_reader is None) != (nonmember_root is None):
            raise DataError(
                "data.nonmember_root and data.nonmember_reader go together: set both to use a "
                "second catalog for non-members, or neither."
            )
        self.save_hyperparameters()
        self.reader, self.root = reader, root
        self.nonmember_reader, self.nonmember_root = nonmember_reader, nonmember_root
        self.settings = replace(
            split,
            identity_fractions=tuple(split.identity_fractions),
            photo_fractions=tuple(split.photo_fractions),
            split_protocol=split.split_protocol or ("group" if split.group_by else "photo"),
        )
        if loader.sampler not in ("shuffle", "individuals"):
            raise DataError(
                f"data.loader.sampler={loader.sampler!r}: choose 'shuffle' or 'individuals'."
            )
        if loader.resize not in RESIZE_MODES or not 0 <= int(loader.pad_value) <= 255:
            raise DataError(
                f"data.loader.resize={loader.resize!r}, pad_value={loader.pad_value!r}: choose "
                f"resize from {list(RESIZE_MODES)} and a pad_value in 0-255."
            )
        if loader.unreadable not in POLICIES:
            raise DataError(
                f"data.loader.unreadable={loader.unreadable!r}: choose one of {list(POLICIES)}."
            )
        self.loader = loader
        self.image_size = loader.image_size
        self.batch_size = loader.batch_size
        self.eval_batch_size = loader.eval_batch_size or max(loader.batch_size, 64)
        self.num_workers = default_workers() if loader.num_workers is None else loader.num_workers
        self._hasher = FileHasher()  # verify() fills it; the loaders reuse its hashes
        self._rows: list[dict] | None = None
        self._info: dict = {}
        self._roots: dict[str, Path] = {}
        self._verified = False
        self._skipped: list[dict] = []  # unreadable photos left out (policy ``skip``)
        self.leak_counts: dict = {}

    # ---- planning -------------------------------------------------------------------------
    def _catalogs(self) -> tuple[Catalog, Catalog | None]:
        main = self.reader.read(self.root)
        if self.nonmember_reader is None:
            return main, None
        try:
            external = self.nonmember_reader.read(self.nonmember_root)
        except DataError as exc:
            raise DataError(f"data.nonmember_root: {exc}") from exc
        external.name = "external"
        return main, external

    def _drop_unreadable(self, catalogs: list[Catalog | None]) -> list[Catalog | None]:
        """Policy ``skip``: decode every photo of ``catalogs`` (one check, one warning); return
        copies without the unreadable ones, which are listed in ``self._skipped``."""
        paths = [c.root / r.file for c in catalogs if c is not None for r in c.records]
        _, bad = check_images(paths, "skip", hasher=self._hasher, cache_root=self.loader.cache_dir)
        out = []
        for c in catalogs:
            if c is not None:
                for r in c.records:
                    if (reason := bad.get(c.root / r.file)) is not None:
                        self._skipped.append({"catalog": c.name, "file": r.file, "reason": reason})
                ok = [r for r in c.records if c.root / r.file not in bad]
                c = replace(c, records=ok)
            out.append(c)
        return out

    def plan(self) -> list[dict]:
        """Read the catalog(s) and plan the split once; returns manifest rows."""
        if self._rows is None:
            main, external = self._catalogs()
            if self.loader.unreadable == "skip":
                main, external = self._drop_unreadable([main, external])
            self._roots = {"main": main.root.resolve()}
            if external is not None:
                self._roots["external"] = external.root.resolve()
            self._rows, self._info = plan_splits(main, self.settings, external)
            if self.loader.unreadable == "skip":
                self._info["skipped_images"] = len(self._skipped)
        return self._rows

    @property
    def num_classes(self) -> int:
        """Number of ID1 (target) individuals: the classifier's output size."""
        self.plan()
        return len(self._info["class_names"])

    @property
    def class_names(self) -> list[str]:
        """ID1 individual names, index = class label."""
        self.plan()
        return list(self._info["class_names"])

    @property
    def roots(self) -> dict[str, Path]:
        self.plan()
        return dict(self._roots)

    def rows(self, *splits: str) -> list[dict]:
        """Manifest rows of the given splits (all rows when none given), in manifest order."""
        rows = self.plan()
        return [r for r in rows if not splits or r["split"] in splits]

    def verify(self) -> dict:
        """Decode-check and hash every image, then run the leak checks (fails loudly)."""
        rows = self.plan()
        hashes = None
        if self.loader.verify_images:
            keys = sorted({(r["catalog"], r["file"]) for r in rows})
            paths = [self._roots[c] / f for c, f in keys]
            for path in paths:
                if not path.is_file():
                    raise DataError(f"{path}: image listed in the split but missing on disk.")
            # every image really decoded (not Image.verify: a truncated JPEG passes that), once
            # per file hash, in threads
            check_images(
                paths,
                "error",
                hasher=self._hasher,
                cache_root=self.loader.cache_dir,
                option="data.loader.unreadable",
            )
            hashes = {key: self._hasher(path) for key, path in zip(keys, paths)}
        self.leak_counts = verify_manifest(rows, hashes, protocol=self.settings.split_protocol)
        self._verified = True
        return self.leak_counts

    def manifest_header(self) -> dict:
        return {
            "seed": self.settings.seed,
            "settings": self.settings.__dict__,
            "format": self.reader.name,
            "roots": {k: str(v) for k, v in self._roots.items()},
            "reader": self.reader.settings(),
            **self._info,
            **self.leak_counts,
            "versions": environment_versions(),
        }

    def write_manifest(self, folder: str | Path) -> Path:
        """Verify, then save ``split_manifest.{csv,json}`` (and ``skipped_images.csv`` when the
        ``skip`` policy left photos out) into ``folder``."""
        if not self._verified:
            self.verify()
        path = write_manifest(Path(folder), self.plan(), self.manifest_header(), COLUMNS)
        if self._skipped:
            write_skipped(Path(folder) / "skipped_images.csv", self._skipped)
        return path

    # ---- Lightning hooks ------------------------------------------------------------------
    def setup(self, stage: str | None = None) -> None:
        rows = self.plan()
        if not self._verified:
            self.verify()
        trainer = getattr(self, "trainer", None)
        log_dir = trainer.log_dir if trainer is not None else None  # collective: all ranks ask
        if log_dir and trainer.is_global_zero and not trainer.fast_dev_run:
            path = self.write_manifest(log_dir)
            rank_zero_info(f"Split manifest: {path}")
        excluded = self._info.get("excluded_individuals", {})
        if excluded:
            rank_zero_warn(
                f"{len(excluded)} individuals left out by data.split.min_images/min_groups; they "
                "are listed in split_manifest.json under excluded_individuals."
            )
        n = self._info["n_rows"]
        rank_zero_info(
            f"Whale split: {len(self.class_names)} target individuals; rows {n}; "
            f"{len(rows)} in all."
        )

    @property
    def device_augment(self) -> bool:
        """Whether the training batches are augmented on their device (see ``augment_on_device``)."""
        return self.loader.train_augment and self.loader.augment_on_device

    def pin_memory(self) -> bool:
        """Pin loader memory only when the attached trainer runs on CUDA."""
        trainer = getattr(self, "trainer", None)
        if trainer is None:
            return False
        from pytorch_lightning.accelerators import CUDAAccelerator

        return isinstance(trainer.accelerator, CUDAAccelerator)

    def dataset(self, rows: list[dict], *, train: bool = False) -> ManifestDataset:
        """``rows`` as served by the loaders: resized through the cache, then normalised (and, for
        training with ``train_augment``, augmented on the CPU, or left uint8 for the device)."""
        settings = self.decode_settings
        cache_dir = self.loader.cache_dir
        cache = ImageCache(cache_dir, settings) if cache_dir else None
        if train and self.device_augment:
            tf = None  # uint8; on_after_batch_transfer augments and normalises
        elif train and self.loader.train_augment:
            tf = augment_transform(self.image_size)
        else:
            tf = normalize_transform()
        return ManifestDataset(
            rows,
            self.roots,
            tf,
            image_size=self.image_size,
            cache=cache,
            hasher=self._hasher,
            decode=settings,
        )

    @property
    def decode_settings(self) -> DecodeSettings:
        """The deterministic resize of every loader (and the image cache's key)."""
        return DecodeSettings(
            self.image_size, resize=self.loader.resize, pad_value=self.loader.pad_value
        )

    def _loader(self, rows: list[dict], *, train: bool = False) -> DataLoader:
        workers = self.num_workers
        dataset = self.dataset(rows, train=train)
        sampler, generator = None, torch.Generator().manual_seed(self.settings.seed)
        trainer = getattr(self, "trainer", None)
        if train and self.loader.sampler == "individuals":
            sampler = IndividualEncounterSampler(rows, self.loader.m_per_individual)
        elif train and (trainer is None or trainer.world_size == 1):
            # a per-epoch seeded order that a resumed run re-enters mid-epoch (see sampling.py)
            sampler = EpochShuffle(len(dataset), self.settings.seed, self.batch_size, generator)
        elif train:
            generator = None  # DDP: Lightning's DistributedSampler shuffles per epoch
        n = len(sampler) if sampler is not None else len(dataset)
        return DataLoader(
            dataset,
            batch_size=self.batch_size if train else self.eval_batch_size,
            shuffle=train and sampler is None,
            sampler=sampler,
            # a last training batch of one photo breaks BatchNorm; it is left out of the epoch
            drop_last=train and n > 1 and n % self.batch_size == 1,
            num_workers=workers,
            pin_memory=self.pin_memory(),
            persistent_workers=workers > 0,
            prefetch_factor=(4 if train else 2) if workers > 0 else None,
            # every loader draws its worker seed from a generator of its own, so how often the
            # evaluation loaders run (e.g. leakage.every_n_epochs) never shifts the shuffles
            generator=generator,
        )

    def on_after_batch_transfer(self, batch, dataloader_idx: int):
        """Turn uint8 training batches into normalised float32 on their device, augmenting them
        while the trainer trains (``train_augment`` with ``augment_on_device``).

        The random crop/flip/jitter is a few elementwise ops and one ``grid_sample`` per batch:
        next to nothing on a GPU, while per-sample in the workers it competes with decoding.
        Random numbers come from torch's global generator of the batch's device, which
        ``seed_everything`` seeds.
        """
        if not isinstance(batch, (list, tuple)) or not batch:
            return batch
        x = batch[0]
        if not isinstance(x, torch.Tensor) or x.dtype != torch.uint8:
            return batch
        trainer = getattr(self, "trainer", None)
        training = trainer is not None and trainer.training
        x = augment_batch(x) if training and self.device_augment else normalize_batch(x)
        return type(batch)([x, *batch[1:]])

    def train_dataloader(self) -> DataLoader:
        return self._loader(self.rows("train"), train=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader(self.rows("val"))

    def test_dataloader(self) -> DataLoader:
        return self._loader(self.rows("test"))

    def predict_dataloader(self) -> DataLoader:
        return self._loader(self.rows())

    def signal_rows(self) -> list[dict]:
        """Rows the leakage monitor scores: every manifest row (train, attack and eval sets)."""
        return self.rows()

    def signal_loader(self, rows: list[dict]) -> DataLoader:
        """Deterministic, un-augmented loader over ``rows`` (no shuffling, no workers' state)."""
        return self._loader(rows)
