"""The subsampled catalog (data.split.member_fraction / max_train_groups) and the
known/new trend command (``cli.py openset_trend``)."""

from __future__ import annotations

import json

import pytest

from datamodules.catalogs import NoaaReader
from datamodules.errors import DataError
from datamodules.split_leak_checks import verify_manifest
from datamodules.splits import SplitSettings, plan_splits


@pytest.fixture(scope="module")
def catalog(tmp_path_factory, noaa_catalog):
    """12 whales x 6 encounters x 2 photos: known whales get 2 training encounters each."""
    root = noaa_catalog(tmp_path_factory.mktemp("trend") / "cat", n_ind=12, n_enc=6, per_enc=2)
    return NoaaReader().read(root)


def plan(catalog, **kw):
    return plan_splits(catalog, SplitSettings(group_by="encounter_id", **kw))


def known(rows, split=None):
    return {r["identity"] for r in rows if r["id_set"] == "ID1" and split in (None, r["split"])}


def train_groups(rows):
    return {(r["identity"], r["group"]) for r in rows if r["split"] == "train"}


def test_subsampling_is_seeded_nested_and_keeps_the_new_whales(catalog):
    full, info_full = plan(catalog)
    half, info = plan(catalog, member_fraction=0.5)
    assert half == plan(catalog, member_fraction=0.5)[0]  # same seed, same rows
    quarter, _ = plan(catalog, member_fraction=0.25)
    assert len(known(full)) == 4 and len(known(half)) == 2 and len(known(quarter)) == 1
    assert known(quarter) < known(half) < known(full)  # nested
    other, _ = plan(catalog, member_fraction=0.5, seed=1)
    assert {r["sample_id"] for r in other} != {r["sample_id"] for r in half}
    # the non-members are untouched, the kept whales keep all their rows, labels are 0..C-1
    assert [r for r in half if r["role"] == "nonmember"] == [
        r for r in full if r["role"] == "nonmember"
    ]
    assert {r["sample_id"] for r in half} <= {r["sample_id"] for r in full}
    assert info["class_names"] == sorted(known(half)) and info["n_individuals"]["ID1"] == 2
    assert {r["label"] for r in half if r["role"] == "member"} == {0, 1}
    assert info["subsample"]["dropped_individuals"] == sorted(known(full) - known(half))
    assert "subsample" not in info_full
    verify_manifest(half, protocol="group")


def test_max_train_groups_keeps_one_training_encounter_and_every_query(catalog):
    full, _ = plan(catalog)
    one, info = plan(catalog, max_train_groups=1)
    assert one == plan(catalog, max_train_groups=1)[0]
    per_whale = {i: {g for j, g in train_groups(full) if j == i} for i in known(full)}
    assert all(len(g) == 2 for g in per_whale.values())  # the test catalog gives 2 each
    kept = train_groups(one)
    assert len(kept) == 4 and kept <= train_groups(full)
    assert info["subsample"]["train_groups"] == {i: [g] for i, g in sorted(kept)}
    not_train = [r for r in full if r["split"] != "train"]
    assert [r for r in one if r["split"] != "train"] == not_train
    assert plan(catalog, max_train_groups=2)[0] == full  # as many as there are: all kept


def test_bad_subsampling_settings_name_the_keys(catalog):
    for kw in ({"member_fraction": 0.0}, {"member_fraction": 1.5}, {"max_train_groups": 0}):
        with pytest.raises(DataError, match="member_fraction"):
            plan(catalog, **kw)


