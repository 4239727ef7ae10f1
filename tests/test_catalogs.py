"""Catalog readers on fixture catalogs, and every bad-input path of the whale data."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from datamodules.catalogs import FolderReader, HappywhaleReader, NoaaReader, group_key
from datamodules.errors import DataError
from datamodules.splits import SplitSettings
from datamodules.whale import LoaderSettings, WhaleDataModule

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"


def test_folder_reader_nested_and_flat(tmp_path, folder_catalog):
    cat = FolderReader().read(folder_catalog(tmp_path / "nested", n_ind=3, n_enc=2, per_enc=2))
    assert len(cat.records) == 12
    assert cat.identities() == {"ind_00": 4, "ind_01": 4, "ind_02": 4}
    assert {r.group for r in cat.records} == {"enc_0", "enc_1"}
    r = cat.records[0]
    assert r.file == "ind_00/enc_0/e0_f0.jpg" and group_key(r, "encounter") == "enc_0"
    flat = FolderReader().read(folder_catalog(tmp_path / "flat", n_ind=2, nested=False))
    assert all(r.group is None for r in flat.records)
    assert group_key(flat.records[0], None) is None


def test_noaa_reader_and_viewpoint_filter(tmp_path, noaa_catalog):
    noaa_catalog(tmp_path, n_ind=3, n_enc=2, per_enc=2)
    cat = NoaaReader().read(tmp_path)
    assert len(cat.records) == 12
    rec = cat.records[0]
    assert rec.identity == "whale000" and rec.group == "whale000-000"
    assert rec.meta["date"] == "2019-08-01" and rec.file == "images/train0000.jpg"
    top = NoaaReader(viewpoint="top").read(tmp_path)
    assert 0 < len(top.records) < 12 and all(r.viewpoint == "top" for r in top.records)
    assert group_key(rec, "encounter_id") == "whale000-000"
    assert group_key(rec, "date") == "2019-08-01"
    with pytest.raises(DataError, match="data.split.group_by='nosuch'"):
        group_key(rec, "nosuch")


def test_happywhale_reader_species_filter(tmp_path, happywhale_catalog):
    happywhale_catalog(tmp_path, n_ind=3, per_ind=4)
    assert len(HappywhaleReader().read(tmp_path).records) == 16
    hump = HappywhaleReader(species="humpback_whale").read(tmp_path)
    assert len(hump.records) == 12
    assert hump.records[0].file.startswith("train_images/")
    with pytest.raises(DataError, match="no rows left after data.reader.species='orca'"):
        HappywhaleReader(species="orca").read(tmp_path)


@pytest.mark.skipif(not (SHARED / "beluga_whaledo_dev").is_dir(), reason="../shared/data absent")
def test_noaa_reader_on_real_sample():
    cat = NoaaReader().read(SHARED / "beluga_whaledo_dev")
    assert len(cat.records) == 1003
    assert len(cat.identities()) == 65


# ---- bad input: one clear error naming the file or key -------------------------------------


def test_missing_root_points_to_demo(tmp_path):
    with pytest.raises(DataError, match=r"data.root: .*does not exist.*demo.yaml"):
        _ = WhaleDataModule(NoaaReader(), root=str(tmp_path / "nope")).num_classes


def test_csv_without_identity_column(tmp_path, noaa_catalog):
    noaa_catalog(tmp_path, n_ind=2, drop_column="whale_id")
    with pytest.raises(DataError, match=r"metadata.csv: missing column\(s\) \['whale_id'\]"):
        NoaaReader().read(tmp_path)


def test_malformed_csv_row(tmp_path, noaa_catalog):
    noaa_catalog(tmp_path, n_ind=2)
    with (tmp_path / "metadata.csv").open("a") as fh:
        fh.write("bad,images/x.jpg,1,2,top,d,t,whale000,enc,EXTRA,CELLS\n")
    with pytest.raises(DataError, match=r"metadata.csv, line \d+: malformed row"):
        NoaaReader().read(tmp_path)


def test_listed_but_missing_image(tmp_path, noaa_catalog):
    noaa_catalog(tmp_path, n_ind=2)
    os.remove(tmp_path / "images" / "train0003.jpg")
    with pytest.raises(
        DataError, match=r"line 5: image 'images/train0003.jpg' is listed but missing"
    ):
        NoaaReader().read(tmp_path)


def test_unreadable_image_named(tmp_path, folder_catalog):
    folder_catalog(tmp_path, n_ind=6, n_enc=2, per_enc=2)
    bad = tmp_path / "ind_03" / "enc_1" / "e1_f0.jpg"
    bad.write_bytes(b"this is not a jpeg")
    dm = WhaleDataModule(
        FolderReader(), root=str(tmp_path), loader=LoaderSettings(verify_images=True)
    )
    with pytest.raises(DataError, match=r"e1_f0.jpg: unreadable or corrupt image"):
        dm.verify()


def _truncated_jpeg_catalog(root: Path, folder_catalog) -> Path:
    """A folder catalog with one JPEG cut in half (its header still parses)."""
    folder_catalog(root, n_ind=6, n_enc=2, per_enc=2)
    bad = root / "ind_03" / "enc_1" / "e1_f0.jpg"
    data = bad.read_bytes()
    bad.write_bytes(data[: len(data) // 2])
    return bad


def _split(dm: WhaleDataModule) -> list[tuple]:
    return [(r["file"], r["identity"], r["split"], r["role"], r["aug"]) for r in dm.plan()]


def test_unreadable_policy_error_stops_and_skip_leaves_out_before_the_split(
    tmp_path, folder_catalog
):
    import csv
    import json
    import warnings

    bad = _truncated_jpeg_catalog(tmp_path / "cat", folder_catalog)
    error = WhaleDataModule(
        FolderReader(), str(tmp_path / "cat"), loader=LoaderSettings(cache_dir=None)
    )
    with pytest.raises(DataError, match=r"e1_f0.jpg: .*set data.loader.unreadable to skip"):
        error.write_manifest(tmp_path / "run_error")
    assert not (tmp_path / "run_error" / "split_manifest.csv").exists()

    skip = WhaleDataModule(
        FolderReader(),
        str(tmp_path / "cat"),
        loader=LoaderSettings(cache_dir=None, unreadable="skip"),
    )
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        skip.write_manifest(tmp_path / "run")
    assert len([w for w in caught if "unreadable" in str(w.message)]) == 1  # warned once
    files = {r["file"] for r in skip.plan()}
    assert "ind_03/enc_1/e1_f0.jpg" not in files and "ind_03/enc_1/e1_f1.jpg" in files
    with open(tmp_path / "run" / "skipped_images.csv", newline="") as fh:
        listed = list(csv.DictReader(fh))
    assert [(r["catalog"], r["file"]) for r in listed] == [("main", "ind_03/enc_1/e1_f0.jpg")]
    assert listed[0]["reason"]
    header = json.loads((tmp_path / "run" / "split_manifest.json").read_text())
    assert header["skipped_images"] == 1
    # the split is planned as if the photo were not in the catalog at all
    bad.unlink()
    without = WhaleDataModule(
        FolderReader(), str(tmp_path / "cat"), loader=LoaderSettings(cache_dir=None)
    )
    assert _split(skip) == _split(without)
    with pytest.raises(DataError, match="data.loader.unreadable='ignore'"):
        WhaleDataModule(
            FolderReader(), str(tmp_path / "cat"), loader=LoaderSettings(unreadable="ignore")
        )


def test_path_escaping_root_rejected(tmp_path, noaa_catalog, tiny_image):
    outside = tiny_image(tmp_path / "outside.jpg", 1)
    root = tmp_path / "cat"
    root.mkdir()
    noaa_catalog(
        root,
        n_ind=2,
        extra_rows=[
            {"path": "../outside.jpg", "whale_id": "whaleX", "image_id": "x", "viewpoint": "top"}
        ],
    )
    assert outside.exists()
    with pytest.raises(DataError, match=r"path '../outside.jpg' escapes the data root"):
        NoaaReader().read(root)
    noaa_catalog(
        root,
        n_ind=2,
        extra_rows=[
            {"path": str(outside), "whale_id": "whaleX", "image_id": "x", "viewpoint": "top"}
        ],
    )
    with pytest.raises(DataError, match=r"is absolute"):
        NoaaReader().read(root)


def test_symlink_escaping_root_rejected(tmp_path, folder_catalog, tiny_image):
    root = folder_catalog(tmp_path / "cat", n_ind=2, n_enc=1, per_enc=1)
    target = tiny_image(tmp_path / "elsewhere" / "x.jpg", 3)
    (root / "ind_00" / "link.jpg").symlink_to(target)
    with pytest.raises(DataError, match="escapes the data root"):
        FolderReader().read(root)


def test_folder_reader_order_links_and_depth(tmp_path, tiny_image):
    """The folder walk keeps pathlib's order and rules: photos sorted by path components, hidden
    individual folders and other suffixes ignored, a linked photo resolved to its target (so a
    link to a listed photo is a duplicate), a linked encounter folder not entered, and a photo
    three levels down refused."""
    root = tmp_path / "cat"
    for k, rel in enumerate(["a/e1.jpg", "a/e1/2.JPG", "a/e1-b.png", "b/1.jpg", ".h/1.jpg"]):
        tiny_image(root / rel, k)
    (root / "a" / "notes.txt").write_text("x")
    (root / "b" / "e2").symlink_to(root / "a" / "e1")
    cat = FolderReader().read(root)
    assert [r.file for r in cat.records] == ["a/e1/2.JPG", "a/e1-b.png", "a/e1.jpg", "b/1.jpg"]
    assert [r.group for r in cat.records] == ["e1", None, None, None]
    (root / "b" / "2.jpg").symlink_to(root / "a" / "e1.jpg")
    with pytest.raises(DataError, match="'a/e1.jpg' is the same file as"):
        FolderReader().read(root)
    (root / "b" / "2.jpg").unlink()
    tiny_image(root / "b" / "e3" / "deep" / "x.jpg", 9)
    with pytest.raises(DataError, match="deep/x.jpg: nested too deep"):
        FolderReader().read(root)


def test_individual_with_too_few_photos(tmp_path, folder_catalog):
    # every individual has 2 photos, and data.split.min_images=1 lets them into ID1
    folder_catalog(tmp_path / "two", n_ind=6, n_enc=2, per_enc=1, nested=False)
    dm = WhaleDataModule(
        FolderReader(), root=str(tmp_path / "two"), split=SplitSettings(min_images=1)
    )
    with pytest.raises(DataError, match=r"identity 'ind_\d+' has 2 photos.*data.split.min_images"):
        _ = dm.num_classes
    # with the default min_images=3 such an individual is left out, and listed as such
    folder_catalog(tmp_path / "one", n_ind=9, n_enc=3, per_enc=1, nested=False)
    for p in sorted((tmp_path / "one" / "ind_04").glob("*.jpg"))[2:]:
        p.unlink()
    dm = WhaleDataModule(FolderReader(), root=str(tmp_path / "one"))
    dm.plan()
    assert "ind_04" in dm._info["excluded_individuals"]


def test_too_few_individuals(tmp_path, folder_catalog):
    folder_catalog(tmp_path, n_ind=2, n_enc=3, per_enc=1)
    with pytest.raises(DataError, match="only 2 individuals.*data.split.min_images"):
        _ = WhaleDataModule(FolderReader(), root=str(tmp_path)).num_classes


def test_bad_format_and_protocol_keys(tmp_path, folder_catalog):
    with pytest.raises(DataError, match="data.reader='csv': give a catalog reader"):
        WhaleDataModule("csv", root=str(tmp_path))
    with pytest.raises(
        DataError, match="data.nonmember_root and data.nonmember_reader go together"
    ):
        WhaleDataModule(FolderReader(), root=str(tmp_path), nonmember_reader=FolderReader())
    folder_catalog(tmp_path, n_ind=6)
    with pytest.raises(DataError, match="data.split.split_protocol='random'"):
        split = SplitSettings(split_protocol="random")
        _ = WhaleDataModule(FolderReader(), root=str(tmp_path), split=split).num_classes
