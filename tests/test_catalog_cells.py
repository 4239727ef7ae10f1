"""Cell values of every catalog reader (identity, encounter, viewpoint, header, folder names) and
the dates of the time protocol: one animal is never split in two, and bad cells are one line."""

from __future__ import annotations

import csv
import unicodedata
from pathlib import Path

import pytest

from datamodules.catalogs import (
    Catalog,
    FolderReader,
    HappywhaleReader,
    NoaaReader,
    Record,
    group_key,
)
from datamodules.cells import parse_date
from datamodules.errors import DataError
from datamodules.splits import SplitSettings, plan_splits
from tests.cli_checks import one_error_line as refused


def rewrite(path: Path, edit) -> None:
    """Apply ``edit(rows)`` to the CSV ``path`` (a list of dicts) and write it back."""
    with path.open(newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    edit(rows)
    with path.open("w", newline="", encoding="utf-8") as fh:
        w = csv.DictWriter(fh, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)


def one_line(exc: pytest.ExceptionInfo) -> str:
    msg = str(exc.value)
    assert "\n" not in msg and "\r" not in msg, msg
    return msg


def catalog_fit_args(tmp: Path, root: Path, reader: str, tiny_args, *extra: str) -> list[str]:
    """``tiny_args`` with the synthetic reader swapped for ``reader`` on ``root``."""
    args, out, i = tiny_args(tmp, 1), [], 0
    while i < len(args):
        if args[i].startswith("--data.init_args.reader.init_args."):
            i += 2
            continue
        out.append(args[i])
        i += 1
    return out + [
        "--data.init_args.reader",
        f"datamodules.catalogs.{reader}",
        "--data.init_args.root",
        str(root),
        "--data.init_args.loader.cache_dir",
        "null",
        *extra,
    ]


# ---- identities: whitespace is stripped, the animal stays one ----------------------------------


def test_trailing_space_keeps_one_animal_in_one_identity_set(tmp_path, noaa_catalog):
    root = noaa_catalog(tmp_path, n_ind=9, n_enc=3, per_enc=2)

    def pad(rows):  # three rows of whale003 carry a trailing space, one a leading one
        for r in [r for r in rows if r["whale_id"] == "whale003"][:3]:
            r["whale_id"] += " "
        rows[0]["whale_id"] = " " + rows[0]["whale_id"]

    rewrite(root / "metadata.csv", pad)
    cat = NoaaReader().read(root)
    assert len(cat.identities()) == 9 and cat.identities()["whale003"] == 6
    assert all(r.identity == r.identity.strip() for r in cat.records)
    rows, _ = plan_splits(cat, SplitSettings(seed=1))
    sets = {r["id_set"] for r in rows if r["identity"] == "whale003"}
    assert len(sets) == 1  # never both known (ID2) and new (ID3)


def test_encounter_viewpoint_and_species_cells_are_stripped(tmp_path, noaa_catalog):
    root = noaa_catalog(tmp_path / "noaa", n_ind=3, n_enc=2, per_enc=2)

    def pad(rows):
        rows[0]["encounter_id"] += "  "
        rows[1]["viewpoint"] = " " + rows[1]["viewpoint"]
        rows[1]["date"] += " "  # any column can be group_by

    rewrite(root / "metadata.csv", pad)
    cat = NoaaReader().read(root)
    assert cat.records[0].group == cat.records[1].group == "whale000-000"
    assert cat.records[0].meta["encounter_id"] == "whale000-000"
    assert group_key(cat.records[0], "date") == group_key(cat.records[1], "date") == "2019-08-01"
    assert len(NoaaReader(viewpoint="top").read(root).records) == sum(
        r.viewpoint == "top" for r in cat.records
    )


def test_happywhale_identity_whitespace_and_unicode_forms_are_one(tmp_path, happywhale_catalog):
    root = happywhale_catalog(tmp_path, n_ind=3, per_ind=4)
    nfc = unicodedata.normalize("NFC", "baleine_é")

    def edit(rows):
        for k, r in enumerate(r for r in rows if r["individual_id"] == "hw001"):
            r["individual_id"] = unicodedata.normalize("NFD" if k % 2 else "NFC", "baleine_é")
            r["individual_id"] += " " * (k % 2)
        rows[-1]["species"] += " "

    rewrite(root / "train.csv", edit)
    cat = HappywhaleReader(species="bottlenose_dolphin").read(root)
    assert len(cat.records) == 4
    ids = HappywhaleReader().read(root).identities()
    assert ids[nfc] == 4 and len(ids) == 4


# ---- control characters, empty identities, duplicate columns: refused -------------------------


@pytest.mark.parametrize("bad", ["whale001\t", "whale\x00001", "whale\u200b001", "\ufeffwhale001"])
def test_control_characters_in_an_identity_are_refused(tmp_path, noaa_catalog, bad):
    root = noaa_catalog(tmp_path, n_ind=3, n_enc=2, per_enc=2)
    rewrite(root / "metadata.csv", lambda rows: rows[4].update(whale_id=bad))
    with pytest.raises(DataError) as exc:
        NoaaReader().read(root)
    msg = one_line(exc)
    assert f"metadata.csv, line 6: column 'whale_id' value {bad!r}" in msg
    assert "U+" in msg and "Remove" in msg


def test_a_newline_inside_a_quoted_cell_is_refused_on_one_line(tmp_path, noaa_catalog):
    root = noaa_catalog(tmp_path, n_ind=3, n_enc=2, per_enc=2)
    rewrite(root / "metadata.csv", lambda rows: rows[2].update(encounter_id="whale000\n-001"))
    with pytest.raises(DataError) as exc:
        NoaaReader().read(root)
    assert "column 'encounter_id' value 'whale000\\n-001'" in one_line(exc)


@pytest.mark.parametrize("column", ["encounter_id", "viewpoint"])
def test_control_characters_in_encounter_and_viewpoint_are_refused(tmp_path, noaa_catalog, column):
    root = noaa_catalog(tmp_path, n_ind=3, n_enc=2, per_enc=2)
    rewrite(root / "metadata.csv", lambda rows: rows[1].update({column: "a\u200bb"}))
    with pytest.raises(DataError, match=rf"line 3: column '{column}' value 'a\\u200bb'"):
        NoaaReader().read(root)


def test_happywhale_control_character_and_empty_identity(tmp_path, happywhale_catalog):
    root = happywhale_catalog(tmp_path, n_ind=3, per_ind=4)
    rewrite(root / "train.csv", lambda rows: rows[0].update(individual_id="hw\x07000"))
    with pytest.raises(DataError, match=r"train.csv, line 2: column 'individual_id'"):
        HappywhaleReader().read(root)
    rewrite(root / "train.csv", lambda rows: rows[0].update(individual_id="   "))
    with pytest.raises(DataError) as exc:
        HappywhaleReader().read(root)
    assert "train.csv, line 2: column 'individual_id' is empty ('   ')" in one_line(exc)


def test_two_columns_with_one_name_are_refused(tmp_path, noaa_catalog):
    root = noaa_catalog(tmp_path, n_ind=3, n_enc=2, per_enc=2)
    path = root / "metadata.csv"
    lines = path.read_text().splitlines()
    path.write_text(
        "\n".join([lines[0] + ",whale_id"] + [line + ",other" for line in lines[1:]]) + "\n"
    )
    with pytest.raises(DataError) as exc:
        NoaaReader().read(root)
    msg = one_line(exc)
    assert str(path) in msg and "two columns named 'whale_id'" in msg
    assert "column 8 'whale_id' and column 10 'whale_id'" in msg
    path.write_text("\n".join([lines[0] + ",whale_id "] + [x + ",o" for x in lines[1:]]) + "\n")
    with pytest.raises(DataError, match=r"column 10 'whale_id '"):
        NoaaReader().read(root)


def test_unnamed_trailing_columns_may_repeat(tmp_path, noaa_catalog):
    root = noaa_catalog(tmp_path, n_ind=3, n_enc=2, per_enc=2)
    path = root / "metadata.csv"
    lines = path.read_text().splitlines()
    path.write_text("\n".join(line + ",," for line in lines) + "\n")
    assert len(NoaaReader().read(root).records) == 12


def test_identity_cell_refused_through_the_cli_leaves_no_run(
    tmp_path, noaa_catalog, tiny_args, capsys
):
    root = noaa_catalog(tmp_path / "cat", n_ind=9)
    rewrite(root / "metadata.csv", lambda rows: rows[3].update(whale_id="whale001\t"))
    line = refused(catalog_fit_args(tmp_path, root, "NoaaReader", tiny_args), capsys)
    assert "metadata.csv, line 5: column 'whale_id' value 'whale001\\t'" in line
    assert not (tmp_path / "logs").exists() or not any((tmp_path / "logs").rglob("version_*"))


# ---- folder names -----------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["ind_01 ", " ind_01", "ind\t01", "ind\u200b01"])
def test_folder_names_with_hidden_characters_are_refused(tmp_path, folder_catalog, name):
    root = folder_catalog(tmp_path / "cat", n_ind=3, n_enc=2, per_enc=2)
    (root / "ind_01").rename(root / name)
    with pytest.raises(DataError) as exc:
        FolderReader().read(root)
    msg = one_line(exc)
    assert msg.startswith(f"{root}: the individual folder {name!r}") and "Rename" in msg


def test_encounter_folder_with_trailing_space_is_refused(tmp_path, folder_catalog):
    root = folder_catalog(tmp_path / "cat", n_ind=3, n_enc=2, per_enc=2)
    (root / "ind_02" / "enc_1").rename(root / "ind_02" / "enc_1 ")
    with pytest.raises(DataError) as exc:
        FolderReader().read(root)
    assert f"{root / 'ind_02'}: the encounter folder 'enc_1 '" in one_line(exc)


def test_folder_name_refused_through_the_cli(tmp_path, folder_catalog, tiny_args, capsys):
    root = folder_catalog(tmp_path / "cat", n_ind=9)
    (root / "ind_04").rename(root / "ind_04 ")
    line = refused(catalog_fit_args(tmp_path, root, "FolderReader", tiny_args), capsys)
    assert "the individual folder 'ind_04 ' has whitespace at its start or end" in line


# ---- dates ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2017-08-29", "2017-08-29T00:00:00"),
        (" 2017-08-29 ", "2017-08-29T00:00:00"),
        ("2017-08-29T10:00:00", "2017-08-29T10:00:00"),
        ("2017-08-29 10:00:00", "2017-08-29T10:00:00"),
        ("20170829", "2017-08-29T00:00:00"),
        ("2017-08-30T01:00:00+02:00", "2017-08-29T23:00:00"),
        ("2017-08-29T10:00:00Z", "2017-08-29T10:00:00"),
    ],
)
def test_iso_dates_are_parsed(text, expected):
    assert parse_date(text, source="x").isoformat() == expected


