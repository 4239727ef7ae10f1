"""Cell values of a catalog (CSV cells, folder names) and dates, checked before they are trusted.

An identity, encounter or viewpoint is compared as text, so an invisible difference would split
one animal in two (``"whale001 "`` next to ``"whale001"``) or make a new one. Every reader passes
such values through :func:`clean_cell` (CSV cells) or :func:`check_name` (folder names):

* surrounding whitespace of a CSV cell is stripped (then ``"whale001 "`` and ``"whale001"`` are
  one animal), and the text is put in Unicode NFC form (an accented name typed two ways is one
  name);
* a control or format character (Unicode category ``Cc``/``Cf``: tab, NUL, newline, zero-width
  space, BOM, ...) anywhere in the value is refused, naming the file, the line and the value;
* an empty identity is refused;
* a folder name is the file system's own, so surrounding whitespace or a control character in it
  is refused (naming the folder) rather than silently renamed.

Dates (the time split protocol) are ISO 8601 (:func:`parse_date`) and compared as datetimes.
"""

from __future__ import annotations

import unicodedata
from datetime import datetime, timezone

from datamodules.errors import DataError

#: Unicode categories refused inside a value: control (Cc) and format (Cf) characters
REFUSED_CATEGORIES = ("Cc", "Cf")
DATE_FIX = "write dates as YYYY-MM-DD, optionally with a time (YYYY-MM-DDTHH:MM:SS)"


def hidden_characters(value: str) -> list[str]:
    """The control/format characters of ``value`` as ``U+XXXX`` names, in order (none: [])."""
    return [f"U+{ord(ch):04X}" for ch in value if unicodedata.category(ch) in REFUSED_CATEGORIES]


def clean_cell(value: str | None, *, source: str, column: str, required: bool = False) -> str:
    """A CSV cell as the catalog means it: surrounding whitespace stripped, NFC-normalised.

    Args:
        value: the cell as read (None when the row is short).
        source: where it came from, e.g. ``"<root>/metadata.csv, line 12"``.
        column: the column name, for the message.
        required: an empty value (after stripping) is refused (identities).

    Raises:
        DataError: a control or format character in the cell, or an empty required cell; one
            line naming ``source``, ``column`` and the value (``repr``).
    """
    raw = "" if value is None else str(value)
    bad = hidden_characters(raw)
    if bad:
        raise DataError(
            f"{source}: column {column!r} value {raw!r} holds the control/format character(s) "
            f"{', '.join(bad)}; they are invisible and would make another {column}. Remove them "
            "from the cell."
        )
    text = unicodedata.normalize("NFC", raw.strip())
    if required and not text:
        raise DataError(
            f"{source}: column {column!r} is empty ({raw!r}); every row needs a {column}. Fill "
            "it in or remove the row."
        )
    return text


def check_name(name: str, parent: str, what: str = "individual") -> str:
    """A folder name used as an identity or encounter, NFC-normalised; refused (one line naming
    the folder ``name`` (``repr``) inside ``parent``) when it has surrounding whitespace or a
    control/format character."""
    bad = hidden_characters(name)
    if bad or name != name.strip():
        why = (
            f"holds the control/format character(s) {', '.join(bad)}"
            if bad
            else "has whitespace at its start or end"
        )
        raise DataError(
            f"{parent}: the {what} folder {name!r} {why}, so it would be another {what} than "
            "the same name without it. Rename the folder."
        )
    return unicodedata.normalize("NFC", name)


def clean_rows(
    rows: list[dict], path, identity: str, others: tuple[str, ...], paths: tuple[str, ...] = ()
) -> None:
    """Check and clean, in place, the cells that name an animal or a group
    (:func:`clean_cell`): the ``identity`` column (required) and each of ``others`` the CSV has
    (encounter, viewpoint, species). Every other cell but the file-path columns ``paths`` has
    its surrounding whitespace stripped (any column can be ``group_by``, e.g. ``date``)."""
    named = {identity, *others, *paths, "_line"}
    for row in rows:
        source = f"{path}, line {row['_line']}"
        row[identity] = clean_cell(row.get(identity), source=source, column=identity, required=True)
        for col in others:
            if col in row:
                row[col] = clean_cell(row[col], source=source, column=col)
        for col, value in row.items():
            if col not in named and isinstance(value, str):
                row[col] = value.strip()


def refuse_duplicate_columns(header: list[str], path) -> list[str]:
    """``header`` with surrounding whitespace stripped from each name; two columns with one name
    (``whale_id`` twice, or ``whale_id`` and ``whale_id ``) are refused, naming both. Unnamed
    columns (a header ending in commas) may repeat."""
    names = [unicodedata.normalize("NFC", (h or "").strip()) for h in header]
    first: dict[str, int] = {}
    for k, name in enumerate(names):
        if name in first and name:  # unnamed columns (trailing commas) are never read
            j = first[name]
            raise DataError(
                f"{path}: the header has two columns named {name!r} (column {j + 1} "
                f"{header[j]!r} and column {k + 1} {header[k]!r}); a reader would keep only one. "
                "Rename or remove one of them."
            )
        first[name] = k
    return names


def parse_date(value, *, source: str, column: str | None = None) -> datetime:
    """An ISO 8601 date or date-time (``datetime.fromisoformat``: ``2017-08-29``,
    ``2017-08-29T10:00:00``, ``2017-08-29 10:00:00+02:00``, ``20170829``, ...), surrounding
    whitespace ignored. A time with an offset is converted to UTC and its offset dropped, so it
    compares with times written without one (taken as UTC).

    Raises:
        DataError: anything else (``n/a``, ``29/08/2017``, ``2017-8-29``, ``2019-13-45``); one
            line naming ``source``, ``column`` (when given) and the value, with the fix.
    """
    raw = "" if value is None else str(value)
    try:
        when = datetime.fromisoformat(raw.strip())
    except ValueError as exc:
        where = f"column {column!r} value" if column else "value"
        raise DataError(
            f"{source}: {where} {raw!r} is not an ISO 8601 date ({exc}); {DATE_FIX}."
        ) from None
    if when.tzinfo is not None:
        when = when.astimezone(timezone.utc).replace(tzinfo=None)
    return when


def record_date(record, column: str) -> datetime:
    """The date of a catalog record (``record.meta[column]``, parsed by :func:`parse_date`); a
    missing or empty one is refused naming the record's row (or file) and the setting."""
    value = record.meta.get(column)
    where = record.source or record.file
    if value is None or not str(value).strip():
        raise DataError(
            f"{where}: no {column!r} value for {record.file}; split_protocol 'time' needs a date "
            "for every photo (set data.split.time_column to the catalog's date column)."
        )
    return parse_date(value, source=f"{where} ({record.file})", column=column)
