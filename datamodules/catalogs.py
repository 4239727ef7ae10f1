"""Readers for photo-ID catalogs on disk. Every reader yields the same table.

A reader is an object the config selects (``data.reader: {class_path, init_args}``) with one
method, ``read(root) -> Catalog``; ``root`` stays the datamodule's own ``data.root``.

A :class:`Catalog` is a root folder plus a list of :class:`Record` rows
``(file, identity, group, viewpoint, meta)`` where ``file`` is relative to the root.

Layouts (reader, manifest ``format``):

* :class:`FolderReader`, ``folder`` (GREMM style): ``root/<individual>/*.jpg``. Photos may also
  sit one level deeper, ``root/<individual>/<encounter>/*.jpg``; the sub-folder name is then the
  record's group.
* :class:`NoaaReader`, ``noaa`` (Where's Whale-do): ``root/metadata.csv`` with columns image_id,
  path, height, width, viewpoint, date, timestamp, whale_id, encounter_id. ``path`` is relative
  to the root.
* :class:`HappywhaleReader`, ``happywhale``: ``root/train.csv`` with columns image, species,
  individual_id, and the photos in ``root/train_images/``.
* :class:`SyntheticWhalesReader`, ``synthetic``: the built-in generated catalog, folder layout.
"""

from __future__ import annotations

import csv
import os
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path

from datamodules.cells import check_name, clean_rows, refuse_duplicate_columns
from datamodules.errors import DataError, resolve_inside
from datamodules.synthetic_whales import SyntheticWhales, generate

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp"}
DEMO_HINT = "To try the suite without data, run the demo: python cli.py fit --config demo.yaml"


@dataclass(frozen=True)
class Record:
    """One photo. ``file`` is relative to the catalog root, in POSIX form; ``source`` says where
    the row was read (``"<csv>, line N"``; ``""`` for a folder catalog), for error messages."""

    file: str
    identity: str
    group: str | None = None
    viewpoint: str | None = None
    meta: dict = field(default_factory=dict, compare=False, hash=False)
    source: str = field(default="", compare=False, hash=False, repr=False)


@dataclass
class Catalog:
    """A catalog root and its photos."""

    root: Path
    records: list[Record]
    name: str = "main"

    def identities(self) -> Counter:
        """Photos per identity."""
        return Counter(r.identity for r in self.records)

    def columns(self) -> list[str]:
        """Names usable as ``group_by``: 'encounter' plus every metadata column."""
        cols = {"encounter"}
        for r in self.records[:1]:
            cols.update(r.meta)
        return sorted(cols)


def _check_root(root: str | Path, key: str = "data.root") -> Path:
    if root is None or str(root) == "":
        raise DataError(f"{key} is not set. Point it at your catalog folder. {DEMO_HINT}")
    path = Path(root).expanduser()
    if not path.is_dir():
        raise DataError(f"{key}: {path} does not exist or is not a folder. {DEMO_HINT}")
    return path


def _read_csv(path: Path, required: list[str], what: str) -> list[dict]:
    """The rows of a catalog CSV as dicts (plus ``_line``, the row's line number). Header names
    are stripped of surrounding whitespace and must be unique; every row needs a value in each
    ``required`` column and no extra cells."""
    if not path.is_file():
        raise DataError(f"{path}: not found. A {what} catalog needs this file at its root.")
    try:
        with path.open(newline="", encoding="utf-8-sig") as fh:
            reader = csv.DictReader(fh)
            header = refuse_duplicate_columns(reader.fieldnames or [], path)
            reader.fieldnames = header
            missing = [c for c in required if c not in header]
            if missing:
                raise DataError(
                    f"{path}: missing column(s) {missing}; found {header}. A {what} catalog needs "
                    f"the columns {required}."
                )
            rows = []
            for row in reader:
                lineno = reader.line_num
                if None in row or any(row.get(c) in (None, "") for c in required):
                    raise DataError(
                        f"{path}, line {lineno}: malformed row {row!r}; every row needs a value in "
                        f"{required} and no extra cells."
                    )
                row["_line"] = lineno
                rows.append(row)
    except UnicodeDecodeError as exc:
        raise DataError(f"{path}: not valid UTF-8 text ({exc}). Save the CSV as UTF-8.") from exc
    except csv.Error as exc:
        raise DataError(f"{path}: malformed CSV ({exc}).") from exc
    if not rows:
        raise DataError(f"{path}: has a header but no rows.")
    return rows


def _require_exists(root: Path, rel: str, source: str, real_root: Path | None = None) -> str:
    """``rel`` as a POSIX path relative to ``real_root`` (``root.resolve()``), checked to stay
    inside the root and to be a file."""
    real_root = real_root or root.resolve()
    target = resolve_inside(root, rel, source=source, root_resolved=real_root)
    if not target.is_file():
        raise DataError(
            f"{source}: image {rel!r} is listed but missing under {root}. Restore the file or "
            "remove its row."
        )
    return target.relative_to(real_root).as_posix()


