"""Detection datamodule: reader -> target/shadow split (manifest, leak checks) -> loaders.

One config trains either the target or the shadow detector (``role``); both runs plan the same
split from the same data settings and seed, so their data are disjoint by construction, and the
audit checks it again across the two run folders.
"""

from __future__ import annotations

from pathlib import Path

import pytorch_lightning as pl
import torch
from PIL import Image
from pytorch_lightning.utilities import rank_zero_info, rank_zero_warn
from torch.utils.data import DataLoader, Dataset
from torchvision import tv_tensors
from torchvision.transforms import v2 as T

from datamodules.detection.inria import INRIA_CLASSES, read_inria
from datamodules.detection.records import DetRecord, ReadReport
from datamodules.detection.split import (
    DetSplitSettings,
    plan_detection_split,
    settings_dict,
    verify_detection_split,
    write_detection_manifest,
)
from datamodules.detection.synthetic import SHAPES, SyntheticVOC, generate
from datamodules.detection.synthtext import SYNTHTEXT_CLASSES, read_synthtext
from datamodules.detection.voc import VOC_CLASSES, read_voc
from datamodules.errors import DataError

FORMATS = ("voc", "inria", "synthtext", "synthetic")
AUGMENTS = ("none", "little", "full")


def default_workers() -> int:
    import os

    cpus = os.cpu_count() or 1
    return 0 if cpus <= 2 else min(8, cpus - 1)


def build_transform(augment: str, image_size: int | None, train: bool) -> T.Compose:
    """Joint image/box transform. ``little``: horizontal flip (paper's "little aug"); ``full``:
    photometric distortion, zoom-out (expand), IoU crop and flip (SSD's augmentation)."""
    ops: list = [T.ToImage(), T.ToDtype(torch.float32, scale=True)]
    if train and augment == "full":
        ops += [
            T.RandomPhotometricDistort(p=0.5),
            T.RandomZoomOut(fill={tv_tensors.Image: (0.485, 0.456, 0.406), "others": 0}, p=0.5),
            T.RandomIoUCrop(),
        ]
    if train and augment in ("little", "full"):
        ops.append(T.RandomHorizontalFlip(0.5))
    if image_size:
        ops.append(T.Resize((image_size, image_size), antialias=True))
    if train:
        ops += [T.ClampBoundingBoxes(), T.SanitizeBoundingBoxes(min_size=1.0)]
    return T.Compose(ops)


class DetectionDataset(Dataset):
    """``(image (3, H, W) float in [0, 1], target, index)`` for manifest rows.

    ``target``: ``boxes`` (K, 4) float32 pixel corners of the returned image, ``labels`` (K,)
    int64 (1-based, 0 is background), ``iscrowd`` (K,) int64 (= VOC ``difficult``; ignored by
    the mAP evaluation), ``orig_size`` (2,) (H, W) of the file.
    """

    def __init__(
        self,
        rows: list[dict],
        records: dict[str, DetRecord],
        root: Path,
        class_index: dict[str, int],
        transform: T.Compose,
        keep_difficult: bool = True,
    ):
        self.rows, self.records, self.root = rows, records, Path(root)
        self.class_index, self.transform, self.keep_difficult = (
            class_index,
            transform,
            keep_difficult,
        )

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, i: int):
        rec = self.records[self.rows[i]["file"]]
        path = self.root / rec.file
        try:
            with Image.open(path) as im:
                img = im.convert("RGB")
        except OSError as exc:
            raise DataError(f"{path}: unreadable image ({exc}).") from exc
        keep = torch.ones(len(rec.labels), dtype=torch.bool)
        if not self.keep_difficult:
            keep = ~torch.as_tensor(rec.difficult, dtype=torch.bool)
        boxes = torch.as_tensor(rec.boxes, dtype=torch.float32).reshape(-1, 4)[keep]
        labels = torch.tensor([self.class_index[n] for n in rec.labels], dtype=torch.int64)[keep]
        crowd = torch.as_tensor(rec.difficult, dtype=torch.int64)[keep]
        target = {
            "boxes": tv_tensors.BoundingBoxes(
                boxes, format="XYXY", canvas_size=(img.height, img.width)
            ),
            "labels": labels,
            "iscrowd": crowd,
        }
        img_t, target = self.transform(img, target)
        target = {
            "boxes": target["boxes"].as_subclass(torch.Tensor),
            "labels": target["labels"],
            "iscrowd": target["iscrowd"]
            if len(target["iscrowd"]) == len(target["labels"])
            else torch.zeros_like(target["labels"]),
            "orig_size": torch.tensor([rec.height, rec.width]),
        }
        return img_t.as_subclass(torch.Tensor), target, i


