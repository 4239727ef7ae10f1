"""Resource limits as one line, up front: image sizes, a training batch of one photo with
BatchNorm, and images over Pillow's decompression-bomb limit (refused, or skipped rows). (The
config checks called directly: tests/test_input_checks.py.)"""

from __future__ import annotations

import csv
import struct
import warnings
import zlib
from pathlib import Path

import pytest
from PIL import Image

from datamodules.catalogs import FolderReader
from datamodules.decode import load_rgb
from datamodules.errors import DataError
from datamodules.image_check import check_images
from datamodules.splits import SplitSettings
from datamodules.whale import LoaderSettings, WhaleDataModule
from tests.cli_checks import one_error_line as refused


def no_run_folder(tmp: Path) -> bool:
    return not any((tmp / "logs").rglob("version_*")) if (tmp / "logs").exists() else True


def bomb_png(path: Path, side: int = 100_000) -> Path:
    """A PNG whose header claims ``side x side`` pixels (no pixel data: it is never decoded)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (
            struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
        )

    ihdr = struct.pack(">IIBBBBB", side, side, 8, 2, 0, 0, 0)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IEND", b""))
    return path


# ---- image sizes ------------------------------------------------------------------------------


def test_image_size_that_is_not_an_integer_is_told_so(tmp_path, tiny_args, capsys):
    argv = tiny_args(tmp_path, 1) + ["--data.init_args.loader.image_size", "3.5"]
    line = refused(argv, capsys)
    assert line.startswith("error: data.init_args.loader.image_size=3.5: must be an integer")
    assert "not an option" not in line and "Did you mean" not in line
    assert no_run_folder(tmp_path)


@pytest.mark.parametrize("size", ["20000", "4"])
def test_image_size_out_of_range_is_refused_naming_the_limit(tmp_path, tiny_args, capsys, size):
    argv = tiny_args(tmp_path, 1) + ["--data.init_args.loader.image_size", size]
    line = refused(argv, capsys)
    assert f"data.init_args.loader.image_size={size}: must be an integer from 8 to 2048" in line
    assert no_run_folder(tmp_path)


# ---- a training batch of one photo -----------------------------------------------------------


def test_batch_of_one_refused_through_the_cli(tmp_path, tiny_args, capsys):
    argv = tiny_args(tmp_path, 1) + ["--model.init_args.preset", "regularized"]
    line = refused(argv + ["--data.init_args.loader.batch_size", "1"], capsys)
    assert "data.init_args.loader.batch_size=1" in line and "BatchNorm" in line
    assert no_run_folder(tmp_path)


# ---- decompression bombs ----------------------------------------------------------------------


def test_a_bomb_header_is_refused_naming_the_file_and_limit(tmp_path):
    path = bomb_png(tmp_path / "bomb.png")
    with pytest.raises(DataError) as exc:
        load_rgb(path)
    msg = str(exc.value)
    assert "\n" not in msg and msg.startswith(f"{path}: image of 10000000000 pixels")
    assert f"PIL.Image.MAX_IMAGE_PIXELS={Image.MAX_IMAGE_PIXELS}" in msg


def test_an_image_just_over_the_limit_is_refused_without_a_warning(
    tmp_path, tiny_image, monkeypatch
):
    path = tiny_image(tmp_path / "big.jpg", seed=424242, size=24)  # 576 pixels
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 400)  # Pillow only warns below 800
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        with pytest.raises(DataError, match=r"24x24 = 576 pixels .*MAX_IMAGE_PIXELS=400"):
            load_rgb(path)
    assert not [w for w in seen if issubclass(w.category, Image.DecompressionBombWarning)]
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", None)  # no limit: decoded
    assert load_rgb(path).size == (24, 24)


def test_the_upfront_check_skips_or_refuses_a_bomb(tmp_path, tiny_image):
    good = tiny_image(tmp_path / "good.jpg", seed=31337)
    bomb = bomb_png(tmp_path / "bomb.png")
    with pytest.warns(UserWarning, match="skipping 1 unreadable"):
        ok, bad = check_images([good, bomb], "skip")
    assert ok == [good] and "decompression-bomb limit" in bad[bomb]
    with pytest.raises(DataError) as exc:
        check_images([good, bomb], "error", option="data.loader.unreadable")
    msg = str(exc.value)
    assert "\n" not in msg and msg.startswith(f"{bomb}: image of 10000000000 pixels")
    assert "MAX_IMAGE_PIXELS" in msg and "set data.loader.unreadable to skip" in msg


def test_a_bomb_in_a_catalog_is_a_skipped_row(tmp_path, folder_catalog):
    root = folder_catalog(tmp_path / "cat", n_ind=9)
    bomb_png(root / "ind_03" / "enc_1" / "huge.png")
    dm = WhaleDataModule(
        FolderReader(),
        root=str(root),
        split=SplitSettings(seed=0),
        loader=LoaderSettings(image_size=16, cache_dir=None, unreadable="skip"),
    )
    with pytest.warns(UserWarning, match="skipping 1 unreadable"):
        rows = dm.plan()
    assert all(r["file"] != "ind_03/enc_1/huge.png" for r in rows)
    dm.write_manifest(tmp_path / "run")
    with (tmp_path / "run" / "skipped_images.csv").open() as fh:
        skipped = list(csv.DictReader(fh))
    assert [r["file"] for r in skipped] == ["ind_03/enc_1/huge.png"]
    assert "decompression-bomb limit" in skipped[0]["reason"]


def test_a_bomb_stops_a_fit_in_one_line(tmp_path, folder_catalog, tiny_args, capsys):
    root = folder_catalog(tmp_path / "cat", n_ind=9)
    bomb = bomb_png(root / "ind_05" / "huge.png")
    args, argv, i = tiny_args(tmp_path, 1), [], 0
    while i < len(args):  # the synthetic reader's settings do not apply to a folder catalog
        if args[i].startswith("--data.init_args.reader.init_args."):
            i += 2
            continue
        argv.append(args[i])
        i += 1
    argv += ["--data.init_args.reader", "datamodules.catalogs.FolderReader"]
    argv += ["--data.init_args.root", str(root), "--data.init_args.loader.cache_dir", "null"]
    line = refused(argv, capsys)
    assert line.startswith(f"error: {bomb}: image of 10000000000 pixels")
    assert "MAX_IMAGE_PIXELS" in line and "data.loader.unreadable to skip" in line
    assert no_run_folder(tmp_path)


def test_discriminate_lists_a_bomb_as_unreadable(tmp_path, tiny_image):
    scan = pytest.importorskip("experiments.known_new.scan").scan
    good = tiny_image(tmp_path / "photos" / "a.jpg", seed=27182)
    bomb = bomb_png(tmp_path / "photos" / "b.png")
    images, bad = scan(tmp_path / "photos")
    assert images == [good] and bad == {bomb: "corrupt"}
