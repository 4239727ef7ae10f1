"""Target/shadow split: disjoint buckets, whole groups, SynthText's first/next protocol, manifest."""

from __future__ import annotations

import hashlib
import json

import numpy as np
import pytest

from datamodules.detection.datamodule import DetectionDataModule, DetLoaderSettings
from datamodules.detection.records import DetRecord
from datamodules.detection.split import COLUMNS, DetSplitSettings, plan_detection_split
from datamodules.detection.synthetic import SyntheticVocReader
from datamodules.detection.synthtext import SynthTextReader
from datamodules.detection.voc import VocReader
from datamodules.errors import DataError, SplitLeakError
from datamodules.manifest import manifest_hash, read_manifest, write_manifest
from datamodules.split_leak_checks import verify_cross_runs, verify_detection_split


def _recs(n: int, group_size: int = 1) -> list[DetRecord]:
    box = np.array([[0, 0, 4, 4]], np.float32)
    return [
        DetRecord(
            f"im{i:03d}.jpg", 8, 8, box, ["a"], np.zeros(1, bool), group=f"g{i // group_size}"
        )
        for i in range(n)
    ]


def _buckets(rows):
    out = {}
    for r in rows:
        out.setdefault((r["side"], r["split"]), set()).add(r["file"])
    return out


@pytest.mark.parametrize("seed", [0, 1, 7])
def test_random_split_is_disjoint_and_seeded(seed):
    rows, info = plan_detection_split(_recs(40), DetSplitSettings(seed=seed), "voc")
    b = _buckets(rows)
    assert set(b) == {("target", "in"), ("target", "out"), ("shadow", "in"), ("shadow", "out")}
    assert all(len(v) == 10 for v in b.values())
    files = [f for v in b.values() for f in v]
    assert len(files) == len(set(files)) == 40
    target = b["target", "in"] | b["target", "out"]
    shadow = b["shadow", "in"] | b["shadow", "out"]
    assert not target & shadow
    assert all(r["role"] == ("member" if r["split"] == "in" else "nonmember") for r in rows)
    verify_detection_split(rows)
    again, _ = plan_detection_split(_recs(40), DetSplitSettings(seed=seed), "voc")
    assert again == rows
    other, _ = plan_detection_split(_recs(40), DetSplitSettings(seed=seed + 100), "voc")
    assert _buckets(other) != b


def test_groups_stay_in_one_bucket():
    rows, _ = plan_detection_split(_recs(60, group_size=3), DetSplitSettings(seed=2), "synthtext")
    where = {}
    for r in rows:
        where.setdefault(r["group"], set()).add((r["side"], r["split"]))
    assert all(len(v) == 1 for v in where.values())


def test_sequential_first_and_next(tmp_path, write_synthtext):
    write_synthtext(tmp_path, n_backgrounds=6, variants=3)
    recs = SynthTextReader().read(tmp_path).records
    s = DetSplitSettings(seed=0, protocol="sequential", n_target=7, n_shadow=5)
    rows, info = plan_detection_split(recs, s, "synthtext")
    order = [r.file for r in recs]
    target = [order.index(r["file"]) for r in rows if r["side"] == "target"]
    shadow = [order.index(r["file"]) for r in rows if r["side"] == "shadow"]
    # first 7 images, finished at the background boundary (3 variants each) -> 9; then next 5 -> 6
    assert sorted(target) == list(range(9)) and sorted(shadow) == list(range(9, 15))
    assert info["n_unused"] == 3
    verify_detection_split(rows)


def test_leaks_fail_loudly():
    rows, _ = plan_detection_split(_recs(20, group_size=2), DetSplitSettings(), "voc")
    bad = [dict(r) for r in rows]
    # move one image of a group to another bucket
    i = next(k for k, r in enumerate(bad) if r["side"] == "target")
    bad[i]["side"] = "shadow"
    with pytest.raises(SplitLeakError, match="must stay in one bucket"):
        verify_detection_split(bad)
    dup = rows + [dict(rows[0], side="shadow")]
    with pytest.raises(SplitLeakError, match="appears twice"):
        verify_detection_split(dup)
    hashes = {
        r["file"]: "same" if r["file"] in (rows[0]["file"], rows[-1]["file"]) else r["file"]
        for r in rows
    }
    if (rows[0]["side"], rows[0]["split"]) != (rows[-1]["side"], rows[-1]["split"]):
        with pytest.raises(SplitLeakError, match="byte-identical"):
            verify_detection_split(rows, hashes)
    with pytest.raises(DataError, match="at least 4"):
        plan_detection_split(_recs(3), DetSplitSettings(), "voc")


def test_cross_run_check():
    rows, _ = plan_detection_split(_recs(20), DetSplitSettings(seed=0), "voc")
    verify_cross_runs(rows, rows)  # same plan: target and shadow halves are disjoint
    other, _ = plan_detection_split(_recs(20), DetSplitSettings(seed=5), "voc")
    with pytest.raises(SplitLeakError, match="overlap"):
        verify_cross_runs(rows, other)


def test_manifest_written_and_checked(tmp_path):
    rows, _ = plan_detection_split(_recs(12), DetSplitSettings(), "voc")
    write_manifest(tmp_path, rows, {"seed": 0}, COLUMNS)
    back, header = read_manifest(tmp_path)
    assert [r["file"] for r in back] == [r["file"] for r in rows] and len(header["hash"]) == 64
    assert back == rows  # n_objects read back as int
    write_manifest(tmp_path, rows, {"seed": 0}, COLUMNS)  # same split: fine
    other, _ = plan_detection_split(_recs(12), DetSplitSettings(seed=3), "voc")
    with pytest.raises(SplitLeakError, match="already holds a different split"):
        write_manifest(tmp_path, other, {"seed": 3}, COLUMNS)


