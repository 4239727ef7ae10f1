"""Detection data: VOC, INRIA Person and SynthText readers, a synthetic VOC generator, the
target/shadow split with its manifest, and the datamodule."""

from datamodules.detection.datamodule import DetectionDataModule
from datamodules.detection.records import DetRecord, ReadReport
from datamodules.detection.synthetic import SyntheticVOC

__all__ = ["DetectionDataModule", "DetRecord", "ReadReport", "SyntheticVOC"]
