"""Split planner: Table 3 roles, determinism, group_by, augmentation, and the leak guard."""

from __future__ import annotations

import shutil
from collections import defaultdict

import pytest
from whale_fixtures import folder_catalog, noaa_catalog

from datamodules.catalogs import read_folder, read_noaa
from datamodules.errors import SplitLeakError
from datamodules.splits import (
    SplitSettings,
    manifest_hash,
    plan_splits,
    read_manifest,
    verify_manifest,
    write_manifest,
)
from datamodules.whale import WhaleDataModule


@pytest.fixture(scope="module")
def noaa(tmp_path_factory):
    return read_noaa(noaa_catalog(tmp_path_factory.mktemp("noaa"), n_ind=12, n_enc=4, per_enc=3))


def test_roles_and_sets_follow_table3(noaa):
    rows, info = plan_splits(noaa, SplitSettings(seed=1))
    assert info["n_individuals"] == {"ID1": 4, "ID2": 4, "ID3": 4}
    by = defaultdict(set)
    for r in rows:
        by[r["id_set"]].add(r["identity"])
        expect_set = {
            "train": "train",
            "val": "attack",
            "test": "eval",
            "attack": "attack",
            "eval": "eval",
        }[r["split"]]
        assert r["set"] == expect_set
        assert (r["role"] == "member") == (r["id_set"] == "ID1")
        assert (r["label"] >= 0) == (r["id_set"] == "ID1")
    assert (
        not (by["ID1"] & by["ID2"]) and not (by["ID1"] & by["ID3"]) and not (by["ID2"] & by["ID3"])
    )
    # every ID1 individual has photos in train, val and test
    for ident in by["ID1"]:
        assert {r["split"] for r in rows if r["identity"] == ident} == {"train", "val", "test"}
    # non-members are balanced with members: as many photos per individual as val
    assert sum(r["split"] == "attack" for r in rows) == sum(r["split"] == "val" for r in rows)
    labels = {r["identity"]: r["label"] for r in rows if r["id_set"] == "ID1"}
    assert sorted(labels.values()) == list(range(4)) and info["class_names"] == sorted(labels)


def test_manifest_is_deterministic_and_seed_dependent(noaa, tmp_path):
    a, _ = plan_splits(noaa, SplitSettings(seed=3))
    b, _ = plan_splits(noaa, SplitSettings(seed=3))
    c, _ = plan_splits(noaa, SplitSettings(seed=4))
    assert manifest_hash(a) == manifest_hash(b) != manifest_hash(c)
    write_manifest(tmp_path / "run", a, {"seed": 3})
    rows, header = read_manifest(tmp_path / "run")
    assert header["hash"] == manifest_hash(a) and header["seed"] == 3
    assert rows == a
    # resuming into the same folder with the same split is fine; another split fails loudly
    write_manifest(tmp_path / "run", b, {"seed": 3})
    with pytest.raises(SplitLeakError, match="already holds a different split"):
        write_manifest(tmp_path / "run", c, {"seed": 4})


def test_group_by_keeps_each_encounter_on_one_side(noaa):
    rows, _ = plan_splits(noaa, SplitSettings(seed=0, group_by="encounter_id"))
    where = defaultdict(set)
    for r in rows:
        if r["id_set"] == "ID1":
            where[r["group"]].add(r["split"])
    assert where and all(len(s) == 1 for s in where.values())
    # without group_by, photo-level splits do cut encounters (this fixture has 3 frames each)
    rows, _ = plan_splits(noaa, SplitSettings(seed=0))
    enc = defaultdict(set)
    for r in rows:
        if r["id_set"] == "ID1":
            enc[r["file"]].add(r["split"])
    assert all(len(s) == 1 for s in enc.values())


def test_augmented_copies_stay_in_their_photos_split(noaa):
    rows, info = plan_splits(noaa, SplitSettings(seed=0, images_per_identity=30))
    split_of = defaultdict(set)
    for r in rows:
        split_of[(r["catalog"], r["file"])].add(r["split"])
    assert all(len(s) == 1 for s in split_of.values())
    per = defaultdict(int)
    for r in rows:
        if r["id_set"] == "ID1":
            per[(r["identity"], r["split"])] += 1
    assert set(per.values()) == {10}  # 30 per individual, a third per split
    augs = {r["aug"].split(":")[0] for r in rows if r["aug"]}
    assert {"rot90", "rot180", "rot270", "rot330", "bright", "hflip"} <= augs
    assert len({r["sample_id"] for r in rows}) == len(rows)
    verify_manifest(rows)


def test_guard_fires_on_planted_identity_overlap(noaa):
    rows, _ = plan_splits(noaa, SplitSettings(seed=0))
    victim = next(r for r in rows if r["id_set"] == "ID2")
    planted = [dict(r) for r in rows]
    planted.append({**victim, "id_set": "ID3", "split": "eval", "set": "eval", "file": "x.jpg"})
    with pytest.raises(SplitLeakError, match=f"identity '{victim['identity']}'.*disjoint"):
        verify_manifest(planted)


def test_guard_fires_on_planted_file_overlap(noaa):
    rows, _ = plan_splits(noaa, SplitSettings(seed=0))
    train = next(r for r in rows if r["split"] == "train")
    planted = rows + [{**train, "split": "test", "set": "eval", "aug": "rot90"}]
    with pytest.raises(SplitLeakError, match=f"photo '{train['file']}'.*splits"):
        verify_manifest(planted)


def test_guard_fires_on_byte_identical_images(tmp_path):
    root = folder_catalog(tmp_path, n_ind=9, n_enc=3, per_enc=2)
    dm = WhaleDataModule(root=str(root), format="folder")
    rows = dm.plan()
    train = next(r for r in rows if r["split"] == "train")
    test = next(r for r in rows if r["split"] == "test")
    shutil.copy(root / train["file"], root / test["file"])  # same bytes, another file name
    with pytest.raises(SplitLeakError, match="byte-identical images"):
        dm.verify()


def test_external_nonmembers_from_another_catalog(tmp_path):
    main = read_folder(folder_catalog(tmp_path / "main", n_ind=9))
    other = read_noaa(noaa_catalog(tmp_path / "other", n_ind=6))
    other.name = "external"
    rows, info = plan_splits(main, SplitSettings(seed=0, nonmember_use="attack"), external=other)
    assert {r["catalog"] for r in rows if r["id_set"] == "ID2"} == {"external"}
    assert {r["catalog"] for r in rows if r["id_set"] != "ID2"} == {"main"}
    assert info["n_individuals"]["ID2"] == info["n_individuals"]["ID1"]
    verify_manifest(rows)


def test_evaluation_loaders_leave_the_global_rng_alone(tmp_path):
    """How often the monitor scores the probe rows must not shift the training shuffles."""
    import torch

    dm = WhaleDataModule(root=str(folder_catalog(tmp_path, n_ind=9)), image_size=16, num_workers=0)
    torch.manual_seed(0)
    expected = torch.rand(1)
    torch.manual_seed(0)
    next(iter(dm.probe_loader(dm.probe_rows())))
    next(iter(dm.val_dataloader()))
    assert torch.equal(torch.rand(1), expected)
