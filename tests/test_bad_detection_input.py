"""Malformed detection datasets through ``cli.py fit``: VOC annotations that disagree with their
image or hold impossible boxes, a missing image or malformed XML, INRIA annotations of the wrong
size or with boxes outside the image, SynthText with a missing image or a corrupt ``gt.mat``; each
is refused with exit code 2 and one line naming the file, no traceback, nothing written."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.cli_checks import refused


def det_args(tmp: Path, reader: str, root: Path) -> list[str]:
    return [
        "fit",
        "--config",
        "detection_demo.yaml",
        "--trainer.max_epochs",
        "1",
        "--trainer.accelerator",
        "cpu",
        "--trainer.logger.init_args.save_dir",
        str(tmp / "logs"),
        "--data.init_args.reader",
        reader,
        "--data.init_args.root",
        str(root),
    ]


VOC = "datamodules.detection.voc.VocReader"


def _voc_size_mismatch(root):
    xml = next((root / "VOCdevkit" / "VOC2012" / "Annotations").glob("img_003.xml"))
    xml.write_text(xml.read_text().replace("<width>64</width>", "<width>640</width>"))
    return "img_003.xml"


def _voc_box_outside(root):
    xml = root / "VOCdevkit" / "VOC2012" / "Annotations" / "img_002.xml"
    xml.write_text(xml.read_text().replace("<xmax>60</xmax>", "<xmax>900</xmax>", 1))
    return "img_002.xml"


def _voc_inverted_box(root):
    xml = root / "VOCdevkit" / "VOC2012" / "Annotations" / "img_001.xml"
    xml.write_text(xml.read_text().replace("<xmin>5</xmin>", "<xmin>50</xmin>", 1))
    return "img_001.xml"


def _voc_missing_image(root):
    (root / "VOCdevkit" / "VOC2012" / "JPEGImages" / "img_004.jpg").unlink()
    return "img_004.jpg"


def _voc_malformed_xml(root):
    xml = root / "VOCdevkit" / "VOC2012" / "Annotations" / "img_005.xml"
    xml.write_text(xml.read_text()[:80])
    return "img_005.xml"


VOC_CASES = {
    f.__name__[1:]: f
    for f in (
        _voc_size_mismatch,
        _voc_box_outside,
        _voc_inverted_box,
        _voc_missing_image,
        _voc_malformed_xml,
    )
}


@pytest.mark.parametrize("case", list(VOC_CASES))
def test_voc_errors(case, tmp_path, capsys, write_voc):
    root = write_voc(tmp_path / "voc", n=8)
    name = VOC_CASES[case](root)
    refused(capsys, det_args(tmp_path, VOC, root), tmp_path, name)


def test_inria_size_mismatch(tmp_path, capsys, write_inria):
    root = write_inria(tmp_path / "inria", n_train=4, n_test=2)
    ann = root / "INRIAPerson" / "Train" / "annotations" / "crop_train_000001.txt"
    ann.write_bytes(ann.read_bytes().replace(b"64 x 96 x 3", b"640 x 96 x 3"))
    args = det_args(tmp_path, "datamodules.detection.inria.InriaReader", root)
    refused(capsys, args, tmp_path, "crop_train_000001")


def test_inria_box_outside(tmp_path, capsys, write_inria):
    root = write_inria(
        tmp_path / "inria", n_train=4, n_test=2, boxes={"crop_train_000002": [(5, 8, 300, 90)]}
    )
    args = det_args(tmp_path, "datamodules.detection.inria.InriaReader", root)
    refused(capsys, args, tmp_path, "crop_train_000002")


def test_synthtext_missing_image(tmp_path, capsys, write_synthtext):
    root = write_synthtext(tmp_path / "st", n_backgrounds=4, variants=2)
    victim = next(root.glob("1/*.jpg"))
    victim.unlink()
    args = det_args(tmp_path, "datamodules.detection.synthtext.SynthTextReader", root)
    refused(capsys, args, tmp_path, victim.name)


def test_synthtext_corrupt_gt(tmp_path, capsys, write_synthtext):
    root = write_synthtext(tmp_path / "st", n_backgrounds=4, variants=2)
    (root / "gt.mat").write_bytes(b"MATLAB garbage")
    args = det_args(tmp_path, "datamodules.detection.synthtext.SynthTextReader", root)
    refused(capsys, args, tmp_path, "gt.mat")