@pytest.mark.parametrize("bad", ["n/a", "29/08/2017", "2019-13-45", "2017-8-29", ""])
def test_a_date_that_is_not_iso_is_refused_naming_row_and_value(tmp_path, noaa_catalog, bad):
    root = noaa_catalog(tmp_path, n_ind=9, n_enc=3, per_enc=2)
    rewrite(root / "metadata.csv", lambda rows: rows[7].update(date=bad))
    settings = SplitSettings(split_protocol="time", group_by="encounter_id")
    with pytest.raises(DataError) as exc:
        plan_splits(NoaaReader().read(root), settings)
    msg = one_line(exc)
    assert "metadata.csv, line 9" in msg and "images/train0007.jpg" in msg
    if bad:
        assert f"value {bad!r} is not an ISO 8601 date" in msg and "YYYY-MM-DD" in msg
    else:
        assert "no 'date' value" in msg


def test_a_bad_cutoff_is_refused():
    with pytest.raises(DataError) as exc:
        plan_splits(_dated(), SplitSettings(split_protocol="time", time_cutoff="30/08/2017"))
    assert one_line(exc).startswith("data.split.time_cutoff: value '30/08/2017' is not an ISO")


def _dated(first: str = "20170829", later: str = "2019-08-01") -> Catalog:
    """w0-w3 seen first on ``first`` (w0-w2 again on ``later``), w4-w7 first seen on ``later``."""
    recs = []
    for i in range(8):
        for e, day in enumerate([first, later] if i < 3 else [first] if i == 3 else [later]):
            for f in range(3):
                meta = {"date": day, "encounter_id": f"w{i}-{e}"}
                recs.append(Record(f"w{i}_{e}_{f}.jpg", f"w{i}", f"w{i}-{e}", None, meta))
    return Catalog(root=Path("/nowhere"), records=recs)


