"""Encounters from EXIF capture times (datamodules/capture_time.py), on JPEGs written here with
the tags a camera writes."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

from datamodules.capture_time import (
    DATETIME_ORIGINAL,
    EXIF_IFD,
    NO_TIME_NOTE,
    group_by_capture_time,
    parse_exif_time,
)
from datamodules.errors import DataError

ROOT = Path(__file__).resolve().parent.parent
DATETIME = 306  # IFD0 DateTime: the file's last change, deliberately not read


def photo(folder: Path, name: str, original: str | None = None, datetime_tag: str | None = None):
    """A small JPEG ``folder/name`` with EXIF DateTimeOriginal (in the Exif IFD) and/or
    DateTime (IFD0) as given."""
    img = Image.new("RGB", (24, 16), (90, 120, 160))
    exif = img.getexif()
    if datetime_tag is not None:
        exif[DATETIME] = datetime_tag
    if original is not None:
        exif.get_ifd(EXIF_IFD)[DATETIME_ORIGINAL] = original
    path = folder / name
    img.save(path, "JPEG", exif=exif)
    return path


def test_written_exif_reads_back_as_datetime_original(tmp_path):
    """The helper writes the tag where cameras do (Exif IFD), so the tests below test reading."""
    p = photo(tmp_path, "a.jpg", "2024:07:01 10:32:05")
    with Image.open(p) as img:
        assert img.getexif().get_ifd(EXIF_IFD)[DATETIME_ORIGINAL] == "2024:07:01 10:32:05"


def test_gaps_split_encounters_at_more_than_gap_minutes(tmp_path):
    """Times (minutes after 10:00): 0, 10, 40 (gap 30 = gap: same), 71 (gap 31 > 30: new),
    75, then next day 09:00 (new). Input order shuffled; names from each first photo."""
    times = {
        "e.jpg": "2024:07:01 11:15:00",
        "a.jpg": "2024:07:01 10:00:00",
        "f.jpg": "2024:07:02 09:00:00",
        "c.jpg": "2024:07:01 10:40:00",
        "b.jpg": "2024:07:01 10:10:00",
        "d.jpg": "2024:07:01 11:11:00",
    }
    paths = [photo(tmp_path, n, t) for n, t in times.items()]
    enc, note = group_by_capture_time(paths, 30)
    got = {p.name: e for p, e in enc.items()}
    assert got == {
        "a.jpg": "t2024-07-01T10-00-00",
        "b.jpg": "t2024-07-01T10-00-00",
        "c.jpg": "t2024-07-01T10-00-00",
        "d.jpg": "t2024-07-01T11-11-00",
        "e.jpg": "t2024-07-01T11-11-00",
        "f.jpg": "t2024-07-02T09-00-00",
    }
    assert set(note.values()) == {""}
    assert list(enc) == paths  # one entry per input path, in input order


def test_a_smaller_gap_splits_more(tmp_path):
    """The same gaps (10, 30, 31, 4 minutes) with gap_minutes=10: 0|10 stay (10 = gap), 40 new,
    71 new, 75 joins 71 (4 <= 10). Fractional gaps in minutes work: 0.05 min = 3 s."""
    times = ["10:00:00", "10:10:00", "10:40:00", "11:11:00", "11:15:00"]
    paths = [photo(tmp_path, f"p{i}.jpg", f"2024:07:01 {t}") for i, t in enumerate(times)]
    enc, _ = group_by_capture_time(paths, 10)
    assert [enc[p] for p in paths] == [
        "t2024-07-01T10-00-00",
        "t2024-07-01T10-00-00",
        "t2024-07-01T10-40-00",
        "t2024-07-01T11-11-00",
        "t2024-07-01T11-11-00",
    ]
    burst = [
        photo(tmp_path, f"b{i}.jpg", f"2024:07:01 12:00:0{s}") for i, s in enumerate([0, 3, 7])
    ]
    enc, _ = group_by_capture_time(burst, 0.05)
    assert [enc[p] for p in burst] == ["t2024-07-01T12-00-00"] * 2 + ["t2024-07-01T12-00-07"]


def test_missing_exif_is_its_own_encounter_with_a_note(tmp_path):
    """No EXIF at all, and only IFD0 DateTime (not used as a fallback): each photo alone."""
    timed = [photo(tmp_path, f"t{i}.jpg", "2024:07:01 10:00:0" + str(i)) for i in range(2)]
    bare = tmp_path / "bare.jpg"
    Image.new("RGB", (8, 8)).save(bare)
    only_dt = photo(tmp_path, "only_datetime.jpg", None, "2024:07:01 10:00:01")
    png = tmp_path / "scan.png"
    Image.new("RGB", (8, 8)).save(png)
    enc, note = group_by_capture_time([*timed, bare, only_dt, png], 30)
    assert enc[timed[0]] == enc[timed[1]] == "t2024-07-01T10-00-00"
    assert enc[bare] == "no-time-bare.jpg"
    assert enc[only_dt] == "no-time-only_datetime.jpg"
    assert enc[png] == "no-time-scan.png"
    assert note[bare] == note[only_dt] == note[png] == NO_TIME_NOTE
    assert note[timed[0]] == ""


def test_same_file_name_in_two_folders_gets_two_encounters(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    one, two = tmp_path / "a" / "x.jpg", tmp_path / "b" / "x.jpg"
    for p in (one, two):
        Image.new("RGB", (8, 8)).save(p)
    enc, _ = group_by_capture_time([one, two], 30)
    assert enc[one] == "no-time-x.jpg" and enc[two] == "no-time-x.jpg-2"


@pytest.mark.parametrize(
    "value",
    [
        "0000:00:00 00:00:00",
        "    :  :     :  :  ",
        "2024-07-01 10:32:05",
        "2024:13:01 10:00:00",
        "yesterday",
        "",
    ],
)
def test_malformed_dates_are_noted_never_raised(tmp_path, value):
    good = photo(tmp_path, "good.jpg", "2024:07:01 10:00:00")
    bad = photo(tmp_path, "bad.jpg", value)
    enc, note = group_by_capture_time([good, bad], 30)
    assert enc[good] == "t2024-07-01T10-00-00"
    assert enc[bad] == "no-time-bad.jpg"
    assert note[bad].startswith(NO_TIME_NOTE)
    if value.strip():
        assert "malformed" in note[bad] and "YYYY:MM:DD HH:MM:SS" in note[bad]


def test_unreadable_and_missing_files_are_noted(tmp_path):
    junk = tmp_path / "junk.jpg"
    junk.write_bytes(b"not a jpeg at all")
    gone = tmp_path / "gone.jpg"
    enc, note = group_by_capture_time([junk, gone], 5)
    assert enc == {junk: "no-time-junk.jpg", gone: "no-time-gone.jpg"}
    assert "cannot read" in note[junk] and "cannot read" in note[gone]


def test_parse_exif_time_accepts_bytes_and_trailing_nul():
    t, n = parse_exif_time(b"2024:07:01 10:32:05\x00")
    assert n == "" and t.isoformat() == "2024-07-01T10:32:05"


@pytest.mark.parametrize("gap", [0, -5, float("nan"), "soon"])
def test_bad_gap_names_the_option(tmp_path, gap):
    with pytest.raises(DataError, match=r"--capture_gap") as err:
        group_by_capture_time([photo(tmp_path, "a.jpg", "2024:07:01 10:00:00")], gap)
    assert "\n" not in str(err.value)


def test_empty_list_groups_nothing():
    assert group_by_capture_time([], 30) == ({}, {})


def test_module_is_torch_free():
    code = (
        "import sys, datamodules.capture_time\n"
        "heavy = [m for m in ('torch', 'torchvision', 'pytorch_lightning') if m in sys.modules]\n"
        "assert not heavy, heavy\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-1500:]
