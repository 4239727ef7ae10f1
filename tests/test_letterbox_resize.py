"""Letterbox resize (datamodules/images.py): the aspect ratio kept with padding, squash unchanged,
the decoded-image cache keyed by the resize mode, and a bad resize setting refused in one line."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from datamodules.errors import DataError
from datamodules.image_cache import DecodeSettings, ImageCache
from datamodules.images import ManifestDataset, eval_transform, letterbox_size, resize_uint8


def _wide(w: int = 90, h: int = 30) -> Image.Image:
    arr = np.full((h, w, 3), 200, np.uint8)
    arr[:, : w // 3] = 10  # a dark left third: a mark that squashing would stretch
    return Image.fromarray(arr)


def test_letterbox_keeps_the_aspect_ratio_and_pads():
    s = DecodeSettings(48, resize="letterbox", pad_value=7)
    x = resize_uint8(_wide(), s)
    assert x.shape == (3, 48, 48) and x.dtype == torch.uint8
    assert letterbox_size(30, 90, 48) == (16, 48)
    top = (48 - 16) // 2
    assert (x[:, :top] == 7).all() and (x[:, top + 16 :] == 7).all()  # padding rows
    content = x[0, top : top + 16]
    assert (content[:, :14] < 50).all() and (content[:, 18:] > 150).all()  # dark third kept 1/3
    squash = resize_uint8(_wide(), DecodeSettings(48))
    assert (squash != 7).all() and squash.shape == (3, 48, 48)


def test_squash_is_unchanged_and_letterbox_on_a_square_is_a_resize():
    img = _wide(40, 40)
    old = eval_transform(32)(img)
    assert torch.equal(old, eval_transform(32, "squash")(img))
    assert torch.allclose(eval_transform(32, "letterbox")(img), old, atol=1e-6)


def test_the_cache_key_depends_on_the_resize_mode(tmp_path):
    a = ImageCache(tmp_path, DecodeSettings(32))
    b = ImageCache(tmp_path, DecodeSettings(32, resize="letterbox"))
    c = ImageCache(tmp_path, DecodeSettings(32, resize="letterbox", pad_value=128))
    assert len({a.key("h", ""), b.key("h", ""), c.key("h", "")}) == 3


def test_dataset_letterboxes_through_the_cache_and_without(tmp_path):
    _wide().save(tmp_path / "w.png")
    rows = [{"catalog": "main", "file": "w.png", "aug": "", "label": 0}]
    s = DecodeSettings(24, resize="letterbox")
    plain = ManifestDataset(rows, {"main": tmp_path}, None, image_size=24, decode=s)
    cached = ManifestDataset(rows, {"main": tmp_path}, None, cache=ImageCache(tmp_path / "c", s))
    assert torch.equal(plain[0][0], cached[0][0]) and torch.equal(cached[0][0], cached[0][0])
    assert (plain[0][0][:, 0] == 0).all()  # the top row is padding


def test_a_bad_resize_setting_is_one_line(tmp_path):
    from datamodules.catalogs import SyntheticWhalesReader
    from datamodules.whale import LoaderSettings, WhaleDataModule

    with pytest.raises(DataError, match="data.loader.resize"):
        WhaleDataModule(SyntheticWhalesReader(), loader=LoaderSettings(resize="stretch"))
    with pytest.raises(DataError, match="data.loader.sampler"):
        WhaleDataModule(SyntheticWhalesReader(), loader=LoaderSettings(sampler="m"))