def test_trend_points_vary_one_axis_at_a_time():
    from experiments.commands.openset_trend import parser, points, table_args
    from experiments.run.config_files import parse_options

    def parse(argv):
        return parse_options(parser(), argv)

    args = parse(["--root", "r", "--output", "o", "--image_size", "48", "64", "96"])
    pts = points(args)
    base = {"known_fraction": 1.0, "max_encounters": None, "image_size": 64, "epochs": 15}
    assert pts[0] == ("base", None, base)
    got = [(a, v) for a, v, _ in pts[1:]]
    assert got == [
        ("known_fraction", 0.25),
        ("known_fraction", 0.5),
        ("max_encounters", 1),
        ("max_encounters", 2),
        ("image_size", 48),
        ("image_size", 96),  # 64 is the base: not repeated
        ("epochs", 8),
        ("epochs", 30),
    ]
    for axis, value, settings in pts[1:]:
        assert settings == {**base, axis: value}
    skip = parse(["--root", "r", "--output", "o", "--skip_base", "--known_fraction", "--epochs"])
    assert [a for a, _, _ in points(skip)] == ["max_encounters"] * 2 + ["image_size"] * 2
    t = table_args(args, pts[3][2])
    assert (t.max_encounters, t.known_fraction, t.image_size, t.epochs) == (1, 1.0, 64, 15)
    assert t.attacks == ["baseline_msp", "baseline_nn_cosine"] and t.protocols == ["group"]


@pytest.mark.parametrize(
    "command, extra, says",
    [
        ("openset_trend", ["--protocol", "photo"], "--protocol photo: choose one of group, time"),
        ("openset_trend", ["--known_fraction", "1.5"], "--known_fraction 1.5: give a share"),
        ("openset_trend", ["--max_encounters", "0"], "--max_encounters 0: give a whole number"),
        ("openset_table", ["--targets", "vit"], "--targets vit: choose one of softmax-letterbox"),
        ("openset_table", ["--epochs", "0"], "--epochs 0: give a whole number"),
    ],
)
def test_bad_trend_and_table_options_are_one_line_and_exit_2(
    tmp_path, capsys, command, extra, says
):
    """Refused before any training: one line naming the option, exit 2, no output folder."""
    from cli import main

    out = tmp_path / "out"
    with pytest.raises(SystemExit) as exc:
        main([command, "--root", str(tmp_path), "--output", str(out), *extra])
    err = capsys.readouterr().err.strip()
    assert exc.value.code == 2 and err.startswith(f"error: {says}") and "\n" not in err
    assert not out.exists()


@pytest.mark.slow
def test_trend_runs_on_a_tiny_noaa_catalog(tmp_path, noaa_catalog, capsys):
    from cli import main

    root = noaa_catalog(tmp_path / "cat", n_ind=12, n_enc=6, per_enc=2)
    out = tmp_path / "trend"
    args = ["openset_trend", "--root", str(root), "--output", str(out), "--n_boot", "20"]
    args += ["--base_image_size", "16", "--base_epochs", "1", "--cache_dir", str(tmp_path / "c")]
    args += ["--known_fraction", "0.5", "--max_encounters", "1", "--image_size", "--epochs"]
    main(args)
    rows = json.loads((out / "trend.json").read_text())["rows"]
    assert [(r["axis"], r["value"]) for r in rows] == [
        ("base", None),
        ("known_fraction", 0.5),
        ("max_encounters", 1),
    ]
    base, half, one = rows
    assert (base["n_known_whales"], half["n_known_whales"]) == (4, 2)
    assert (base["n_train_encounters"], one["n_train_encounters"]) == (8, 4)
    for r in rows:
        assert set(r["attacks"]) == {"baseline_msp", "baseline_nn_cosine"}
        m = r["attacks"]["baseline_nn_cosine"]
        assert m["n_known"] > 0 and m["n_new"] > 0 and len(m["auroc"]) == 3
        assert r["wall_s"] > 0 and r["cpu_s"] > 0
        assert (out / r["folder"] / "split_manifest_group_softmax-letterbox.json").is_file()
    manifest = out / "known_fraction=0.5" / "split_manifest_group_softmax-letterbox.json"
    assert json.loads(manifest.read_text())["settings"]["member_fraction"] == 0.5
    assert "| known_fraction | 0.5 | 2 |" in (out / "trend.md").read_text()
    capsys.readouterr()
    with pytest.raises(SystemExit) as refused:
        main(args)
    err = capsys.readouterr().err.strip()
    assert refused.value.code == 2 and err == (
        f"error: --output {out}: already exists; give a new folder (nothing overwritten)."
    )