def refuse_duplicates(root: Path, files: list[str], sources: list[str]) -> None:
    """Each photo listed once: refuse two entries that reach the same file (a repeated row,
    ``./a.jpg`` next to ``a.jpg``, a symlink or hard link to a listed file, a case variant on a
    case-insensitive file system), and empty files, naming both places.

    ``files``: paths relative to ``root``; ``sources``: where each came from (file and line).
    Byte-identical copies under different names are left to the split's content-hash check
    (:func:`datamodules.split_leak_checks.verify_manifest`), which refuses them in two splits.
    """
    seen: dict[tuple[int, int], int] = {}
    base = str(root)
    for i, rel in enumerate(files):
        st = os.stat(os.path.join(base, rel))
        if st.st_size == 0:
            raise DataError(f"{sources[i]}: image {rel!r} is an empty file. Restore or remove it.")
        key = (st.st_dev, st.st_ino)
        if key in seen:
            j = seen[key]
            raise DataError(
                f"{sources[i]}: {rel!r} is the same file as {sources[j]} ({files[j]!r}); each "
                "photo must be listed once (it would be counted twice). Remove one of them."
            )
        seen[key] = i


class CatalogReader:
    """How to read a catalog root; the config picks one by ``class_path`` (with ``init_args``).

    Subclasses set ``name`` (the manifest's ``format``) and implement :meth:`read`.
    """

    name = ""

    def read(self, root: str | Path | None) -> Catalog:
        """The catalog under ``root`` (``data.root``)."""
        raise NotImplementedError

    def settings(self) -> dict:
        """Constructor arguments, saved in the manifest header."""
        return dict(vars(self))


class FolderReader(CatalogReader):
    """GREMM layout: ``root/<individual>/[<encounter>/]*.jpg``; the sub-folder is the group.

    Each folder is listed once (``os.scandir``) and paths stay strings: a photo costs one
    ``stat`` (the duplicate and empty-file check) and no path resolution, unless a symbolic link
    is on its way (then it is resolved and confined to the root as a listed path is).
    """

    name = "folder"

    def read(self, root: str | Path | None) -> Catalog:
        root = _check_root(root)
        real_root = root.resolve()
        with os.scandir(root) as it:
            individuals = sorted(
                (e for e in it if _is_dir(e) and not e.name.startswith(".")), key=lambda e: e.name
            )
        records = []
        for ind in individuals:
            records.extend(_individual_records(root, real_root, ind))
        prefix = str(root / "x")[:-1]  # str(root / file) is prefix + file, without pathlib
        refuse_duplicates(root, [r.file for r in records], [prefix + r.file for r in records])
        if not records:
            raise DataError(
                f"data.root: {root} holds no images in the folder layout root/<individual>/*.jpg. "
                f"Check the path and data.reader. {DEMO_HINT}"
            )
        return Catalog(root=root, records=records)


def _is_dir(entry: os.DirEntry) -> bool:
    """``Path.is_dir`` of a listed entry: a folder, or a link to one (no system call unless it
    is a link)."""
    if entry.is_symlink():
        return Path(entry.path).is_dir()
    return entry.is_dir(follow_symlinks=False)


def _walk(path: str, parts: tuple[str, ...], out: list) -> None:
    """Append ``(parts, entry)`` for every entry below ``path`` (``parts`` relative to where the
    walk began), descending into folders but not into links to folders, as ``Path.rglob('*')``
    does; an unreadable folder is skipped as ``rglob`` skips it."""
    try:
        with os.scandir(path) as it:
            entries = list(it)
    except PermissionError:
        return
    for e in entries:
        sub = (*parts, e.name)
        out.append((sub, e))
        if e.is_dir(follow_symlinks=False):
            _walk(e.path, sub, out)


def _suffix(name: str) -> str:
    """``Path(name).suffix``, lower-cased."""
    i = name.rfind(".")
    return name[i:].lower() if 0 < i < len(name) - 1 else ""


def _individual_records(root: Path, real_root: Path, ind: os.DirEntry) -> list[Record]:
    """The photos of one individual's folder ``ind`` (an entry of ``root``), sorted by path."""
    ind_dir = str(root / ind.name)
    found: list = []
    _walk(ind_dir, (), found)
    found.sort(key=lambda item: item[0])
    ind_linked = ind.is_symlink()
    identity = check_name(ind.name, str(root))
    records = []
    for parts, e in found:
        linked = ind_linked or e.is_symlink()
        if _suffix(e.name) not in IMAGE_SUFFIXES:
            continue
        if not (Path(e.path).is_file() if linked else e.is_file(follow_symlinks=False)):
            continue
        img = ind_dir + "/" + "/".join(parts)
        if len(parts) > 2:
            raise DataError(
                f"{img}: nested too deep. The folder layout is root/<individual>/*.jpg or "
                "root/<individual>/<encounter>/*.jpg."
            )
        group = check_name(parts[0], ind_dir, "encounter") if len(parts) == 2 else None
        rel = ind.name + "/" + "/".join(parts)
        if linked:  # a link may lead anywhere: resolve it and keep it inside the root
            rel = resolve_inside(root, rel, source=img).relative_to(real_root).as_posix()
        meta = {"encounter": group} if group else {}
        records.append(Record(file=rel, identity=identity, group=group, meta=meta))
    return records


