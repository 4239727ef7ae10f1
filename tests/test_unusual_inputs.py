"""Unusual but valid inputs read the same as their plain equivalents: RGBA, CMYK, grayscale,
16-bit, float, palette with transparency and Unicode file names decode to the plain pixels,
EXIF orientation is applied, a UTF-8 BOM leaves a catalog CSV's rows as they were; and a
truncated JPEG that passes Pillow's header check fails the decode check."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
from PIL import Image

from datamodules.catalogs import NoaaReader
from datamodules.image_check import check_images
from datamodules.images import load_rgb


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


def test_bom_csv_reads_like_plain(tmp_path, noaa_catalog):
    root = noaa_catalog(tmp_path / "cat", n_ind=6, n_enc=3, per_enc=2)
    plain = NoaaReader().read(root).records
    text = (root / "metadata.csv").read_text()
    (root / "metadata.csv").write_bytes(b"\xef\xbb\xbf" + text.encode())
    assert NoaaReader().read(root).records == plain
