"""The whale identity datamodule: catalog -> identity-disjoint split -> loaders and probe sets."""

from __future__ import annotations

import os
import platform
from pathlib import Path

import pytorch_lightning as pl
import torch
from pytorch_lightning.utilities import rank_zero_info, rank_zero_warn
from torch.utils.data import DataLoader

from datamodules.catalogs import FORMATS, Catalog, read_catalog
from datamodules.errors import DataError
from datamodules.image_cache import DecodeSettings, FileHasher, ImageCache
from datamodules.images import (
    ManifestDataset,
    augment_batch,
    augment_transform,
    normalize_batch,
    normalize_transform,
)
from datamodules.splits import (
    SplitSettings,
    plan_splits,
    verify_manifest,
    write_manifest,
)
from datamodules.synthetic_whales import SyntheticWhales, generate


def default_workers() -> int:
    """Loader workers: none on a 2-core box (spawning costs more than decoding tiny images)."""
    cpus = os.cpu_count() or 1
    return 0 if cpus <= 2 else min(8, cpus - 1)


class WhaleDataModule(pl.LightningDataModule):
    """Identity-disjoint photo-ID splits for membership inference (whale paper, Table 3).

    Args:
        root: catalog folder. For ``format=synthetic`` the generated catalog is written there
            (default ``data_cache/<settings key>``).
        format: ``folder`` (GREMM), ``noaa`` (Where's Whale-do ``metadata.csv``), ``happywhale``
            (``train.csv``) or ``synthetic`` (generated, then read with the folder reader).
        viewpoint: NOAA filter, e.g. ``top``.
        species: Happywhale filter, e.g. ``humpback_whale``.
        group_by: keep every photo of a group on one side: ``encounter`` (reader's own group),
            or a column such as ``encounter_id`` or ``date``. ``None`` splits by photo.
        min_images: individuals with fewer photos are left out (listed in the manifest header).
        min_groups: with ``group_by``, individuals with fewer groups are left out (default 3).
        identity_fractions: shares of ID1 / ID2 / ID3 among eligible individuals.
        photo_fractions: shares of train / val / test among each ID1 individual's photos.
        images_per_identity: balance each individual to this many photos with the paper's
            augmentation (rotations, brightness, flip); ``None`` is off.
        split_protocol: ``photo`` (split originals, then augment), ``group`` (split whole groups,
            then augment) or ``paper`` (augment, then split by picture). ``None``: ``group`` when
            ``group_by`` is set, else ``photo``.
        seed: split seed (independent of the training seed).
        nonmember_format, nonmember_root, nonmember_viewpoint, nonmember_species: an optional
            second catalog whose individuals serve as non-members (paper, Figure 7).
        nonmember_use: which non-member role the second catalog fills: ``attack`` (ID2) or ``eval``.
        balance_nonmembers: a non-member individual contributes as many photos (seeded choice)
            as a target individual contributes to val, as in the paper's Table 3.
        synthetic: generator settings for ``format=synthetic``.
        image_size: square input size in pixels.
        batch_size: training batch size; probe loaders use ``eval_batch_size``.
        num_workers: loader workers (``None``: 0 on <=2 cores, else min(8, cores - 1)). With
            workers, they persist across epochs and each keeps 4 training batches (2 evaluation
            batches) in flight. Memory is pinned only when the trainer runs on CUDA.
        train_augment: random crop/flip/colour jitter during training (off in the paper presets),
            applied to the resized (cached) image.
        augment_on_device: with ``train_augment``, do the random crop/flip/jitter batch-wise on
            the batch's device (the GPU when training there) in ``on_after_batch_transfer``; the
            training loader then ships uint8 images (a quarter of the bytes). Decoding and resizing
            stay in the workers and the cache; only the cheap random part moves. ``false``: per
            sample in the loader workers, on the CPU.
        verify_images: decode-check every image and hash it for the byte-identity leak check.
            Off, each image is hashed on first use instead (for the cache key).
        cache_dir: folder of the decoded-image cache (``null``: off). Each photo is decoded,
            manifest-augmented and resized once and kept as uint8, keyed by the sha256 of the
            file, its manifest augmentation and the resize settings (image size, interpolation,
            antialias, format version): a changed photo or setting gets a new entry, and stale
            entries are never read (delete the folder, or ``datamodules.image_cache.prune``, to
            reclaim space). Safe to share between runs, loader workers and DDP ranks.
    """

    def __init__(
        self,
        root: str | None = None,
        format: str = "folder",
        viewpoint: str | None = None,
        species: str | None = None,
        group_by: str | None = None,
        min_images: int = 3,
        min_groups: int | None = None,
        identity_fractions: tuple[float, float, float] = (1 / 3, 1 / 3, 1 / 3),
        photo_fractions: tuple[float, float, float] = (1 / 3, 1 / 3, 1 / 3),
        images_per_identity: int | None = None,
        split_protocol: str | None = None,
        seed: int = 0,
        nonmember_format: str | None = None,
        nonmember_root: str | None = None,
        nonmember_viewpoint: str | None = None,
        nonmember_species: str | None = None,
        nonmember_use: str = "attack",
        balance_nonmembers: bool = True,
        synthetic: SyntheticWhales | None = None,
        image_size: int = 224,
        batch_size: int = 32,
        eval_batch_size: int | None = None,
        num_workers: int | None = None,
        train_augment: bool = False,
        verify_images: bool = True,
        cache_dir: str | None = "data_cache/decoded",
        augment_on_device: bool = True,
    ):
        super().__init__()
        if format not in FORMATS:
            raise DataError(f"data.format={format!r}: choose one of {list(FORMATS)}.")
        self.save_hyperparameters()
        self.fmt = format
        self.synthetic = synthetic or SyntheticWhales()
        self.root = root
        self.settings = SplitSettings(
            seed=seed,
            min_images=min_images,
            min_groups=min_groups,
            identity_fractions=tuple(identity_fractions),
            photo_fractions=tuple(photo_fractions),
            group_by=group_by,
            images_per_identity=images_per_identity,
            split_protocol=split_protocol or ("group" if group_by else "photo"),
            nonmember_use=nonmember_use,
            balance_nonmembers=balance_nonmembers,
        )
        self.image_size = image_size
        self.batch_size = batch_size
        self.eval_batch_size = eval_batch_size or max(batch_size, 64)
        self.num_workers = default_workers() if num_workers is None else num_workers
        self.train_augment = train_augment
        self.verify_images = verify_images
        self.cache_dir = cache_dir
        self.augment_on_device = augment_on_device
        self._hasher = FileHasher()  # verify() fills it; the loaders reuse its hashes
        self._rows: list[dict] | None = None
        self._info: dict = {}
        self._roots: dict[str, Path] = {}
        self._verified = False
        self.leak_counts: dict = {}

    # ---- planning -------------------------------------------------------------------------
    def _catalogs(self) -> tuple[Catalog, Catalog | None]:
        hp = self.hparams
        root = self.root
        if self.fmt == "synthetic":
            root = root or str(Path("data_cache") / self.synthetic.key())
            generate(root, self.synthetic)
        main = read_catalog(self.fmt, root, viewpoint=hp.viewpoint, species=hp.species)
        external = None
        if hp.nonmember_root or hp.nonmember_format:
            if not (hp.nonmember_root and hp.nonmember_format):
                raise DataError(
                    "data.nonmember_root and data.nonmember_format go together: set both to use a "
                    "second catalog for non-members, or neither."
                )
            try:
                external = read_catalog(
                    hp.nonmember_format,
                    hp.nonmember_root,
                    viewpoint=hp.nonmember_viewpoint,
                    species=hp.nonmember_species,
                )
            except DataError as exc:
                raise DataError(f"data.nonmember_root: {exc}") from exc
            external.name = "external"
        return main, external

    def plan(self) -> list[dict]:
        """Read the catalog(s) and plan the split once; returns manifest rows."""
        if self._rows is None:
            main, external = self._catalogs()
            self._roots = {"main": main.root.resolve()}
            if external is not None:
                self._roots["external"] = external.root.resolve()
            self._rows, self._info = plan_splits(main, self.settings, external)
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
        if self.verify_images:
            hashes = {}
            for key in sorted({(r["catalog"], r["file"]) for r in rows}):
                path = self._roots[key[0]] / key[1]
                hashes[key] = self._hasher(path) if path.is_file() else None
                if hashes[key] is None:
                    raise DataError(f"{path}: image listed in the split but missing on disk.")
                _check_decodes(path)
        self.leak_counts = verify_manifest(rows, hashes, protocol=self.settings.split_protocol)
        self._verified = True
        return self.leak_counts

    def manifest_header(self) -> dict:
        return {
            "seed": self.settings.seed,
            "settings": self.settings.__dict__,
            "format": self.fmt,
            "roots": {k: str(v) for k, v in self._roots.items()},
            "synthetic": self.synthetic.__dict__ if self.fmt == "synthetic" else None,
            **self._info,
            **self.leak_counts,
            "versions": environment_versions(),
        }

    def write_manifest(self, folder: str | Path) -> Path:
        """Verify, then save ``split_manifest.{csv,json}`` into ``folder``."""
        if not self._verified:
            self.verify()
        return write_manifest(Path(folder), self.plan(), self.manifest_header())

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
                f"{len(excluded)} individuals left out by data.min_images/min_groups; they are "
                "listed in split_manifest.json under excluded_individuals."
            )
        n = self._info["n_rows"]
        rank_zero_info(
            f"Whale split: {len(self.class_names)} target individuals; rows {n}; "
            f"{len(rows)} in all."
        )

    @property
    def device_augment(self) -> bool:
        """Whether the training batches are augmented on their device (see ``augment_on_device``)."""
        return self.train_augment and self.augment_on_device

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
        settings = DecodeSettings(self.image_size)
        cache = ImageCache(self.cache_dir, settings) if self.cache_dir else None
        if train and self.device_augment:
            tf = None  # uint8; on_after_batch_transfer augments and normalises
        elif train and self.train_augment:
            tf = augment_transform(self.image_size)
        else:
            tf = normalize_transform()
        return ManifestDataset(
            rows, self.roots, tf, image_size=self.image_size, cache=cache, hasher=self._hasher
        )

    def _loader(self, rows: list[dict], *, train: bool = False) -> DataLoader:
        workers = self.num_workers
        return DataLoader(
            self.dataset(rows, train=train),
            batch_size=self.batch_size if train else self.eval_batch_size,
            shuffle=train,
            drop_last=False,
            num_workers=workers,
            pin_memory=self.pin_memory(),
            persistent_workers=workers > 0,
            prefetch_factor=(4 if train else 2) if workers > 0 else None,
            # evaluation loaders draw their worker seed from a generator of their own, so how
            # often they run (e.g. leakage.every_n_epochs) never shifts the training shuffles
            generator=None if train else torch.Generator().manual_seed(self.settings.seed),
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

    def probe_rows(self) -> list[dict]:
        """Rows the leakage monitor scores: every manifest row (train, attack and eval sets)."""
        return self.rows()

    def probe_loader(self, rows: list[dict]) -> DataLoader:
        """Deterministic, un-augmented loader over ``rows`` (no shuffling, no workers' state)."""
        return self._loader(rows)


def _check_decodes(path: Path) -> None:
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            im.verify()
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise DataError(
            f"{path}: unreadable or corrupt image ({exc.__class__.__name__}: {exc}). Replace the "
            "file or remove it from the catalog."
        ) from exc


def environment_versions() -> dict:
    """Versions a result depends on."""
    import pytorch_lightning
    import torchvision

    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torchvision": torchvision.__version__,
        "pytorch_lightning": pytorch_lightning.__version__,
        "platform": platform.platform(),
    }
