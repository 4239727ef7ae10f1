"""A corpus of malformed inputs: each is refused with exit code 2 and one line naming the file or
key, no traceback, nothing already written changed; and unusual but valid inputs (UTF-8 BOM,
RGBA, CMYK, grayscale, 16-bit, EXIF-rotated, palette with transparency, Unicode names) read the
same as their plain equivalents."""

from __future__ import annotations

import csv
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from datamodules.catalogs import FolderReader, HappywhaleReader, NoaaReader
from datamodules.image_check import check_images
from datamodules.images import load_rgb
from tests.cli_checks import refused


# ---- a NOAA catalog and fit arguments that fail before any training --------------------------
@pytest.fixture(scope="module")
def noaa(tmp_path_factory, noaa_catalog):
    return noaa_catalog(tmp_path_factory.mktemp("noaa") / "cat", n_ind=6, n_enc=3, per_enc=2)


def fit_args(tmp: Path, root: Path, *extra: str) -> list[str]:
    return [
        "fit",
        "--config",
        "demo.yaml",
        "--trainer.max_epochs",
        "1",
        "--trainer.accelerator",
        "cpu",
        "--trainer.enable_progress_bar",
        "false",
        "--trainer.logger.init_args.save_dir",
        str(tmp / "logs"),
        "--data.init_args.reader",
        "datamodules.catalogs.NoaaReader",
        "--data.init_args.root",
        str(root),
        "--data.init_args.loader.image_size",
        "24",
        "--data.init_args.loader.cache_dir",
        "null",
        "--model.init_args.arch",
        "resnet18",
        "--attack_after_fit",
        "null",
        "--data.init_args.split.holdout_groups",
        "0",  # demo.yaml holds one encounter out; min_groups needs 3 left
        *extra,
    ]


def copy_catalog(src: Path, tmp: Path) -> Path:
    dst = tmp / "cat"
    shutil.copytree(src, dst)
    return dst


def rows_of(root: Path) -> list[dict]:
    with (root / "metadata.csv").open(newline="") as fh:
        return list(csv.DictReader(fh))


