"""Encounters from capture times: loose photos grouped by the time the camera took them.

``discriminate --capture_gap MINUTES`` uses :func:`group_by_capture_time` when a folder of new
photos has no subfolders and no ``--groups`` file: the photos are sorted by their EXIF
``DateTimeOriginal`` (tag 36867 in the Exif IFD, ``YYYY:MM:DD HH:MM:SS``, the moment the shutter
fired) and a new encounter starts wherever the gap to the previous photo is *more than*
``gap_minutes`` (a gap of exactly ``gap_minutes`` stays in the same encounter).

Only ``DateTimeOriginal`` is read. ``DateTime`` (tag 306) is deliberately not used as a fallback:
it is the time the file was last changed, which editing and export software rewrite, so it would
group photos by when they were processed rather than when they were taken. Times are compared as
written (the camera's clock, no time zone): photos from cameras with different clocks or zones
should be grouped with ``--groups`` instead.

A photo without a readable ``DateTimeOriginal`` (none, a malformed or placeholder value such as
``0000:00:00 00:00:00``, or a file Pillow cannot open) becomes an encounter of its own and gets a
note saying why; nothing here raises on a bad file. Torch-free (Pillow only).
"""

from __future__ import annotations

import math
from datetime import datetime, timedelta
from pathlib import Path

from PIL import Image

from datamodules.errors import DataError

#: the Exif sub-IFD pointer (tag 34665) and the tag read from it
EXIF_IFD = 0x8769
DATETIME_ORIGINAL = 36867
EXIF_TIME_FORMAT = "%Y:%m:%d %H:%M:%S"
NO_TIME_NOTE = "no EXIF DateTimeOriginal"


def check_gap(gap_minutes: float) -> float:
    """``gap_minutes`` as a float if it is a positive number of minutes; else DataError."""
    try:
        gap = float(gap_minutes)
    except (TypeError, ValueError):
        gap = math.nan
    if not gap > 0:  # also refuses NaN
        raise DataError(
            f"--capture_gap {gap_minutes}: must be a positive number of minutes between two "
            "photos of one encounter, e.g. --capture_gap 30"
        )
    return gap


def capture_time(path: Path) -> tuple[datetime | None, str]:
    """``(time, "")`` from ``path``'s EXIF ``DateTimeOriginal``, or ``(None, note)`` saying why
    there is none. Never raises on a bad file."""
    try:
        with Image.open(path) as img:
            exif = img.getexif()
            raw = exif.get_ifd(EXIF_IFD).get(DATETIME_ORIGINAL)
            if raw is None:  # some writers put it in IFD0 instead of the Exif IFD
                raw = exif.get(DATETIME_ORIGINAL)
    except Exception as exc:  # noqa: BLE001 - any unreadable file becomes a note, never a crash
        return None, f"{NO_TIME_NOTE} (cannot read the file's EXIF: {type(exc).__name__})"
    if raw is None:
        return None, NO_TIME_NOTE
    return parse_exif_time(raw)


def parse_exif_time(raw) -> tuple[datetime | None, str]:
    """``(time, "")`` for an EXIF date string ``YYYY:MM:DD HH:MM:SS`` (str or bytes, trailing NULs
    and blanks allowed), or ``(None, note)`` quoting the malformed value."""
    if isinstance(raw, bytes):
        raw = raw.decode("ascii", errors="replace")
    text = str(raw).strip("\x00 \t\r\n")
    try:
        return datetime.strptime(text, EXIF_TIME_FORMAT), ""
    except ValueError:
        shown = text if len(text) <= 40 else text[:40] + "..."
        return None, f"{NO_TIME_NOTE} (malformed value {shown!r}, expected YYYY:MM:DD HH:MM:SS)"


def encounter_name(t: datetime) -> str:
    """The encounter named after its first photo's time: ``t2024-07-01T10-32-05``."""
    return "t" + t.strftime("%Y-%m-%dT%H-%M-%S")


def _unique(name: str, taken: set[str]) -> str:
    out, k = name, 1
    while out in taken:
        k += 1
        out = f"{name}-{k}"
    taken.add(out)
    return out


def group_by_capture_time(
    paths: list[Path], gap_minutes: float
) -> tuple[dict[Path, str], dict[Path, str]]:
    """Group ``paths`` into encounters by capture time.

    Args:
        paths: photo files (any order).
        gap_minutes: a new encounter starts where the time since the previous photo (sorted by
            time, ties by path) is more than this many minutes; must be > 0.

    Returns:
        ``(encounter, note)``: the encounter name of every path (``t<first photo's time>``, or
        ``no-time-<file name>`` for a photo without a readable time, alone in its encounter) and a
        note per path (``""`` when its time was read).

    Raises:
        DataError: ``gap_minutes`` is not a positive number (names ``--capture_gap``).
    """
    gap = timedelta(minutes=check_gap(gap_minutes))
    timed, encounter, note = [], {}, {}
    for p in paths:
        t, note[p] = capture_time(Path(p))
        if t is not None:
            timed.append((t, str(p), p))
    taken: set[str] = set()
    name, last = "", None
    for t, _, p in sorted(timed, key=lambda x: (x[0], x[1])):
        if last is None or t - last > gap:
            name = _unique(encounter_name(t), taken)
        encounter[p], last = name, t
    for p in paths:
        if p not in encounter:
            encounter[p] = _unique(f"no-time-{Path(p).name}", taken)
    return {p: encounter[p] for p in paths}, note
