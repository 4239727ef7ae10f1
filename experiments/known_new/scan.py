"""The files under ``cli.py discriminate --images``: which are photos, which cannot be read, and
the encounter (and, when given, the viewpoint) of each, readable or not. Torch-free."""

from __future__ import annotations

import csv
import warnings
from pathlib import Path

from datamodules.errors import DataError
from datamodules.image_check import check_images

#: ``--unreadable``: skip an unreadable photo (listed as skipped) or stop at it
UNREADABLE = ("skip", "error")

IMAGE_EXT = {".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp", ".gif"}
#: the ``flag`` of a file that was not scored, by the reason :func:`scan` gives
SKIP_FLAGS = {"corrupt": "unreadable", "not_an_image": "not_image"}


def scan(
    folder: Path, skip: set[Path] | None = None, unreadable: str = "skip"
) -> tuple[list[Path], dict[Path, str]]:
    """Readable images under ``folder`` and ``{path: status}`` for the rest (sorted paths):
    ``not_an_image`` (by extension) or ``corrupt`` (does not decode).

    Hidden files and the paths in ``skip`` (e.g. the groups CSV) are ignored. A corrupt image
    raises DataError with ``unreadable="error"``.
    """
    skip = {q.resolve() for q in (skip or set())}
    images, bad = [], {}
    for p in sorted(q for q in folder.rglob("*") if q.is_file()):
        if p.name.startswith(".") or p.resolve() in skip:
            continue
        if p.suffix.lower() not in IMAGE_EXT:
            bad[p] = "not_an_image"
            continue
        images.append(p)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the skipped files are listed in photos.csv instead
        good, unreadable_files = check_images(images, unreadable, option="--unreadable")
    bad.update(dict.fromkeys(unreadable_files, "corrupt"))
    return good, dict(sorted(bad.items()))


def read_groups(groups_csv: Path, folder: Path) -> tuple[dict[Path, str], dict[Path, str]]:
    """``({photo: group}, {photo: viewpoint})`` of a ``--groups`` CSV (columns ``image``,
    ``group``, optional ``viewpoint``); image paths relative to ``folder`` and inside it. Cells
    are cleaned as catalog cells are (:func:`datamodules.cells.clean_cell`); an empty image or
    group, a path outside ``folder`` or one image in two groups is refused with its line."""
    from datamodules.cells import clean_cell, refuse_duplicate_columns

    if not Path(groups_csv).is_file():
        raise DataError(f"--groups {groups_csv}: file not found")
    with Path(groups_csv).open(newline="", encoding="utf-8-sig") as fh:
        reader = csv.reader(fh)
        header = refuse_duplicate_columns(next(reader, []), groups_csv)
        if "image" not in header or "group" not in header:
            raise DataError(
                f"--groups {groups_csv}: needs columns 'image' and 'group' (and optionally "
                "'viewpoint')"
            )
        groups, views = {}, {}
        for cells in reader:
            where = f"--groups {groups_csv}, line {reader.line_num}"
            if len(cells) != len(header):
                raise DataError(f"{where}: {len(cells)} cells for {len(header)} columns")
            row = dict(zip(header, cells))
            image = clean_cell(row["image"], source=where, column="image", required=True)
            group = clean_cell(row["group"], source=where, column="group", required=True)
            path = (folder / image).resolve()
            if not path.is_relative_to(folder.resolve()):
                raise DataError(f"{where}: image {image!r} is outside --images {folder}")
            if groups.get(path, group) != group:
                raise DataError(f"{where}: image {image!r} is in two groups ({groups[path]!r})")
            groups[path] = group
            views[path] = clean_cell(row.get("viewpoint"), source=where, column="viewpoint")
    return groups, views


def capture_groups(paths: list[Path], gap_minutes: float) -> tuple[dict, dict]:
    """``({photo: encounter}, {photo: note})`` by capture time (:mod:`datamodules.capture_time`;
    a photo without a readable time is alone, with a note)."""
    try:
        from datamodules.capture_time import group_by_capture_time
    except ImportError as err:  # written by another module; say so instead of a traceback
        raise DataError(
            f"--capture_gap {gap_minutes}: grouping by capture time is not available ({err}); "
            "use encounter subfolders or --groups"
        ) from err
    out = group_by_capture_time(paths, gap_minutes)
    return out if isinstance(out, tuple) else (out, {})


def encounters_of(
    paths: list[Path],
    folder: Path,
    groups_csv: Path | None = None,
    capture_gap: float | None = None,
) -> tuple[dict[Path, str], dict[Path, str], dict[Path, str]]:
    """``({path: encounter}, {path: viewpoint}, {path: note})`` of every file ``paths``.

    The encounter is the ``--groups`` CSV's group, else the first subfolder under ``folder``;
    loose photos are grouped by capture time (``capture_gap`` minutes) when it is given (the note
    says when a photo has no readable time), else each is its own encounter (named by its path;
    a loose file that is not an image has none, ``""``). Viewpoints come from ``--groups``.
    """
    groups, views = read_groups(groups_csv, folder) if groups_csv else ({}, {})
    enc: dict[Path, str] = {}
    notes: dict[Path, str] = dict.fromkeys(paths, "")
    for p in paths:
        rel = p.relative_to(folder)
        enc[p] = groups.get(p.resolve()) or (rel.parts[0] if len(rel.parts) > 1 else "")
    loose = [p for p in paths if not enc[p] and p.suffix.lower() in IMAGE_EXT]
    if loose and capture_gap is not None:
        timed, why = capture_groups(loose, capture_gap)
        enc.update({p: str(timed.get(p) or "") for p in loose})
        notes.update({p: str(why.get(p) or "") for p in loose})
    for p in paths:  # a loose photo is its own encounter; a loose non-image file has none
        if p.suffix.lower() in IMAGE_EXT:
            enc[p] = enc[p] or str(p.relative_to(folder))
    return enc, {p: views.get(p.resolve(), "") for p in paths}, notes


def add_photo_options(parser) -> None:
    """The options both kinds of ``discriminate`` run share: the photos, their encounters, the
    output folder and how decisions are made and checked."""
    from typing import Literal

    from experiments.run.config_files import add_flag

    parser.add_argument("--images", type=str, required=True, help="folder of new photos")
    parser.add_argument(
        "--groups",
        type=str | None,
        default=None,
        help="CSV with columns image, group[, viewpoint] (else: one subfolder per encounter)",
    )
    parser.add_argument(
        "--capture_gap",
        type=float | None,
        default=None,
        help="minutes: group loose photos into encounters by capture time (EXIF)",
    )
    parser.add_argument(
        "--output", "--out", type=str | None, default=None, help="output folder (default: fresh)"
    )
    add_flag(parser, "overwrite", "write into a non-empty --output folder")
    add_flag(parser, "force_decisions", "decide known/new even where the run cannot separate them")
    parser.add_argument(
        "--unreadable",
        type=Literal[UNREADABLE],
        default="skip",
        help="unreadable image: skip (listed) or stop",
    )
    parser.add_argument("--n_boot", type=int, default=1000, help="bootstrap replicates for the CIs")