def test_datamodule_roles_share_one_plan(tmp_path, write_voc):
    write_voc(tmp_path / "voc", n=16)
    kw = dict(
        reader=VocReader(),
        root=str(tmp_path / "voc"),
        loader=DetLoaderSettings(image_size=32, batch_size=2, num_workers=0),
    )
    t = DetectionDataModule(role="target", **kw)
    s = DetectionDataModule(role="shadow", **kw)
    t.setup("fit")
    s.setup("fit")
    assert t.plan() == s.plan() and t.num_classes == 21  # VOC's 20 classes + background
    assert {r["file"] for r in t.signal_rows()}.isdisjoint({r["file"] for r in s.signal_rows()})
    assert {r["side"] for r in s.signal_rows()} == {"shadow"}
    images, targets, idx = next(iter(t.train_dataloader()))
    assert images[0].shape == (3, 32, 32) and targets[0]["boxes"].shape[1] == 4
    t.write_manifest(tmp_path / "run")
    header = json.loads((tmp_path / "run" / "split_manifest.json").read_text())
    assert header["counts"] == {"shadow_in": 4, "shadow_out": 4, "target_in": 4, "target_out": 4}
    assert header["reader_summary"] == "nothing skipped"


def test_datamodule_shows_skip_counts(tmp_path, write_voc):
    write_voc(tmp_path / "voc", n=10, broken_xml=("img_004",), missing_images=("img_007",))
    dm = DetectionDataModule(
        VocReader(on_invalid="skip"),
        root=str(tmp_path / "voc"),
        loader=DetLoaderSettings(num_workers=0),
    )
    with pytest.warns(
        UserWarning, match=r"skipped 2 images \(malformed XML: 1, missing image: 1\)"
    ):
        dm.setup("fit")
    dm.write_manifest(tmp_path / "run")
    header = json.loads((tmp_path / "run" / "split_manifest.json").read_text())
    assert header["reader"]["skipped_images"] == {"malformed XML": 1, "missing image": 1}
    with pytest.raises(DataError, match="img_004.xml"):
        DetectionDataModule(VocReader(), root=str(tmp_path / "voc")).setup("fit")


# ---- the planner's output is pinned: same seed, same manifest, byte for byte ---------------------


def _pin_records() -> list[DetRecord]:
    """40 images in groups of 3, 1-3 objects each."""
    out = []
    for i in range(40):
        k = i % 3 + 1
        out.append(
            DetRecord(
                f"img/{i:03d}.jpg",
                32,
                32,
                np.zeros((k, 4), np.float32),
                ["a"] * k,
                np.zeros(k, bool),
                group=f"bg{i // 3}",
                annotation=f"ann/{i:03d}.xml",
            )
        )
    return out


PIN_CASES = {
    "random": dict(seed=0),
    "random_frac": dict(seed=7, target_fraction=0.6, in_fraction=0.4),
    "sequential": dict(seed=1, protocol="sequential", n_target=12, n_shadow=10),
}
#: sha256 of (manifest CSV, json of the info dict), computed before the restructuring
PINNED = {
    "random": (
        "15b1640316a55a11b0b46f9dbc0c5e79e1784b7790e397075bffa0ad3b92ff9a",
        "13a3d6588cacf0aa97b72c7dc90fd383f90170d3a72f9c3ef4a778937ad2c596",
    ),
    "random_frac": (
        "9c06401869a6aa5568447972d2b80c1e432ef480feaba51dfe10951991b0378d",
        "da26b560e7c87c4c5366ab60838c1ac985cef7b2aea4a1aa4e0fb6142a259562",
    ),
    "sequential": (
        "6ce644da868cdb825fc6c2605b3e4dade9b8dafafe07d6e388afe03e25935fbd",
        "1b5147a892c2a3b0379e7f459ac8fbba27b0636875250cca9aa0705bafcfb91d",
    ),
}


#: the pins were taken when the ``side`` column was named ``set``: hash under the old name
BEFORE_COLUMNS = ["set" if c == "side" else c for c in COLUMNS]


def pinned_hash(rows: list[dict]) -> str:
    """The manifest hash of ``rows`` with the ``side`` column under its old name."""
    return manifest_hash([{**r, "set": r["side"]} for r in rows], BEFORE_COLUMNS)


@pytest.mark.parametrize("case", sorted(PIN_CASES))
def test_manifest_is_pinned(case):
    rows, info = plan_detection_split(
        _pin_records(), DetSplitSettings(**PIN_CASES[case]), "synthetic"
    )
    digest = hashlib.sha256(json.dumps(info, sort_keys=True).encode()).hexdigest()
    assert (pinned_hash(rows), digest) == PINNED[case]


def test_datamodule_manifest_is_pinned(tmp_path):
    """Reader -> plan through the datamodule on the generated VOC tree (hash taken before the
    reader objects replaced ``format``)."""
    dm = DetectionDataModule(
        SyntheticVocReader(n_images=24, image_size=48), root=str(tmp_path / "d")
    )
    assert pinned_hash(dm.plan()) == (
        "5afe64b315d89e2311e2f55af2eb4150869dc3d918ea5cda31679803cc364c68"
    )
    assert dm.class_names == ["circle", "square", "triangle", "cross"]
