"""One exception type for bad input, so every message names the file or key and the fix."""

from __future__ import annotations

from pathlib import Path


class DataError(ValueError):
    """Bad input: a missing or corrupt file, a malformed table, a bad key, a leaky split.

    The message always names the offending file or config key and says how to fix it.
    """


class SplitLeakError(DataError):
    """A split violates identity or file disjointness (ID1/ID2/ID3, train/val/test)."""


def resolve_inside(
    root: Path, relative: str, *, source: str, root_resolved: Path | None = None
) -> Path:
    """Join ``relative`` onto ``root`` and refuse anything that escapes ``root``.

    Args:
        root: catalog root directory.
        relative: path as written in the catalog (CSV cell, folder entry).
        source: where the path came from (file and row), used in the error message.
        root_resolved: ``root.resolve()`` when the caller has it (a reader checking many paths
            resolves its root once).

    Raises:
        DataError: when the path is absolute or resolves outside ``root``.
    """
    root_resolved = root_resolved or Path(root).resolve()
    rel = Path(relative)
    if rel.is_absolute():
        raise DataError(
            f"{source}: path {relative!r} is absolute; catalog paths must be relative to the "
            f"data root {root_resolved}. Rewrite it relative to the root."
        )
    target = (root_resolved / rel).resolve()
    if not target.is_relative_to(root_resolved):
        raise DataError(
            f"{source}: path {relative!r} escapes the data root {root_resolved}. "
            "Catalog paths must stay inside the root; move the image under it or fix the path."
        )
    return target
