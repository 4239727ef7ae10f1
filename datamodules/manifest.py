"""Split manifest I/O, shared by the whale and the detection pipelines.

A run folder holds ``split_manifest.csv`` (one row per sample, columns chosen by the pipeline)
and ``split_manifest.json`` (seed, settings, counts, and the sha256 ``hash`` of the CSV text).
:func:`read_manifest` checks the CSV against that hash: a manifest edited, truncated or
replaced after the fit (or one without its JSON) is refused instead of trusted.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
from collections.abc import Sequence
from pathlib import Path

from datamodules.errors import DataError, SplitLeakError

#: columns written as integers, turned back into ints by :func:`read_manifest`
INT_COLUMNS = ("label", "n_objects")


def manifest_csv(rows: list[dict], columns: Sequence[str]) -> str:
    """Canonical CSV text of the rows' ``columns`` (the hash is taken over this)."""
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(columns), lineterminator="\n")
    writer.writeheader()
    for r in rows:
        writer.writerow({c: r[c] for c in columns})
    return buf.getvalue()


def manifest_hash(rows: list[dict], columns: Sequence[str]) -> str:
    """sha256 (hex) of :func:`manifest_csv`."""
    return hashlib.sha256(manifest_csv(rows, columns).encode()).hexdigest()


def write_manifest(folder: Path, rows: list[dict], header: dict, columns: Sequence[str]) -> Path:
    """Write ``split_manifest.csv`` and ``split_manifest.json`` (``header`` plus the hash).

    If a manifest is already there (a resumed run), it must be identical: a changed config or seed
    fails with :class:`SplitLeakError` instead of silently training on a different split.
    Returns the CSV path.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    csv_path, json_path = folder / "split_manifest.csv", folder / "split_manifest.json"
    text = manifest_csv(rows, columns)
    digest = hashlib.sha256(text.encode()).hexdigest()
    if csv_path.exists():
        _, old = verified_manifest_text(folder)  # the run's manifest, as the fit wrote it
        if old.get("hash") != digest:
            raise SplitLeakError(
                f"{csv_path}: this run folder already holds a different split (hash "
                f"{str(old.get('hash', '?'))[:12]} vs {digest[:12]}). Resume with the same data "
                "config and seed, or start a new run."
            )
        if header.get("roots") and old.get("roots") != header["roots"]:
            # the same split read from a catalog that moved (a resume allowed to change
            # data.root): later commands must look for the photos where they are now
            moved = {**old, "roots": header["roots"], "roots_before": old.get("roots")}
            _atomic_write(json_path, json.dumps(moved, indent=2, default=str))
        return csv_path
    _atomic_write(csv_path, text)
    _atomic_write(json_path, json.dumps({**header, "hash": digest}, indent=2, default=str))
    return csv_path


def encounter_key(row: dict) -> str:
    """The encounter of one manifest row: ``"<identity>/<group>"`` (catalogs reuse group names
    across individuals, so the identity is part of the key). A row without a group (a run split
    without ``group_by``) falls back to ``"<identity>/<file>"``: each photo is its own encounter,
    as the individual/encounter sampler treats it; no grouping is invented from folder names."""
    return f"{row['identity']}/{row.get('group') or row['file']}"


def read_manifest(folder: Path) -> tuple[list[dict], dict]:
    """Rows (``label`` / ``n_objects`` as int) and header of a saved manifest, once the CSV
    matches the ``hash`` its JSON recorded (:func:`verified_manifest_text`)."""
    text, header = verified_manifest_text(Path(folder))
    rows = list(csv.DictReader(io.StringIO(text, newline="")))
    for r in rows:
        for c in INT_COLUMNS:
            if c in r:
                r[c] = int(r[c])
    return rows, header


def verified_manifest_text(folder: Path) -> tuple[str, dict]:
    """``(CSV text, header)`` of ``folder``'s manifest; :class:`DataError` (one line naming the
    file) when the JSON is missing or unreadable or the CSV's sha256 is not the recorded hash.

    The manifest is the truth about membership: a changed row silently changes every result."""
    csv_path, json_path = folder / "split_manifest.csv", folder / "split_manifest.json"
    fix = "restore both files from the fit (or a copy of the run folder), or re-run the fit"
    if not json_path.is_file():
        raise DataError(
            f"{json_path}: missing, so {csv_path.name} cannot be checked against the hash the fit "
            f"recorded; {fix}."
        )
    try:
        header = json.loads(json_path.read_text(encoding="utf-8"))
        text = csv_path.read_bytes().decode("utf-8")
    except (OSError, ValueError) as exc:
        raise DataError(f"{json_path.parent}: unreadable split manifest ({exc}); {fix}.") from None
    if not isinstance(header, dict) or not isinstance(header.get("hash"), str):
        raise DataError(f"{json_path}: no manifest hash recorded (truncated or edited?); {fix}.")
    digest = hashlib.sha256(text.encode("utf-8")).hexdigest()
    if digest != header["hash"]:
        raise DataError(
            f"{csv_path}: the split manifest was changed after the fit (sha256 {digest[:12]}, "
            f"the fit recorded {header['hash'][:12]}); {fix}."
        )
    return text, header


def _atomic_write(path: Path, text: str) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_bytes(text.encode("utf-8"))  # exactly the bytes the hash is taken over
    tmp.replace(path)