def collate(batch):
    """``(images, targets, index)`` lists; an empty batch (DP Poisson sampling) gives empty ones."""
    if not batch:
        return [], [], torch.zeros(0, dtype=torch.int64)
    images, targets, idx = zip(*batch)
    return list(images), list(targets), torch.tensor(idx, dtype=torch.int64)


#: lightning_modules.dp keeps this collate for Poisson batches instead of Opacus's empty-batch
#: wrapper, which would rebuild the first batch's list structure with zero-size tensors
collate.handles_empty_batches = True


class DetectionDataModule(pl.LightningDataModule):
    """Detection data for one model of the audit (target or shadow).

    Args:
        format: ``voc``, ``inria``, ``synthtext`` or ``synthetic`` (a generated VOC tree read with
            the VOC reader).
        root: data root (the folder holding ``VOCdevkit``, ``INRIAPerson`` or ``gt.mat``); for
            ``synthetic`` the tree is written there (default ``data_cache/<settings key>``).
        years, image_sets: VOC years (None: all found) and ``ImageSets/Main`` lists.
        subsets: INRIA subsets (``Train``, ``Test``).
        gt_file, limit: SynthText ground-truth file and how many entries to read (None: all).
        classes: class names (index 1..C; 0 is background). None: the format's own list (VOC's
            20 classes, ``person``, ``text``, the synthetic shapes).
        on_invalid: ``error``, ``skip`` or ``clip`` for bad annotations (see
            :mod:`datamodules.detection.records`); skips are counted, logged and saved.
        synthetic: generator settings for ``format=synthetic``.
        seed, protocol, target_fraction, in_fraction, n_target, n_shadow: split settings
            (:mod:`datamodules.detection.split`).
        role: which model this run trains: ``target`` or ``shadow``.
        image_size: square input size in pixels (None keeps the file's size; two-stage models
            then resize by their own ``min_size``).
        augment: ``little`` (flip), ``full`` (flip + colour + expand + crop) or ``none``.
        keep_difficult: train on ``difficult`` objects too (evaluation always ignores them).
        batch_size, eval_batch_size, num_workers: loader settings.
        eval_in_set: validate on the in set as well as the out set (train and test mAP).
        max_eval_images: cap on images per validation loader (None: all).
        verify_images: hash every image for the byte-identity leak check.
    """

    def __init__(
        self,
        format: str = "voc",
        root: str | None = None,
        years: list[str] | None = None,
        image_sets: list[str] = ["trainval"],  # noqa: B006  (jsonargparse needs a list)
        subsets: list[str] = ["Train", "Test"],  # noqa: B006
        gt_file: str = "gt.mat",
        limit: int | None = None,
        classes: list[str] | None = None,
        on_invalid: str = "error",
        synthetic: SyntheticVOC | None = None,
        seed: int = 0,
        protocol: str = "random",
        target_fraction: float = 0.5,
        in_fraction: float = 0.5,
        n_target: int = 5000,
        n_shadow: int = 5000,
        role: str = "target",
        image_size: int | None = 300,
        augment: str = "full",
        keep_difficult: bool = False,
        batch_size: int = 8,
        eval_batch_size: int | None = None,
        num_workers: int | None = None,
        eval_in_set: bool = True,
        max_eval_images: int | None = None,
        verify_images: bool = True,
    ):
        super().__init__()
        if format not in FORMATS:
            raise DataError(f"data.format={format!r}: choose one of {list(FORMATS)}.")
        if role not in ("target", "shadow"):
            raise DataError(f"data.role={role!r}: choose 'target' or 'shadow'.")
        if augment not in AUGMENTS:
            raise DataError(f"data.augment={augment!r}: choose one of {list(AUGMENTS)}.")
        self.save_hyperparameters()
        self.fmt, self.root_arg, self.role = format, root, role
        self.synthetic = synthetic or SyntheticVOC()
        self.settings = DetSplitSettings(
            seed=seed,
            protocol=protocol,
            target_fraction=target_fraction,
            in_fraction=in_fraction,
            n_target=n_target,
            n_shadow=n_shadow,
        )
        self.image_size = image_size
        self.augment = augment
        self.batch_size = batch_size
        self.eval_batch_size = eval_batch_size or batch_size
        self.num_workers = default_workers() if num_workers is None else num_workers
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
        return self.fmt

    def _read(self) -> list[DetRecord]:
        hp = self.hparams
        if self.fmt == "synthetic":
            root = Path(self.root_arg or Path("data_cache") / self.synthetic.key())
            generate(root, self.synthetic)
            names = list(hp.classes or SHAPES[: self.synthetic.n_classes])
            recs, self.report = read_voc(root, None, hp.image_sets, names, hp.on_invalid)
        elif self.fmt == "voc":
            if not self.root_arg:
                raise DataError("data.root is required for format=voc (the folder with VOCdevkit).")
            root = Path(self.root_arg)
            recs, self.report = read_voc(root, hp.years, hp.image_sets, hp.classes, hp.on_invalid)
            found = {n for r in recs for n in r.labels}
            names = (
                list(hp.classes)
                if hp.classes
                else (list(VOC_CLASSES) if found <= set(VOC_CLASSES) else sorted(found))
            )
        elif self.fmt == "inria":
            if not self.root_arg:
                raise DataError("data.root is required for format=inria (holding INRIAPerson).")
            root = Path(self.root_arg)
            recs, self.report = read_inria(root, hp.subsets, hp.on_invalid)
            names = list(INRIA_CLASSES)
        else:
            if not self.root_arg:
                raise DataError("data.root is required for format=synthtext (holding gt.mat).")
            root = Path(self.root_arg)
            recs, self.report = read_synthtext(root, hp.gt_file, hp.limit, hp.on_invalid)
            names = list(SYNTHTEXT_CLASSES)
        self.root = root
        self._classes = names
        skipped = self.report.summary()
        if (
            self.report.n_skipped_images
            or self.report.n_skipped_objects
            or self.report.clipped_boxes
        ):
            rank_zero_warn(
                f"{self.fmt} reader at {root}: {skipped} (data.on_invalid={hp.on_invalid})"
            )
        return recs

    def plan(self) -> list[dict]:
        """Read the data and plan the split once; returns all manifest rows."""
        if self._records is None:
            recs = self._read()
            self._rows, self._info = plan_detection_split(recs, self.settings, self.fmt)
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

    def rows(self, set_name: str | None = None, split: str | None = None) -> list[dict]:
        """Manifest rows of a bucket, in manifest order (``set_name`` None = both sets)."""
        return [
            r
            for r in self.plan()
            if (set_name is None or r["set"] == set_name) and (split is None or r["split"] == split)
        ]

    def signal_rows(self) -> list[dict]:
        """Rows whose predictions form this run's signal file: the role's in and out sets."""
        return self.rows(self.role)

    def verify(self) -> None:
        """Disjointness and byte-identity checks (fails loudly with ``SplitLeakError``)."""
        rows = self.plan()
        hashes = None
        if self.hparams.verify_images:
            from datamodules.splits import sha256_file

            hashes = {r["file"]: sha256_file(self.root / r["file"]) for r in rows}
        verify_detection_split(rows, hashes)
        self._verified = True

    def manifest_header(self) -> dict:
        from datamodules.whale import environment_versions

        return {
            "seed": self.settings.seed,
            "settings": settings_dict(self.settings),
            "format": self.fmt,
            "root": str(Path(self.root).resolve()) if self.root else None,
            "role": self.role,
            "classes": self._classes,
            "synthetic": self.synthetic.__dict__ if self.fmt == "synthetic" else None,
            "reader": {"on_invalid": self.hparams.on_invalid, **self.report.as_dict()},
            "reader_summary": self.report.summary(),
            **self._info,
            "versions": environment_versions(),
        }

    def write_manifest(self, folder: str | Path) -> Path:
        if not self._verified:
            self.verify()
        return write_detection_manifest(folder, self.plan(), self.manifest_header())

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
            f"Detection split ({self.fmt}, role={self.role}): {self._info['counts']}; "
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
            build_transform(self.augment, self.image_size, train),
            keep_difficult=self.hparams.keep_difficult or not train,
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
        return self._loader(self.rows(self.role, "in"), train=True)

    def val_dataloader(self) -> list[DataLoader]:
        """``[in, out]`` (or ``[out]`` when ``eval_in_set`` is off): train and test mAP."""
        cap = self.hparams.max_eval_images
        out = self._loader(self.rows(self.role, "out"), limit=cap)
        if not self.hparams.eval_in_set:
            return [out]
        return [self._loader(self.rows(self.role, "in"), limit=cap), out]

    def test_dataloader(self) -> list[DataLoader]:
        return self.val_dataloader()

    def predict_dataloader(self) -> DataLoader:
        return self._loader(self.signal_rows())

    def eval_loader(self, rows: list[dict]) -> DataLoader:
        """Un-augmented loader over ``rows`` (dataset index = position in ``rows``)."""
        self.plan()
        return self._loader(rows)
