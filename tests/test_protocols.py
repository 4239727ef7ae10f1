"""Split protocols (paper / photo / group), held-out encounters of the photo protocol, and the
protocol-study command."""

from __future__ import annotations

import json
from collections import defaultdict

import pytest

from datamodules.catalogs import Catalog, NoaaReader, Record
from datamodules.manifest import read_manifest
from datamodules.split_leak_checks import verify_manifest
from datamodules.splits import SplitSettings, plan_splits
from experiments.commands.study import StudySettings, run_study


@pytest.fixture(scope="module")
def noaa(tmp_path_factory, noaa_catalog):
    return NoaaReader().read(
        noaa_catalog(tmp_path_factory.mktemp("noaa"), n_ind=12, n_enc=4, per_enc=3)
    )


def plan(noaa, protocol):
    s = SplitSettings(
        seed=5, group_by="encounter_id", images_per_identity=30, split_protocol=protocol
    )
    return plan_splits(noaa, s)[0]


def test_in_train_count(rows) -> int:
    """Test rows whose original photo also has a copy in train, counted directly."""
    train = {r["file"] for r in rows if r["split"] == "train"}
    return sum(r["file"] in train for r in rows if r["split"] == "test")


test_in_train_count.__test__ = False  # a helper, not a test


def test_paper_protocol_puts_copies_of_one_original_in_train_and_test(noaa):
    rows = plan(noaa, "paper")
    n = test_in_train_count(rows)
    assert n > 0
    counts = verify_manifest(rows, protocol="paper")
    assert counts["paper_overlap_test_in_train"] == n
    assert counts["paper_test_rows"] == sum(r["split"] == "test" for r in rows)
    # every row names its original photo in `file`; the copies carry an aug spec
    assert all(r["file"] for r in rows)
    copies = [r for r in rows if r["aug"]]
    assert copies and {r["file"] for r in copies} <= {r["file"] for r in rows if not r["aug"]}
    assert len({(r["file"], r["aug"]) for r in rows}) == len(rows)
    # the paper protocol fails the leak guard of the other protocols, on purpose
    with pytest.raises(Exception, match="must sit in one split"):
        verify_manifest(rows, protocol="photo")


@pytest.mark.parametrize("protocol", ["photo", "group"])
def test_photo_and_group_have_no_original_on_both_sides(noaa, protocol):
    rows = plan(noaa, protocol)
    assert test_in_train_count(rows) == 0
    verify_manifest(rows, protocol=protocol)


def test_group_never_splits_an_encounter(noaa):
    rows = plan(noaa, "group")
    where = defaultdict(set)
    for r in rows:
        if r["id_set"] == "ID1":
            where[r["group"]].add(r["split"])
    assert where and all(len(s) == 1 for s in where.values())
    # the photo protocol with the same group column does cut encounters here
    rows = plan(noaa, "photo")
    where = defaultdict(set)
    for r in rows:
        if r["id_set"] == "ID1":
            where[r["group"]].add(r["split"])
    assert any(len(s) > 1 for s in where.values())


def test_all_protocols_give_the_same_identity_groups(noaa):
    groups = {
        p: sorted({(r["identity"], r["id_set"]) for r in plan(noaa, p)})
        for p in ("paper", "photo", "group")
    }
    assert groups["paper"] == groups["photo"] == groups["group"]


@pytest.mark.slow
def test_study_report_count_matches_manifest(tmp_path):
    attack_cfg = tmp_path / "attack_min.yaml"
    attack_cfg.write_text(
        "salem: {enabled: false}\nlabel_only: {enabled: false}\nensemble: {enabled: false}\n"
        "baselines: false\n"
    )
    fit_args = [
        "--trainer.max_epochs",
        "1",
        "--trainer.accelerator",
        "cpu",
        "--data.root",
        str(tmp_path / "catalog"),
        "--data.reader.n_individuals",
        "9",
        "--data.reader.encounters_per_individual",
        "3",
        "--data.reader.photos_per_encounter",
        "2",
        "--data.reader.image_size",
        "32",
        "--data.loader.image_size",
        "32",
        "--data.loader.num_workers",
        "0",
    ]
    study = run_study(
        StudySettings(
            attack_config=str(attack_cfg),
            images_per_identity=12,
            fit_args=fit_args,
            output=str(tmp_path / "study"),
        )
    )
    out = tmp_path / "study" / "version_0"
    assert (out / "report.md").is_file() and (out / "attack_auc.png").is_file()
    assert study["same_identity_groups"]
    saved = json.loads((out / "summary.json").read_text())["protocols"]
    rows, _ = read_manifest(out / "paper" / "version_0")
    assert saved["paper"]["paper_overlap_test_in_train"] == test_in_train_count(rows) > 0
    assert "yeom" in saved["photo"]["attacks"] and saved["group"]["test_acc"] is not None
    report = (out / "report.md").read_text()
    assert f"{test_in_train_count(rows)} of {sum(r['split'] == 'test' for r in rows)}" in report


def test_holdout_groups_sends_whole_encounters_to_test(dated_catalog):
    cat = dated_catalog()
    recs = [r for r in cat.records if r.identity in ("w0", "w1", "w2")] * 1
    more = [
        Record(f"x{i}_{e}_{f}.jpg", f"x{i}", f"x{i}-{e}", None, {})
        for i in range(6)
        for e in range(4)
        for f in range(3)
    ]
    cat = Catalog(cat.root, recs + more)
    s = SplitSettings(group_by="encounter", split_protocol="photo", holdout_groups=1)
    rows, _ = plan_splits(cat, s)
    members = [r for r in rows if r["role"] == "member"]
    for ident in {r["identity"] for r in members}:
        mine = [r for r in members if r["identity"] == ident]
        by_group: dict[str, set] = {}
        for r in mine:
            by_group.setdefault(r["group"], set()).add(r["split"])
        assert {"test"} in by_group.values()  # one encounter went to test whole
        assert {r["split"] for r in mine} == {"train", "val", "test"}
    plain, _ = plan_splits(cat, SplitSettings(group_by="encounter", split_protocol="photo"))
    assert plain != rows
