"""Detection datamodule: reader -> target/shadow split (manifest, leak checks) -> loaders.

One config trains either the target or the shadow detector (``role``); both runs plan the same
split from the same data settings and seed, so their data are disjoint by construction, and the
audit checks it again across the two run folders.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pytorch_lightning as pl
from pytorch_lightning.utilities import rank_zero_info, rank_zero_warn
from torch.utils.data import DataLoader

from datamodules.detection.dataset import AUGMENTS, DetectionDataset, build_transform, collate
from datamodules.detection.records import DetectionReader, DetRecord, ReadReport
from datamodules.detection.split import (
    COLUMNS,
    DetSplitSettings,
    plan_detection_split,
    reference_training_rows,
)
from datamodules.errors import DataError
from datamodules.image_cache import sha256_file
from datamodules.machine import default_workers, environment_versions
from datamodules.manifest import write_manifest
from datamodules.split_leak_checks import verify_detection_split


@dataclass(frozen=True)
class DetLoaderSettings:
    """Images and loaders of :class:`DetectionDataModule`.

    Args:
        image_size: square input size in pixels (None keeps the file's size; two-stage models
            then resize by their own ``min_size``).
        augment: ``little`` (flip), ``full`` (flip + colour + expand + crop) or ``none``.
        keep_difficult: train on ``difficult`` objects too (evaluation always ignores them).
        batch_size: training batch size.
        eval_batch_size: batch size of the evaluation loaders (None: ``batch_size``).
        num_workers: loader workers (None: 0 on <=2 cores, else min(8, cores - 1)).
        eval_in_set: validate on the in set as well as the out set (train and test mAP).
        max_eval_images: cap on images per validation loader (None: all).
        verify_images: hash every image for the byte-identity leak check.
    """

    image_size: int | None = 300
    augment: str = "full"
    keep_difficult: bool = False
    batch_size: int = 8
    eval_batch_size: int | None = None
    num_workers: int | None = None
    eval_in_set: bool = True
    max_eval_images: int | None = None
    verify_images: bool = True


class DetectionDataModule(pl.LightningDataModule):
    """Detection data for one model of the audit (target or shadow).

    Args:
        reader: how to read ``root``: :class:`~datamodules.detection.voc.VocReader`,
            ``InriaReader``, ``SynthTextReader`` or ``SyntheticVocReader`` (a generated VOC tree;
            its init_args are the generator settings), each with its own options (years, image
            sets, classes, subsets, gt_file, limit, ``on_invalid``).
        root: data root (``--data.root``: the folder holding ``VOCdevkit``, ``INRIAPerson`` or
            ``gt.mat``); for the synthetic reader the tree is written there (default
            ``data_cache/<settings key>``).
        role: which model this run trains: ``target``, ``shadow`` or ``reference`` (a
            reference detector of the calibrated audit: it trains on one half of the target's
            in and out images, :func:`~datamodules.detection.split.reference_training_rows`,
            and is evaluated on the other half).
        reference_index: ``role: reference`` only: which reference (selects the half).
        reference_seed: ``role: reference`` only: seed of the halves.
        split: seed, protocol, fractions and sizes (:class:`~datamodules.detection.split.
            DetSplitSettings`).
        loader: image size, augmentation, batch sizes, workers and evaluation caps
            (:class:`DetLoaderSettings`).
    """

    def __init__(
        self,
        reader: DetectionReader,
        root: str | None = None,
        role: str = "target",
        split: DetSplitSettings = DetSplitSettings(),
        loader: DetLoaderSettings = DetLoaderSettings(),
        reference_index: int = 0,
        reference_seed: int = 0,
    ):
        super().__init__()
        if not isinstance(reader, DetectionReader):
            raise DataError(
                f"data.reader={reader!r}: give a detection reader, e.g. {{class_path: "
                "datamodules.detection.voc.VocReader}, InriaReader, SynthTextReader or "
                "SyntheticVocReader."
            )
        if role not in ("target", "shadow", "reference"):
            raise DataError(f"data.role={role!r}: choose 'target', 'shadow' or 'reference'.")
        if loader.augment not in AUGMENTS:
            raise DataError(
                f"data.loader.augment={loader.augment!r}: choose one of {list(AUGMENTS)}."
            )
        self.save_hyperparameters()
        self.reader, self.root_arg, self.role = reader, root, role
        self.reference_index, self.reference_seed = reference_index, reference_seed
        self.settings = split
        self.loader = loader
        self.batch_size = loader.batch_size
        self.eval_batch_size = loader.eval_batch_size or loader.batch_size
        self.num_workers = default_workers() if loader.num_workers is None else loader.num_workers
        self._records: dict[str, DetRecord] | None = None
        self._rows: list[dict] = []
        self._info: dict = {}
        self._classes: list[str] = []
        self.report = ReadReport()
        self.root = Path(root) if root else None
        self._verified = False

    # ---- reading and planning ------------------------------------------------------------
    @property
    def dataset_name(self) -> str:
        """The reader's name: the manifest's ``dataset`` column."""
        return self.reader.name

    def _read(self) -> list[DetRecord]:
        cat = self.reader.read(self.root_arg)
        self.root, self._classes, self.report = cat.root, cat.classes, cat.report
        if (
            self.report.n_skipped_images
            or self.report.n_skipped_objects
            or self.report.clipped_boxes
        ):
            policy = getattr(self.reader, "on_invalid", "error")
            rank_zero_warn(
                f"{self.reader.name} reader at {cat.root}: {self.report.summary()} "
                f"(data.reader.on_invalid={policy})"
            )
        return cat.records

    def plan(self) -> list[dict]:
        """Read the data and plan the split once; returns all manifest rows."""
        if self._records is None:
            recs = self._read()
            self._rows, self._info = plan_detection_split(recs, self.settings, self.reader.name)
            self._records = {r.file: r for r in recs}
        return self._rows

    @property
    def num_classes(self) -> int:
        """Detector output size: foreground classes + 1 (index 0 is background)."""
        self.plan()
        return len(self._classes) + 1

    @property
    def class_names(self) -> list[str]:
        self.plan()
        return list(self._classes)

    def rows(self, side: str | None = None, split: str | None = None) -> list[dict]:
        """Manifest rows of a bucket, in manifest order (``side`` None = target and shadow)."""
        return [
            r
            for r in self.plan()
            if (side is None or r["side"] == side) and (split is None or r["split"] == split)
        ]

    def signal_rows(self) -> list[dict]:
        """Rows whose predictions form this run's signal file: the role's in and out sets (a
        reference: the target's images)."""
        return self.rows("target" if self.role == "reference" else self.role)

    def training_rows(self) -> list[dict]:
        """The rows this run trains on: the role's in set, or a reference's half of the target's
        images."""
        if self.role != "reference":
            return self.rows(self.role, "in")
        return reference_training_rows(
            self.rows("target"), self.reference_index, self.reference_seed
        )

    def held_out_rows(self) -> list[dict]:
        """The role's out set (a reference: the target's images it does not train on)."""
        if self.role != "reference":
            return self.rows(self.role, "out")
        seen = {r["sample_id"] for r in self.training_rows()}
        return [r for r in self.rows("target") if r["sample_id"] not in seen]

    def ground_truth(self, rows: list[dict]) -> dict[str, np.ndarray]:
        """Ground truth of ``rows`` for the calibrated detector signal: ``gt_boxes`` f32
        (N, G, 4) corners normalised by the image's width and height, ``gt_labels`` int64 (N, G)
        (1-based, -1 = padding), ``n_gt`` int64 (N,). ``difficult`` objects are left out unless
        an image has no other."""
        self.plan()
        index = {n: k + 1 for k, n in enumerate(self._classes)}
        recs = [self._records[r["file"]] for r in rows]
        keep = [~np.asarray(r.difficult, bool) for r in recs]
        keep = [k if k.any() else np.ones_like(k) for k in keep]
        g = max([int(k.sum()) for k in keep], default=0)
        boxes = np.zeros((len(recs), max(g, 1), 4), np.float32)
        labels = np.full((len(recs), max(g, 1)), -1, np.int64)
        for i, (rec, k) in enumerate(zip(recs, keep)):
            b = np.asarray(rec.boxes, np.float32).reshape(-1, 4)[k]
            scale = np.array([rec.width, rec.height, rec.width, rec.height], np.float32)
            boxes[i, : len(b)] = b / scale
            labels[i, : len(b)] = [index[n] for n, kk in zip(rec.labels, k) if kk]
        return {"gt_boxes": boxes, "gt_labels": labels, "n_gt": (labels >= 0).sum(1)}

    def verify(self) -> None:
        """Disjointness and byte-identity checks (fails loudly with ``SplitLeakError``)."""
        rows = self.plan()
        hashes = None
        if self.loader.verify_images:
            hashes = {r["file"]: sha256_file(self.root / r["file"]) for r in rows}
        verify_detection_split(rows, hashes)
        self._verified = True

    def manifest_header(self) -> dict:
        return {
            "seed": self.settings.seed,
            "settings": asdict(self.settings),
            "format": self.reader.name,
            "root": str(Path(self.root).resolve()) if self.root else None,
            "role": self.role,
            **(
                {"reference_index": self.reference_index, "reference_seed": self.reference_seed}
                if self.role == "reference"
                else {}
            ),
            "classes": self._classes,
            "reader": {**self.reader.settings(), **self.report.as_dict()},
            "reader_summary": self.report.summary(),
            **self._info,
            "versions": environment_versions(),
        }

    def write_manifest(self, folder: str | Path) -> Path:
        if not self._verified:
            self.verify()
        return write_manifest(Path(folder), self.plan(), self.manifest_header(), COLUMNS)

    # ---- Lightning hooks ------------------------------------------------------------------
    def setup(self, stage: str | None = None) -> None:
        self.plan()
        if not self._verified:
            self.verify()
        trainer = getattr(self, "trainer", None)
        if (
            trainer is not None
            and not trainer.fast_dev_run
            and trainer.logger is not None
            and trainer.log_dir
            and trainer.is_global_zero
        ):
            rank_zero_info(f"Split manifest: {self.write_manifest(trainer.log_dir)}")
        rank_zero_info(
            f"Detection split ({self.reader.name}, role={self.role}): {self._info['counts']}; "
            f"{len(self._classes)} classes; reader: {self.report.summary()}"
        )

    def _loader(
        self, rows: list[dict], *, train: bool = False, limit: int | None = None
    ) -> DataLoader:
        if limit is not None:
            rows = rows[:limit]
        ds = DetectionDataset(
            rows,
            self._records,
            self.root,
            {n: k + 1 for k, n in enumerate(self._classes)},
            build_transform(self.loader.augment, self.loader.image_size, train),
            keep_difficult=self.loader.keep_difficult or not train,
        )
        return DataLoader(
            ds,
            batch_size=self.batch_size if train else self.eval_batch_size,
            shuffle=train,
            collate_fn=collate,
            num_workers=self.num_workers,
            persistent_workers=self.num_workers > 0,
        )

    def train_dataloader(self) -> DataLoader:
        return self._loader(self.training_rows(), train=True)

    def val_dataloader(self) -> list[DataLoader]:
        """``[in, out]`` (or ``[out]`` when ``eval_in_set`` is off): train and test mAP."""
        cap = self.loader.max_eval_images
        out = self._loader(self.held_out_rows(), limit=cap)
        if not self.loader.eval_in_set:
            return [out]
        return [self._loader(self.training_rows(), limit=cap), out]

    def test_dataloader(self) -> list[DataLoader]:
        return self.val_dataloader()

    def predict_dataloader(self) -> DataLoader:
        return self._loader(self.signal_rows())

    def signal_loader(self, rows: list[dict]) -> DataLoader:
        """Un-augmented loader over ``rows`` (dataset index = position in ``rows``)."""
        self.plan()
        return self._loader(rows)
