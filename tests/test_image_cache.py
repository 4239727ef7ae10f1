"""The decoded-image cache and the input pipeline defaults (issue #7)."""

from __future__ import annotations

import os
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
import pytorch_lightning as pl
import torch

from datamodules import hashing
from datamodules.catalogs import FolderReader
from datamodules.errors import DataError
from datamodules.image_cache import DecodeSettings, FileHasher, ImageCache, prune
from datamodules.images import (
    ManifestDataset,
    augment_batch,
    decode_resized,
    eval_transform,
    normalize_batch,
    normalize_transform,
)
from datamodules.splits import SplitSettings
from datamodules.whale import LoaderSettings, WhaleDataModule

SIZE = 32


@pytest.fixture(scope="module")
def catalog(tmp_path_factory, folder_catalog) -> Path:
    return folder_catalog(tmp_path_factory.mktemp("cat"), n_ind=6, n_enc=1, per_enc=3)


def make_dm(root, tmp_path, images_per_identity=None, **kw) -> WhaleDataModule:
    """A folder-catalog datamodule; ``kw`` are :class:`LoaderSettings` fields."""
    kw = {"image_size": SIZE, "num_workers": 0, "cache_dir": str(tmp_path / "cache"), **kw}
    split = SplitSettings(images_per_identity=images_per_identity)
    return WhaleDataModule(FolderReader(), root=str(root), split=split, loader=LoaderSettings(**kw))


def run(ds: ManifestDataset) -> list[torch.Tensor]:
    return [ds[i][0] for i in range(len(ds))]


def entries(folder: Path) -> list[Path]:
    return sorted(folder.glob("*/*.npy"))


@pytest.fixture
def later_clock(monkeypatch):
    """Hashes are taken 'long after' the files changed, so FileHasher trusts its memo."""
    real = time.time_ns
    fake = SimpleNamespace(time_ns=lambda: real() + 10**10, time=time.time)
    monkeypatch.setattr(hashing, "time", fake)


def test_changed_image_rebuilds_only_its_entry(tmp_path, later_clock, folder_catalog, tiny_image):
    root = folder_catalog(tmp_path / "cat", n_ind=6, n_enc=1, per_enc=3)
    past = time.time() - 3600
    for f in root.rglob("*.jpg"):
        os.utime(f, (past, past))
    dm = make_dm(root, tmp_path)
    dm.verify()  # hashes every image once
    hasher = dm._hasher
    hashed = hasher.hashed
    ds = dm.dataset(dm.rows())
    n = len(ds)

    first = run(ds)
    assert (ds.cache.stats.hits, ds.cache.stats.misses) == (0, n)
    assert len(entries(tmp_path / "cache")) == n
    assert hasher.hashed == hashed  # the loaders reuse verify()'s hashes

    second = run(ds)
    assert (ds.cache.stats.hits, ds.cache.stats.misses) == (n, n)
    assert all(torch.equal(a, b) for a, b in zip(first, second))

    k = 4
    changed = ds.path(k)
    before = changed.read_bytes()
    tiny_image(changed, seed=12345)
    assert changed.read_bytes() != before
    ds.cache.stats.reset()
    third = run(ds)
    assert (ds.cache.stats.hits, ds.cache.stats.misses) == (n - 1, 1)
    assert hasher.hashed == hashed + 1  # only the changed file was hashed again
    assert len(entries(tmp_path / "cache")) == n + 1  # the stale entry stays, unused
    fresh = normalize_transform()(decode_resized(changed, ds.rows[k]["aug"], ds.settings))
    assert torch.equal(third[k], fresh)
    assert not torch.equal(third[k], first[k])
    assert all(torch.equal(a, b) for i, (a, b) in enumerate(zip(first, third)) if i != k)


def test_image_size_change_makes_new_entries(catalog, tmp_path):
    rows = make_dm(catalog, tmp_path).rows()
    ds32 = make_dm(catalog, tmp_path).dataset(rows)
    run(ds32)
    n = len(rows)
    ds16 = make_dm(catalog, tmp_path, image_size=16).dataset(rows)
    small = run(ds16)
    assert ds16.cache.stats.misses == n and small[0].shape == (3, 16, 16)
    assert len(entries(tmp_path / "cache")) == 2 * n
    again = make_dm(catalog, tmp_path).dataset(rows)
    run(again)
    assert (again.cache.stats.hits, again.cache.stats.misses) == (n, 0)


def test_corrupt_entry_is_rebuilt(catalog, tmp_path):
    dm = make_dm(catalog, tmp_path)
    ds = dm.dataset(dm.rows())
    good = run(ds)
    files = entries(tmp_path / "cache")
    files[0].write_bytes(files[0].read_bytes()[:100])  # truncated
    files[1].write_bytes(b"not an array at all")
    ds.cache.stats.reset()
    again = run(ds)
    assert ds.cache.stats.misses == 2 and ds.cache.stats.corrupt == 2
    assert all(torch.equal(a, b) for a, b in zip(good, again))
    ds.cache.stats.reset()
    run(ds)
    assert ds.cache.stats.misses == 0  # rebuilt entries are whole again
    assert not list((tmp_path / "cache").rglob("*.tmp"))


def test_cached_equals_uncached_path(catalog, tmp_path):
    dm = make_dm(catalog, tmp_path, images_per_identity=5)  # adds rot/bright/hflip copies
    rows = dm.rows()
    assert any(r["aug"] for r in rows)
    old = run(ManifestDataset(rows, dm.roots, eval_transform(SIZE)))
    ds = dm.dataset(rows)
    miss, hit = run(ds), run(ds)
    assert ds.cache.stats.hits == len(rows)
    for a, b, c in zip(old, miss, hit):
        assert a.dtype == b.dtype == torch.float32 and a.shape == (3, SIZE, SIZE)
        assert torch.equal(a, b) and torch.equal(b, c)


