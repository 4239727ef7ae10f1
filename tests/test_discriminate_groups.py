"""``discriminate --groups``: the CSV's cells are checked as catalog cells are, line by line."""

from __future__ import annotations

from pathlib import Path

import pytest

from datamodules.errors import DataError
from experiments.known_new.scan import read_groups


@pytest.mark.parametrize(
    "text, message",
    [
        ('image,group\n"a.jpg,g\n', "line 2: 1 cells for 2 columns"),
        ("image,group\na.jpg,\n", "line 2"),
        ("image,group\n../x.jpg,g\n", "outside --images"),
        ("image,group\na.jpg,g1\na.jpg,g2\n", "line 3: image 'a.jpg' is in two groups"),
        ("image,group\na.jpg,g\x00\n", "line 2"),
        ("image,group,group\na.jpg,g,h\n", "group"),
        ("img,grp\na.jpg,g\n", "needs columns 'image' and 'group'"),
    ],
    ids=["unterminated", "empty_group", "escapes", "two_groups", "control", "dup_header", "cols"],
)
def test_bad_groups_csv_is_one_line_with_its_line(tmp_path, text, message):
    (tmp_path / "groups.csv").write_text(text)
    with pytest.raises(DataError, match=message) as err:
        read_groups(tmp_path / "groups.csv", tmp_path)
    assert "\n" not in str(err.value)


def test_groups_cells_are_stripped_and_a_bom_is_ignored(tmp_path):
    (tmp_path / "groups.csv").write_text("\ufeffimage,group,viewpoint\n a.jpg , g1 ,top\n")
    groups, views = read_groups(tmp_path / "groups.csv", tmp_path)
    assert groups == {(tmp_path / "a.jpg").resolve(): "g1"}
    assert views == {(tmp_path / "a.jpg").resolve(): "top"}


def test_a_missing_groups_file(tmp_path):
    with pytest.raises(DataError, match="file not found"):
        read_groups(Path(tmp_path / "none.csv"), tmp_path)