def write_rows(root: Path, rows: list[dict]) -> None:
    with (root / "metadata.csv").open("w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)


CONFIG_CASES = {
    "misspelled_trainer_key": (["--trainer.max_epochz", "1"], ["max_epochz", "max_epochs"]),
    "misspelled_nested_key": (
        ["--data.init_args.loader.batch_sise", "2"],
        ["data.init_args.loader.batch_sise", "loader.batch_size"],
    ),
    "negative_batch_size": (["--data.init_args.loader.batch_size", "-1"], ["batch_size"]),
    "zero_image_size": (["--data.init_args.loader.image_size", "0"], ["image_size"]),
    "zero_max_epochs": (["--trainer.max_epochs", "0"], ["max_epochs"]),
    "unknown_arch": (["--model.init_args.arch", "resnet181"], ["resnet181", "resnet18"]),
    "missing_ckpt_path": (["--ckpt_path", "/nonexistent/last.ckpt"], ["/nonexistent/last.ckpt"]),
}


@pytest.mark.parametrize("case", list(CONFIG_CASES))
def test_config_errors(case, tmp_path, capsys, noaa):
    extra, names = CONFIG_CASES[case]
    refused(capsys, fit_args(tmp_path, noaa, *extra), tmp_path, *names)
    assert not (tmp_path / "logs").exists() or not any((tmp_path / "logs").rglob("*.*"))


def test_misspelled_key_in_config_file(tmp_path, capsys, noaa):
    cfg = tmp_path / "typo.yaml"
    cfg.write_text("trainer:\n  max_epocs: 1\n")
    refused(capsys, fit_args(tmp_path, noaa, "--config", str(cfg)), tmp_path, "max_epocs")


def _ckpt_cases(tmp: Path) -> dict[str, Path]:
    good = tmp / "good.ckpt"
    torch.save({"state_dict": {"w": torch.zeros(3)}}, good)
    data = good.read_bytes()
    (tmp / "truncated.ckpt").write_bytes(data[: len(data) // 2])
    (tmp / "text.ckpt").write_text("not a checkpoint\n")
    good.unlink()
    return {"truncated": tmp / "truncated.ckpt", "text": tmp / "text.ckpt"}


@pytest.mark.parametrize("kind", ["truncated", "text"])
def test_bad_ckpt_path(kind, tmp_path, capsys, noaa):
    path = _ckpt_cases(tmp_path)[kind]
    refused(capsys, fit_args(tmp_path, noaa, "--ckpt_path", str(path)), tmp_path, str(path))


def _noaa_duplicate_row(root):
    rows = rows_of(root)
    write_rows(root, rows + [rows[3]])
    return "line"


def _noaa_dot_slash(root):
    rows = rows_of(root)
    extra = dict(rows[2], path="./" + rows[2]["path"], image_id="dup")
    write_rows(root, rows + [extra])
    return "same file"


def _noaa_symlink(root):
    rows = rows_of(root)
    os.symlink(root / rows[1]["path"], root / "images" / "link.jpg")
    write_rows(root, rows + [dict(rows[1], path="images/link.jpg", image_id="link")])
    return "same file"


def _noaa_hardlink(root):
    rows = rows_of(root)
    os.link(root / rows[1]["path"], root / "images" / "hard.jpg")
    write_rows(root, rows + [dict(rows[1], path="images/hard.jpg", image_id="hard")])
    return "hard.jpg"


def _noaa_missing_image(root):
    rows = rows_of(root)
    (root / rows[4]["path"]).unlink()
    return rows[4]["path"]


def _noaa_empty_image(root):
    rows = rows_of(root)
    (root / rows[4]["path"]).write_bytes(b"")
    return "empty"


def _noaa_truncated_jpeg(root):
    for row in rows_of(root):  # every photo, whichever the split keeps
        p = root / row["path"]
        p.write_bytes(p.read_bytes()[:300])
    return "corrupt image"


def _noaa_text_as_jpeg(root):
    for row in rows_of(root):
        (root / row["path"]).write_text("hello")
    return "cannot identify"


def _noaa_latin1(root):
    text = (root / "metadata.csv").read_text().replace("top", "t\xf6p", 1)
    (root / "metadata.csv").write_bytes(text.encode("latin-1"))
    return "metadata.csv"


def _noaa_missing_column(root):
    rows = [{k: v for k, v in r.items() if k != "whale_id"} for r in rows_of(root)]
    write_rows(root, rows)
    return "whale_id"


def _noaa_missing_root(root):
    shutil.rmtree(root)
    return "data.root"


def _noaa_absolute_path(root):
    rows = rows_of(root)
    write_rows(root, rows + [dict(rows[0], path=str(root / rows[0]["path"]))])
    return "absolute"


def _noaa_escaping_path(root):
    rows = rows_of(root)
    write_rows(root, rows + [dict(rows[0], path="../outside.jpg")])
    return "escapes"


CATALOG_CASES = {
    f.__name__[1:]: f
    for f in (
        _noaa_duplicate_row,
        _noaa_dot_slash,
        _noaa_symlink,
        _noaa_hardlink,
        _noaa_missing_image,
        _noaa_empty_image,
        _noaa_truncated_jpeg,
        _noaa_text_as_jpeg,
        _noaa_latin1,
        _noaa_missing_column,
        _noaa_missing_root,
        _noaa_absolute_path,
        _noaa_escaping_path,
    )
}


@pytest.mark.parametrize("case", list(CATALOG_CASES))
def test_catalog_errors(case, tmp_path, capsys, noaa):
    root = copy_catalog(noaa, tmp_path)
    name = CATALOG_CASES[case](root)
    refused(capsys, fit_args(tmp_path, root), tmp_path, name)
    assert not list((tmp_path / "logs").rglob("version_*")) if (tmp_path / "logs").exists() else 1


def test_happywhale_duplicate_row(tmp_path, happywhale_catalog):
    root = happywhale_catalog(tmp_path / "hw", n_ind=3, per_ind=2)
    text = (root / "train.csv").read_text().splitlines()
    (root / "train.csv").write_text("\n".join([*text, text[1]]) + "\n")
    with pytest.raises(Exception, match=r"train\.csv, line \d+: .*same file as .*line 2"):
        HappywhaleReader().read(root)


def test_folder_symlink_duplicate(tmp_path, folder_catalog):
    root = folder_catalog(tmp_path / "f", n_ind=3, n_enc=1, per_enc=2, nested=False)
    os.symlink(root / "ind_00" / "e0_f0.jpg", root / "ind_01" / "copy.jpg")
    with pytest.raises(Exception, match="same file as"):
        FolderReader().read(root)


# ---- run folders and the attack command ------------------------------------------------------
@pytest.fixture
def run(tmp_path, make_run_folder):
    return make_run_folder(tmp_path, n_individuals=9, encounters=2, photos=2, size=24)


def test_attack_missing_run(tmp_path, capsys):
    refused(capsys, ["attack", "--run", str(tmp_path / "nope")], tmp_path, "nope")


def test_attack_not_a_run_folder(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    refused(capsys, ["attack", "--run", str(tmp_path / "empty")], tmp_path, "empty")


def test_attack_checkpoint_deleted(run, capsys):
    (run / "signals").mkdir()
    (run / "signals" / "final.npz").write_bytes(b"cached")
    (run / "checkpoints" / "last.ckpt").unlink()
    line = refused(capsys, ["attack", "--run", str(run)], run.parent, "last.ckpt")
    assert "label-only" in line or "cached_signals" in line
    assert not (run / "attacks").exists()


def test_attack_truncated_checkpoint(run, capsys):
    ckpt = run / "checkpoints" / "last.ckpt"
    ckpt.write_bytes(ckpt.read_bytes()[:1000])
    refused(capsys, ["attack", "--run", str(run)], run.parent, "last.ckpt")


def test_attack_unsafe_checkpoint(run, capsys):
    torch.save({"state_dict": {}, "obj": Path("x")}, run / "checkpoints" / "last.ckpt")
    refused(capsys, ["attack", "--run", str(run)], run.parent, "last.ckpt")


def test_attack_existing_output(run, capsys):
    (run / "mine").mkdir()
    (run / "mine" / "keep.txt").write_text("keep")
    refused(capsys, ["attack", "--run", str(run), "--output", "mine"], run.parent, "mine")


# ---- detection annotations -------------------------------------------------------------------
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


# ---- valid but unusual inputs: same pixels or rows as the plain equivalent -------------------
def _rgb(seed: int = 0, size=(20, 14)) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 255, (*size[::-1], 3), dtype=np.uint8)


def test_unusual_modes_decode_like_plain(tmp_path):
    arr = _rgb()
    grey = arr[..., 0]
    Image.fromarray(arr).save(tmp_path / "plain.png")
    plain = np.asarray(load_rgb(tmp_path / "plain.png"))
    rgba = np.concatenate([arr, np.full((*arr.shape[:2], 1), 255, np.uint8)], -1)
    Image.fromarray(rgba, "RGBA").save(tmp_path / "rgba.png")
    assert np.array_equal(np.asarray(load_rgb(tmp_path / "rgba.png")), plain)
    Image.fromarray(grey, "L").save(tmp_path / "grey.png")
    Image.fromarray(grey.astype(np.uint16) * 257).save(tmp_path / "grey16.png")
    grey_rgb = np.repeat(grey[..., None], 3, -1)
    assert np.array_equal(np.asarray(load_rgb(tmp_path / "grey.png")), grey_rgb)
    assert Image.open(tmp_path / "grey16.png").mode.startswith("I")
    assert np.array_equal(np.asarray(load_rgb(tmp_path / "grey16.png")), grey_rgb)
    Image.fromarray(grey.astype(np.float32) / 255, "F").save(tmp_path / "float.tiff")
    assert np.abs(np.asarray(load_rgb(tmp_path / "float.tiff")).astype(int) - grey_rgb).max() <= 1
    cmyk = Image.fromarray(arr).convert("CMYK")
    cmyk.save(tmp_path / "cmyk.tiff")
    assert np.array_equal(np.asarray(load_rgb(tmp_path / "cmyk.tiff")), plain)
    pal = Image.fromarray(arr).quantize(16)
    pal.info["transparency"] = 0
    pal.save(tmp_path / "pal.png", transparency=0)
    expected = np.asarray(pal.convert("RGB"))
    assert np.array_equal(np.asarray(load_rgb(tmp_path / "pal.png")), expected)
    shutil.copy(tmp_path / "plain.png", tmp_path / "baleine_été_鯨.png")
    assert np.array_equal(np.asarray(load_rgb(tmp_path / "baleine_été_鯨.png")), plain)


def test_exif_orientation_applied(tmp_path):
    arr = _rgb(1, size=(24, 12))  # landscape as stored
    img = Image.fromarray(arr)
    exif = img.getexif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to display
    img.save(tmp_path / "rotated.jpg", exif=exif, quality=100)
    plain = Image.open(tmp_path / "rotated.jpg")
    stored = np.asarray(plain.convert("RGB"))
    shown = np.asarray(load_rgb(tmp_path / "rotated.jpg"))
    assert shown.shape == (24, 12, 3) and np.array_equal(shown, np.rot90(stored, k=-1))


def test_truncated_jpeg_fails_the_decode_check(tmp_path, tiny_image):
    good = tiny_image(tmp_path / "good.jpg", 0, size=64)
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(good.read_bytes()[:-200])
    with Image.open(bad) as im:
        im.verify()  # the header check alone passes it
    ok, broken = check_images([good, bad], "skip")
    assert ok == [good] and list(broken) == [bad]
    with pytest.raises(Exception, match="bad.jpg"):
        check_images([good, bad], "error")


def test_bom_csv_reads_like_plain(tmp_path, noaa):
    root = copy_catalog(noaa, tmp_path)
    plain = NoaaReader().read(root).records
    text = (root / "metadata.csv").read_text()
    (root / "metadata.csv").write_bytes(b"\xef\xbb\xbf" + text.encode())
    assert NoaaReader().read(root).records == plain
