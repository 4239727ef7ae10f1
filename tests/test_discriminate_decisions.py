"""The decision rules of `cli.py discriminate` by hand (no run folder): when an operating point
can separate, `undecided`, the note of an encounter that contradicts its photos, the
out-of-distribution floor, a reversed calibration kept increasing, and the output tables' ranks
and 3-decimal scores."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest

from attacks import open_set as osm
from attacks.known_new_levels import decide, increasing, separable
from experiments.known_new.decisions import fit_health_warning, ood_floor, vote_note
from experiments.known_new.tables import encounter_table, photo_table


@pytest.mark.parametrize(
    "tpr, fpr, auroc, ok, why",
    [
        ([0.8, 0.6, 0.9], [0.05, 0.0, 0.1], [0.9, 0.8, 0.95], True, ""),
        ([0.0, 0.0, 0.0], [0.0, 0.0, 0.0], [0.656, 0.344, 0.839], False, "TPR 0.000"),
        ([0.5, 0.2, 0.7], [0.05, 0.0, 0.1], [0.7, 0.5, 0.9], False, "reaches chance"),
        ([0.5, 0.04, 0.7], [0.05, 0.0, 0.1], [0.9, 0.6, 0.95], False, "does not exceed FPR"),
        ([0.5, np.nan, np.nan], [0.05, 0.0, 0.1], [0.9, np.nan, np.nan], False, "chance"),
    ],
)
def test_separable_needs_auroc_and_tpr_intervals_clear_of_chance(tpr, fpr, auroc, ok, why):
    got, reason = separable(tpr, fpr, auroc)
    assert got is ok and why in reason


def test_the_tpr_interval_must_also_clear_the_target_fpr():
    tpr, fpr, auroc = [0.5, 0.08, 0.7], [0.0, 0.0, 0.0], [0.9, 0.6, 0.95]
    assert separable(tpr, fpr, auroc)[0] and separable(tpr, fpr, auroc, 0.05)[0]
    ok, why = separable(tpr, fpr, auroc, 0.1)
    assert not ok and "does not exceed FPR 0.100" in why


def test_decide_known_new_or_undecided():
    p = np.array([0.2, 0.5, 0.9])
    assert list(decide(p, 0.5, True)) == ["new", "known", "known"]
    assert list(decide(p, 0.5, False)) == ["undecided"] * 3


def test_an_encounter_that_contradicts_its_photos_says_why():
    """(c) six photos known, the encounter's mean score just below its own threshold."""
    assert vote_note(6, 0, "new", -0.0015, "mean") == (
        "6 of 6 photos known; the mean score is 0.002 below the encounter threshold"
    )
    assert vote_note(1, 3, "known", 0.01, "max").startswith("1 of 4 photos known; the max score")
    assert vote_note(4, 2, "known", 0.1, "mean") == ""  # agrees with most photos
    assert vote_note(2, 2, "new", -0.1, "mean") == ""  # no majority
    assert vote_note(0, 0, "undecided", -0.1, "mean") == ""
    folder = Path("/imgs")
    good = [folder / "e" / f"{i}.jpg" for i in range(6)]
    enc_of = {p: "e" for p in good} | {folder / "e" / "bad.jpg": "e", folder / "x.jpg": "x.jpg"}
    res = {
        "good": good,
        "enc": np.array(["e"] * 6),
        "p": np.full(6, 0.52),
        "dec": np.array(["known"] * 6, dtype=object),
        "flag": np.array([""] * 6, dtype=object),
        "note": np.array([""] * 6, dtype=object),
        "enc_names": ["e"],
        "enc_p": np.array([0.5112]),
        "enc_dec": np.array(["new"], dtype=object),
    }
    bad = {folder / "e" / "bad.jpg": "corrupt", folder / "x.jpg": "corrupt"}
    rows = encounter_table(res, bad, enc_of, 0.5127, "mean")
    assert rows[0]["decision"] == "new" and rows[0]["n_known_photos"] == 6
    assert (
        rows[0]["note"]
        == "6 of 6 photos known; the mean score is 0.002 below the encounter threshold"
    )
    assert rows[0]["margin"] == pytest.approx(-0.0015)
    assert rows[1] | {} == {
        "encounter": "x.jpg", "n_photos": 0, "n_known_photos": 0, "decision": "skipped",
        "rule": "mean", "flag": "unreadable", "note": "no readable photo",
    }  # fmt: skip
    photos = photo_table(res, bad, folder, enc_of)
    assert photos[6] == {
        "photo": "e/bad.jpg", "encounter": "e", "decision": "skipped", "flag": "unreadable",
        "note": "corrupt",
    }  # fmt: skip
    res["flag"][0] = "out_of_distribution"  # one flagged photo: the encounter is undecided
    row = encounter_table(res, {}, enc_of, 0.5127, "mean")[0]
    assert (row["decision"], row["flag"]) == ("undecided", "out_of_distribution")
    assert row["note"] == "1 of 6 photos flagged out_of_distribution"


def test_the_ood_floor_is_the_first_percentile_of_held_out_photos():
    held = np.linspace(0.0, 1.0, 101)
    assert ood_floor(held) == pytest.approx(0.01)
    assert np.isnan(ood_floor(np.array([np.nan])))


def test_a_reversed_calibration_stays_increasing():
    s = np.array([0.0, 1.0, 2.0, 3.0])
    reversed_fit = osm.fit_platt(s, np.array([1, 1, 0, 0]))
    assert reversed_fit.a < 0
    flat = increasing(reversed_fit, s)
    p = flat(s)
    assert np.all(np.diff(p) > 0) and np.allclose(p, 0.5, atol=1e-5)
    good = osm.fit_platt(s, np.array([0, 0, 1, 1]))
    assert increasing(good, s) is good


def test_fit_health_at_chance_is_a_warning(tmp_path):
    assert fit_health_warning(tmp_path) is None
    (tmp_path / "fit_health.json").write_text(json.dumps({"at_chance": False}))
    assert fit_health_warning(tmp_path) is None
    (tmp_path / "fit_health.json").write_text(json.dumps({"at_chance": True}))
    assert "chance level" in fit_health_warning(tmp_path)
    (tmp_path / "fit_health.json").write_text("{not json")
    assert "unreadable" in fit_health_warning(tmp_path)


def test_tables_rank_by_p_known_and_round_to_3_decimals(tmp_path):
    from experiments.known_new.output_folder import COLUMNS, write_table

    rows = [
        {"photo": "a.jpg", "encounter": "a", "p_known": 0.12345, "decision": "new"},
        {"photo": "b.jpg", "encounter": "b", "p_known": 0.9, "decision": "known"},
        {"photo": "c.txt", "encounter": "", "p_known": None, "decision": "skipped"},
    ]
    write_table(tmp_path / "photos.csv", rows, "photos")
    with (tmp_path / "photos.csv").open() as fh:
        got = list(csv.DictReader(fh))
    assert list(got[0]) == COLUMNS["photos"]
    assert [(r["p_known"], r["rank"]) for r in got] == [("0.123", "2"), ("0.900", "1"), ("", "")]


def test_help_lists_every_choice():
    from experiments.commands.discriminate import parser
    from experiments.known_new.classifier_scorer import ATTACK_CHOICES

    text = " ".join(parser().format_help().split())
    assert "{" + ",".join(ATTACK_CHOICES) + "}" in text
    for choices in ("{auto,mean,max,mean_embedding,vote}", "{auto,onnx,torch}", "{skip,error}"):
        assert choices in text, choices
    for flag in ("--overwrite", "--quiet", "--force_decisions", "--no_overwrite"):
        assert flag in text