def _keep_rows(rows: list[dict], column: str, value: str | None, csv_path: Path) -> list[dict]:
    """The CSV rows whose ``column`` equals ``value`` (every row when ``value`` is None); a
    filter that keeps nothing is an error naming the values present."""
    if value is None:
        return rows
    kept = [r for r in rows if r.get(column) == value]
    if not kept:
        seen = sorted({r.get(column, "") for r in rows})[:20]
        raise DataError(
            f"{csv_path}: no rows left after data.reader.{column}={value!r}; {column} values "
            f"present: {seen}."
        )
    return kept


class NoaaReader(CatalogReader):
    """Where's Whale-do layout: ``root/metadata.csv`` (+ ``images/``).

    Args:
        viewpoint: keep only this viewpoint (e.g. ``top``); None keeps all.
    """

    name = "noaa"

    def __init__(self, viewpoint: str | None = None):
        self.viewpoint = viewpoint

    def read(self, root: str | Path | None) -> Catalog:
        root = _check_root(root)
        csv_path = root / "metadata.csv"
        rows = _read_csv(csv_path, ["path", "whale_id"], "NOAA Where's Whale-do")
        clean_rows(rows, csv_path, "whale_id", ("encounter_id", "viewpoint"), ("path",))
        records, sources, real_root = [], [], root.resolve()
        for row in _keep_rows(rows, "viewpoint", self.viewpoint, csv_path):
            source = f"{csv_path}, line {row['_line']}"
            rel = _require_exists(root, row["path"], source, real_root)
            meta = {k: v for k, v in row.items() if k != "_line"}
            records.append(
                Record(
                    file=rel,
                    identity=row["whale_id"],
                    group=row.get("encounter_id") or None,
                    viewpoint=row.get("viewpoint") or None,
                    meta=meta,
                    source=source,
                )
            )
            sources.append(source)
        refuse_duplicates(root, [r.file for r in records], sources)
        return Catalog(root=root, records=records)


class HappywhaleReader(CatalogReader):
    """Happywhale layout: ``root/train.csv`` + ``root/train_images/``.

    Args:
        species: keep only this species (e.g. ``humpback_whale``); None keeps all.
    """

    name = "happywhale"

    def __init__(self, species: str | None = None):
        self.species = species

    def read(self, root: str | Path | None) -> Catalog:
        root = _check_root(root)
        csv_path = root / "train.csv"
        rows = _read_csv(csv_path, ["image", "individual_id"], "Happywhale")
        clean_rows(rows, csv_path, "individual_id", ("species",), ("image",))
        species = self.species
        if species is not None and "species" not in rows[0]:
            raise DataError(
                f"{csv_path}: data.reader.species={species!r} is set but there is no species "
                "column."
            )
        records, sources, real_root = [], [], root.resolve()
        for row in _keep_rows(rows, "species", species, csv_path):
            source = f"{csv_path}, line {row['_line']}"
            rel = _require_exists(root, f"train_images/{row['image']}", source, real_root)
            meta = {k: v for k, v in row.items() if k != "_line"}
            records.append(
                Record(file=rel, identity=row["individual_id"], meta=meta, source=source)
            )
            sources.append(source)
        refuse_duplicates(root, [r.file for r in records], sources)
        return Catalog(root=root, records=records)


class SyntheticWhalesReader(SyntheticWhales, CatalogReader):
    """The built-in generated catalog (settings: :class:`SyntheticWhales`).

    It is written to ``root`` (None: ``data_cache/<settings key>``) unless already there, then
    read with :class:`FolderReader`.
    """

    name = "synthetic"

    def read(self, root: str | Path | None) -> Catalog:
        root = root or str(Path("data_cache") / self.key())
        generate(root, self)
        return FolderReader().read(root)

    def settings(self) -> dict:
        return asdict(self)


def group_key(
    record: Record, group_by: str | None, source: str = "data.split.group_by"
) -> str | None:
    """The value ``group_by`` picks for a record, or None when grouping is off.

    ``encounter`` (or ``folder``) uses the reader's natural group (NOAA encounter_id, the folder
    layout's sub-folder); any other name is a metadata column such as ``encounter_id`` or ``date``.
    A record without a value forms a group of its own (its file).
    """
    if group_by is None:
        return None
    if group_by in ("encounter", "folder"):
        value = record.group
    elif group_by in record.meta:
        value = record.meta[group_by]
    else:
        raise DataError(
            f"{source}={group_by!r}: no such column in the catalog; use 'encounter' or one of "
            f"{sorted(record.meta)}."
        )
    return value or f"file:{record.file}"