@pytest.mark.parametrize("first", ["20170829", "2017-08-30T01:00:00+02:00", "2017-W35-2"])
def test_a_whale_seen_before_the_cutoff_is_never_new(first):
    # as text, "20170829" and "2017-W35-2" sort after "2017-08-30", and the offset time reads as
    # the 30th: a string comparison would make w0-w3 new whales
    s = SplitSettings(split_protocol="time", group_by="encounter_id", time_cutoff="2017-08-30")
    rows, info = plan_splits(_dated(first), s)
    assert sorted(info["class_names"]) == ["w0", "w1", "w2", "w3"]
    assert {r["identity"] for r in rows if r["role"] == "nonmember"} <= {"w4", "w5", "w6", "w7"}
    assert info["time_cutoff"] == "2017-08-30"


def test_default_cutoff_is_a_date_as_written():
    s = SplitSettings(split_protocol="time", photo_fractions=(0.5, 0.25, 0.25))
    _, info = plan_splits(_dated(later=" 2019-08-01T00:00:00"), s)
    assert info["time_cutoff"] == "2019-08-01T00:00:00"
    assert sorted(info["class_names"]) == ["w0", "w1", "w2", "w3"]


def test_a_bad_date_is_refused_through_the_cli(tmp_path, noaa_catalog, tiny_args, capsys):
    root = noaa_catalog(tmp_path / "cat", n_ind=9)
    rewrite(root / "metadata.csv", lambda rows: rows[5].update(date="n/a"))
    extra = ["--data.init_args.split.split_protocol", "time"]
    extra += ["--data.init_args.split.group_by", "encounter_id"]
    line = refused(catalog_fit_args(tmp_path, root, "NoaaReader", tiny_args, *extra), capsys)
    assert "metadata.csv, line 7" in line and "'n/a' is not an ISO 8601 date" in line
    assert "write dates as YYYY-MM-DD" in line
    assert not (tmp_path / "logs").exists() or not any((tmp_path / "logs").rglob("version_*"))