def test_cache_dir_none_disables(catalog, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    dm = make_dm(catalog, tmp_path, cache_dir=None)
    rows = dm.rows()
    ds = dm.dataset(rows)
    assert ds.cache is None
    out = run(ds)
    assert not any(tmp_path.rglob("*.npy"))
    cached = run(make_dm(catalog, tmp_path / "other").dataset(rows))
    assert all(torch.equal(a, b) for a, b in zip(out, cached))


def test_data_errors_unchanged_through_the_cache(tmp_path, folder_catalog):
    root = folder_catalog(tmp_path / "cat", n_ind=6, n_enc=1, per_enc=3)
    dm = make_dm(root, tmp_path, verify_images=False)
    ds = dm.dataset(dm.rows())
    missing, corrupt = ds.path(0), ds.path(1)
    os.remove(missing)
    corrupt.write_bytes(b"garbage")
    with pytest.raises(DataError, match=r"image not found"):
        ds[0]
    with pytest.raises(DataError, match=r"unreadable or corrupt image"):
        ds[1]
    assert not entries(tmp_path / "cache")


def test_augment_batch_on_cpu_batch(catalog, tmp_path):
    dm = make_dm(catalog, tmp_path, train_augment=True, batch_size=2)
    x, y, i = next(iter(dm.train_dataloader()))
    assert x.dtype == torch.uint8 and x.shape == (2, 3, SIZE, SIZE)  # shipped as uint8

    dm.trainer = SimpleNamespace(training=True)
    torch.manual_seed(0)
    a = dm.on_after_batch_transfer([x, y, i], 0)
    torch.manual_seed(0)
    b = dm.on_after_batch_transfer([x, y, i], 0)
    assert a[0].dtype == torch.float32 and a[0].shape == x.shape
    assert torch.equal(a[0], b[0]) and a[1] is y and a[2] is i  # repeatable under a seed
    assert not torch.equal(a[0], normalize_batch(x))
    assert a[0].min() >= normalize_batch(torch.zeros(1, 3, 1, 1)).min()

    dm.trainer = SimpleNamespace(training=False)  # validation etc.: no augmentation
    c = dm.on_after_batch_transfer([x, y, i], 0)
    assert torch.equal(c[0], normalize_batch(x))
    empty = augment_batch(torch.zeros(0, 3, SIZE, SIZE, dtype=torch.uint8))
    assert empty.shape == (0, 3, SIZE, SIZE) and empty.dtype == torch.float32

    cpu = make_dm(catalog, tmp_path, train_augment=True, augment_on_device=False, batch_size=2)
    x2, _, _ = next(iter(cpu.train_dataloader()))
    assert x2.dtype == torch.float32 and x2.shape == (2, 3, SIZE, SIZE)  # per-sample CPU path


class _Tiny(pl.LightningModule):
    def __init__(self, n: int):
        super().__init__()
        self.net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * SIZE * SIZE, n))
        self.seen: list[tuple[str, torch.dtype]] = []

    def training_step(self, batch, _):
        x, y, _ = batch
        self.seen.append(("train", x.dtype))
        return torch.nn.functional.cross_entropy(self.net(x), y)

    def validation_step(self, batch, _):
        self.seen.append(("val", batch[0].dtype))

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


def test_fit_augments_on_device(catalog, tmp_path):
    dm = make_dm(catalog, tmp_path, train_augment=True, batch_size=2)
    model = _Tiny(dm.num_classes)
    trainer = pl.Trainer(
        fast_dev_run=True,
        accelerator="cpu",
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=str(tmp_path),
    )
    trainer.fit(model, datamodule=dm)
    assert ("train", torch.float32) in model.seen and ("val", torch.float32) in model.seen
    assert dm.pin_memory() is False  # a CPU trainer pins nothing


def test_loader_defaults(catalog, tmp_path):
    dm = make_dm(catalog, tmp_path, num_workers=2)
    train, val = dm.train_dataloader(), dm.val_dataloader()
    assert train.persistent_workers and train.prefetch_factor == 4 and val.prefetch_factor == 2
    assert not train.pin_memory  # no trainer attached
    dm0 = make_dm(catalog, tmp_path)
    assert not dm0.train_dataloader().persistent_workers
    assert dm0.train_dataloader().prefetch_factor is None


def test_file_hasher_rehashes_racy_files(tmp_path, tiny_image):
    f = tiny_image(tmp_path / "a.jpg", 1)
    h = FileHasher()
    assert h(f) == h(f) and h.hashed == 2  # just written: its hash is not trusted yet


def test_prune_drops_stale_entries(catalog, tmp_path):
    dm = make_dm(catalog, tmp_path)
    ds = dm.dataset(dm.rows())
    run(ds)
    run(make_dm(catalog, tmp_path, image_size=16).dataset(dm.rows()))
    (tmp_path / "cache" / "ab").mkdir(exist_ok=True)
    old_tmp = tmp_path / "cache" / "ab" / ".abc-1.tmp"
    old_tmp.write_bytes(b"x")
    os.utime(old_tmp, (0, 0))
    n = len(ds)
    assert prune(tmp_path / "cache", ds.cache_keys()) == n + 1
    assert len(entries(tmp_path / "cache")) == n
    ds.cache.stats.reset()
    run(ds)
    assert ds.cache.stats.hits == n


def test_unwritable_cache_serves_uncached(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    cache = ImageCache(blocker / "cache", DecodeSettings(8))
    img = torch.zeros(3, 8, 8, dtype=torch.uint8)
    with pytest.warns(UserWarning, match="cannot write entries"):
        out = cache.get("h", "", lambda: img)
    assert out is img and cache.stats.write_errors == 1
