"""The time split protocol (``data.split.split_protocol: time``, datamodules/split_protocols.py):
the catalog is the photos before the cutoff, the default cutoff, bad settings, and the manifest of
a Where's Whale-do catalog (the date cells: tests/test_catalog_cells.py)."""

from __future__ import annotations

import csv

import pytest

from datamodules.errors import DataError
from datamodules.splits import SplitSettings, plan_splits


def test_time_protocol_builds_the_catalog_from_earlier_dates(dated_catalog):
    cat = dated_catalog()
    s = SplitSettings(group_by="encounter_id", split_protocol="time", time_cutoff="2018-01-01")
    rows, info = plan_splits(cat, s)
    date = {r.file: r.meta["date"] for r in cat.records}
    assert info["time_cutoff"] == "2018-01-01"
    assert sorted(info["class_names"]) == ["w0", "w1", "w2", "w3"]
    for r in rows:
        before = date[r["file"]] < "2018-01-01"
        assert (r["split"] == "train") == before  # the catalog is exactly the earlier photos
        if r["role"] == "nonmember":
            assert r["identity"] in {"w4", "w5", "w6", "w7"}
    later = {}
    for r in rows:
        if r["split"] in ("val", "test"):
            later.setdefault(r["group"], set()).add(r["split"])
    assert later and all(len(v) == 1 for v in later.values())  # encounters stay whole
    assert {r["split"] for r in rows} == {"train", "val", "test", "attack", "eval"}
    assert rows == plan_splits(cat, s)[0]  # deterministic


@pytest.mark.parametrize(
    ("photo_fractions", "cutoff", "n_before"),
    [
        (None, "2018-08-02", 12),  # the default thirds: after the 12 photos of 2017
        ((0.5, 0.25, 0.25), "2019-08-01", 18),  # after the 12 + 6 photos of 2017 and 2018
    ],
)
def test_time_protocol_default_cutoff_and_errors(dated_catalog, photo_fractions, cutoff, n_before):
    """Without ``time_cutoff`` the cutoff is the date below which ``photo_fractions[0]`` of the
    36 photos lie (12 in 2017, 6 in 2018, 18 in 2019)."""
    cat = dated_catalog()
    fractions = {} if photo_fractions is None else {"photo_fractions": photo_fractions}
    s = SplitSettings(split_protocol="time", **fractions)
    rows, info = plan_splits(cat, s)
    assert info["time_cutoff"] == cutoff
    assert sum(r.meta["date"] < cutoff for r in cat.records) == n_before
    assert n_before == round(s.photo_fractions[0] * len(cat.records))
    assert sorted(info["class_names"]) == ["w0", "w1", "w2", "w3"]  # w4-w7: first seen in 2019
    assert sum(r["split"] == "train" for r in rows) == n_before  # the catalog: photos before it
    with pytest.raises(DataError, match="time_cutoff"):
        plan_splits(cat, SplitSettings(split_protocol="time", time_cutoff="2016-01-01"))
    with pytest.raises(DataError, match="time_column"):
        plan_splits(cat, SplitSettings(split_protocol="time", time_column="when"))


def test_time_protocol_on_a_noaa_catalog_is_in_the_manifest(tmp_path, noaa_catalog):
    from datamodules.catalogs import NoaaReader
    from datamodules.manifest import read_manifest
    from datamodules.whale import LoaderSettings, WhaleDataModule

    root = noaa_catalog(tmp_path / "cat", n_ind=9, n_enc=3)

    def module(cutoff):
        return WhaleDataModule(
            NoaaReader(),
            root=str(root),
            split=SplitSettings(split_protocol="time", group_by="encounter_id", time_cutoff=cutoff),
            loader=LoaderSettings(image_size=16, cache_dir=None),
        )

    with pytest.raises(DataError, match="first seen"):
        module("2019-08-02").plan()  # every whale is seen on the first day: nobody is new
    meta = list(csv.DictReader((root / "metadata.csv").open()))
    for r in meta:  # whales 6-8 are first seen in September
        if r["whale_id"] >= "whale006":
            r["date"] = r["date"].replace("-08-", "-09-")
    with (root / "metadata.csv").open("w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(meta[0]))
        w.writeheader()
        w.writerows(meta)
    dm = module("2019-08-03")
    dm.write_manifest(tmp_path / "run")
    rows, header = read_manifest(tmp_path / "run")
    assert header["time_cutoff"] == "2019-08-03"
    assert header["settings"]["split_protocol"] == "time"
    assert {r["identity"] for r in rows if r["role"] == "nonmember"} <= {
        "whale006",
        "whale007",
        "whale008",
    }
    assert {r["split"] for r in rows if r["role"] == "member"} == {"train", "val", "test"}
