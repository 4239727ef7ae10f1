"""Readers on fixture files in the real formats; bad input gives a clear error or a counted skip."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from datamodules.detection.inria import InriaReader
from datamodules.detection.records import DetectionReader, DetRecord, ReadReport
from datamodules.detection.synthetic import SHAPES, SyntheticVOC, SyntheticVocReader, generate
from datamodules.detection.synthtext import SynthTextReader, background_of, word_boxes
from datamodules.detection.voc import VOC_CLASSES, VocReader
from datamodules.errors import DataError

SHARED_VOC = Path(__file__).resolve().parents[2] / "shared" / "data" / "voc2012_sample"


def read(reader: DetectionReader, root: Path) -> tuple[list[DetRecord], ReadReport]:
    """``(records, report)`` of ``reader`` on ``root``."""
    cat = reader.read(root)
    assert cat.root == Path(root)
    return cat.records, cat.report


def test_voc_reader_fixture(tmp_path, write_voc):
    write_voc(tmp_path, n=5)
    recs, rep = read(VocReader(), tmp_path)
    assert len(recs) == 5 and rep.summary() == "nothing skipped"
    r = recs[0]
    assert r.file == "VOCdevkit/VOC2012/JPEGImages/img_000.jpg"
    assert r.annotation == "VOCdevkit/VOC2012/Annotations/img_000.xml"
    assert (r.width, r.height) == (64, 48)
    # 1-based inclusive (5, 6, 30, 40) -> 0-based corners (4, 5, 30, 40)
    np.testing.assert_allclose(r.boxes[0], [4, 5, 30, 40])
    assert r.labels == ["person", "dog"]
    assert r.difficult.tolist() == [False, True]  # img_000: second object difficult


def test_voc_reader_uses_imagesets_not_glob(tmp_path, write_voc):
    write_voc(tmp_path, n=4)
    lst = tmp_path / "VOCdevkit/VOC2012/ImageSets/Main/trainval.txt"
    lst.write_text("img_002\nimg_000\n")
    recs, _ = read(VocReader(), tmp_path)
    assert [Path(r.file).stem for r in recs] == ["img_002", "img_000"]


@pytest.mark.parametrize(
    "objects,reason,needle",
    [
        ({"img_001": [("dog", 10, 10, 70, 40, 0)]}, "box outside image", "outside the 64x48 image"),
        ({"img_001": [("dog", 11, 10, 10, 40, 0)]}, "zero-area box", "zero or negative area"),
    ],
)
def test_voc_bad_boxes_error_or_skip(tmp_path, objects, reason, needle, write_voc):
    write_voc(tmp_path, n=4, objects=objects)
    with pytest.raises(DataError, match=needle) as exc:
        read(VocReader(), tmp_path)
    assert "img_001.xml" in str(exc.value) and "data.reader.on_invalid" in str(exc.value)
    recs, rep = read(VocReader(on_invalid="skip"), tmp_path)
    # the image's only object was bad, so the image is skipped too (counted under "no objects")
    assert rep.skipped_objects[reason] == 1 and rep.skipped_images["no objects"] == 1
    assert len(recs) == 3
    assert f"{reason}: 1" in rep.summary()


def test_voc_clip_policy(tmp_path, write_voc):
    write_voc(tmp_path, n=3, objects={"img_001": [("dog", 10, 10, 70, 40, 0)]})
    recs, rep = read(VocReader(on_invalid="clip"), tmp_path)
    assert rep.clipped_boxes == 1 and len(recs) == 3
    np.testing.assert_allclose(recs[1].boxes[0], [9, 9, 64, 40])


def test_voc_malformed_xml_and_missing_image(tmp_path, write_voc):
    write_voc(tmp_path, n=5, broken_xml=("img_002",), missing_images=("img_003",))
    with pytest.raises(DataError, match="img_002.xml.*malformed XML"):
        read(VocReader(), tmp_path)
    recs, rep = read(VocReader(on_invalid="skip"), tmp_path)
    assert len(recs) == 3
    assert rep.skipped_images == {"malformed XML": 1, "missing image": 1}
    assert "skipped 2 images (malformed XML: 1, missing image: 1)" in rep.summary()
    # the missing image alone, with errors on: the message names the file
    write_voc(tmp_path / "b", n=3, missing_images=("img_001",))
    with pytest.raises(DataError, match=r"img_001\.jpg: listed in .*trainval.txt but missing"):
        read(VocReader(), tmp_path / "b")


def test_voc_unknown_class_and_missing_list(tmp_path, write_voc):
    write_voc(tmp_path, n=3, objects={"img_000": [("unicorn", 2, 2, 20, 20, 0)]})
    with pytest.raises(DataError, match="unicorn"):
        read(VocReader(classes=list(VOC_CLASSES)), tmp_path)
    with pytest.raises(DataError, match="test.txt: image-set list not found"):
        read(VocReader(image_sets=["test"]), tmp_path)
    with pytest.raises(DataError, match="no VOCdevkit"):
        read(VocReader(), tmp_path / "VOCdevkit" / "VOC2012" / "JPEGImages")


def test_synthetic_tree_reads_with_voc_reader(tmp_path):
    s = SyntheticVOC(n_images=6, image_size=48, seed=3)
    root = generate(tmp_path / "synth", s)
    assert generate(root, s) == root  # second call reuses the tree
    recs, rep = read(VocReader(), root)
    assert len(recs) == 6 and rep.summary() == "nothing skipped"
    assert {n for r in recs for n in r.labels} <= {"circle", "square", "triangle", "cross"}
    assert all(1 <= len(r.labels) <= 4 for r in recs)
    assert all((r.boxes[:, 2] <= 48).all() and (r.boxes[:, :2] >= 0).all() for r in recs)
    # the reader object holds the generator settings: it reuses the tree and names the shapes
    cat = SyntheticVocReader(n_images=6, image_size=48, seed=3).read(root)
    assert [r.file for r in cat.records] == [r.file for r in recs]
    assert cat.classes == list(SHAPES) and cat.report.summary() == "nothing skipped"


def test_voc_reader_class_names(tmp_path, write_voc):
    write_voc(tmp_path, n=3)
    assert VocReader().read(tmp_path).classes == list(VOC_CLASSES)
    names = ["person", "dog", "car"]
    assert VocReader(classes=names).read(tmp_path).classes == names
    write_voc(tmp_path / "b", n=2, objects={"img_000": [("unicorn", 2, 2, 20, 20, 0)]})
    assert VocReader().read(tmp_path / "b").classes == sorted(
        {n for r in VocReader().read(tmp_path / "b").records for n in r.labels}
    )


def test_readers_need_a_root():
    for reader in (VocReader(), InriaReader(), SynthTextReader()):
        with pytest.raises(DataError, match="data.root is required"):
            reader.read(None)


@pytest.mark.skipif(not SHARED_VOC.is_dir(), reason="../shared/data/voc2012_sample not present")
def test_voc_reader_real_sample():
    recs, rep = read(VocReader(classes=list(VOC_CLASSES)), SHARED_VOC)
    assert len(recs) == 100 and rep.summary() == "nothing skipped"
    assert sum(len(r.labels) for r in recs) == 273
    assert sum(int(r.difficult.sum()) for r in recs) == 38
    assert {n for r in recs for n in r.labels} == set(VOC_CLASSES)
    assert recs[0].file.endswith("2007_000027.jpg")


def test_inria_reader_fixture(tmp_path, write_inria):
    write_inria(tmp_path, n_train=3, n_test=2)
    recs, rep = read(InriaReader(), tmp_path)
    assert len(recs) == 5 and rep.summary() == "nothing skipped"
    r = recs[0]
    assert r.file == "INRIAPerson/Train/pos/crop_train_000000.png"
    assert (r.width, r.height) == (64, 96) and r.labels == ["person", "person"]
    np.testing.assert_allclose(r.boxes[0], [4, 7, 30, 90])
    recs, _ = read(InriaReader(subsets=["Test"]), tmp_path / "INRIAPerson")
    assert len(recs) == 2 and recs[0].file.startswith("Test/pos/")


def test_inria_bad_input(tmp_path, write_inria):
    write_inria(tmp_path, n_train=3, n_test=1, boxes={"crop_train_000001": [(5, 8, 70, 90)]})
    with pytest.raises(DataError, match=r"crop_train_000001\.txt object 1.*outside"):
        read(InriaReader(), tmp_path)
    recs, rep = read(InriaReader(on_invalid="clip"), tmp_path)
    assert len(recs) == 4 and rep.clipped_boxes == 1
    (tmp_path / "INRIAPerson/Train/pos/crop_train_000002.png").unlink()
    recs, rep = read(InriaReader(on_invalid="skip"), tmp_path)
    assert rep.skipped_images == {"missing image": 1, "no objects": 1} and len(recs) == 2
    write_inria(tmp_path / "b", n_train=3, n_test=1)
    (tmp_path / "b/INRIAPerson/Train/pos/crop_train_000002.png").unlink()
    with pytest.raises(DataError, match="crop_train_000002.png: listed in .*pos.lst but missing"):
        read(InriaReader(), tmp_path / "b")
    (tmp_path / "b/INRIAPerson/Test/annotations/crop_test_000000.txt").write_text("garbage\n")
    with pytest.raises(DataError, match="crop_test_000000.txt: not a PASCAL Annotation v1.00"):
        read(InriaReader(subsets=["Test"]), tmp_path / "b")


def test_synthtext_reader_fixture(tmp_path, write_synthtext):
    write_synthtext(tmp_path, n_backgrounds=2, variants=2)
    recs, rep = read(SynthTextReader(), tmp_path)
    assert len(recs) == 4 and rep.summary() == "nothing skipped"
    assert recs[0].file == "1/scene0_10_0.jpg" and recs[0].group == "scene0_10"
    assert len(recs[0].labels) == 1 and len(recs[1].labels) == 2  # squeezed 2x4 vs 2x4x2
    np.testing.assert_allclose(recs[0].boxes[0], [4, 5, 24, 15])
    assert read(SynthTextReader(limit=3), tmp_path)[0][-1].file == "2/scene1_11_0.jpg"


def test_synthtext_helpers_and_errors(tmp_path, write_synthtext):
    assert background_of("8/ballet_106_0.jpg") == "ballet_106"
    quad = np.array([[1, 5, 5, 1], [2, 2, 7, 7]], dtype=float)
    np.testing.assert_allclose(word_boxes(quad), [[1, 2, 5, 7]])
    np.testing.assert_allclose(word_boxes(quad[:, :, None]), [[1, 2, 5, 7]])
    with pytest.raises(DataError, match="gt.mat: SynthText ground truth not found"):
        read(SynthTextReader(), tmp_path)
    write_synthtext(tmp_path, n_backgrounds=2, variants=2)
    (tmp_path / "2/scene1_11_1.jpg").unlink()
    with pytest.raises(DataError, match="scene1_11_1.jpg: listed in .*gt.mat but missing"):
        read(SynthTextReader(), tmp_path)
    recs, rep = read(SynthTextReader(on_invalid="skip"), tmp_path)
    assert len(recs) == 3 and rep.n_skipped_images == 1
