"""Detection images as tensors: the train/eval transforms (``augment``: none, little, full), the
dataset of manifest rows (image, boxes, labels, row index) and the collate function that keeps
each image's boxes apart."""

from __future__ import annotations

from pathlib import Path

import torch
from PIL import Image
from torch.utils.data import Dataset
from torchvision import tv_tensors
from torchvision.transforms import v2 as T

from datamodules.detection.records import DetRecord
from datamodules.errors import DataError

AUGMENTS = ("none", "little", "full")


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
