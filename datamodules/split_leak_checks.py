"""Leak checks of planned splits: each fails loudly with :class:`SplitLeakError`.

* :func:`verify_manifest`: whale manifests (ID1/ID2/ID3 disjoint, one split per photo);
* :func:`verify_detection_split` and :func:`verify_cross_runs`: detection buckets and runs;
* both check that no byte-identical image (same sha256) sits in two buckets.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable

from datamodules.errors import SplitLeakError


def check_byte_identity(entries: Iterable[tuple[str, str, str]], what: str, fix: str) -> None:
    """Fail when one content hash sits in two buckets under two different file names.

    Args:
        entries: ``(bucket, file, sha256)`` per row, in manifest order; ``file`` names the image
            (rows of one image share it).
        what: name of the buckets in the message (``splits``, ``buckets``).
        fix: how to repair it, appended to the message.
    """
    by_hash: dict[str, dict[str, str]] = defaultdict(dict)
    for bucket, file, digest in entries:
        by_hash[digest].setdefault(bucket, file)
    for where in by_hash.values():
        if len(where) > 1 and len(set(where.values())) > 1:
            names = ", ".join(f"{b}: {f}" for b, f in sorted(where.items()))
            raise SplitLeakError(f"byte-identical images sit in different {what} ({names}). {fix}")


def verify_manifest(
    rows: list[dict],
    content_hash: dict[tuple[str, str], str] | None = None,
    *,
    protocol: str = "photo",
) -> dict:
    """Fail loudly on any leak between the splits of a whale manifest.

    Checks that ID1/ID2/ID3 identities are disjoint, that no photo (catalog, file) sits in two
    splits, and that no byte-identical image (same content hash) sits in two splits. Under the
    ``paper`` protocol copies of one original may sit in several ID1 splits on purpose; that
    overlap is counted and returned instead.

    Args:
        rows: manifest rows.
        content_hash: ``(catalog, file) -> sha256`` of the image bytes; skip the byte check if None.
        protocol: the split protocol the rows were planned with.

    Returns:
        ``{"paper_overlap_test_in_train": int, "paper_test_rows": int}`` under ``paper``, else
        ``{}``.
    """
    ident_sets: dict[tuple[str, str], set[str]] = defaultdict(set)
    file_splits: dict[tuple[str, str], set[str]] = defaultdict(set)
    for r in rows:
        ident_sets[(r["catalog"], r["identity"])].add(r["id_set"])
        file_splits[(r["catalog"], r["file"])].add(r["split"])
    for (cat, ident), sets in ident_sets.items():
        if len(sets) > 1:
            raise SplitLeakError(
                f"identity {ident!r} ({cat} catalog) is in {sorted(sets)}; ID1, ID2 and ID3 must "
                "be disjoint. Re-plan the split (data.split.seed) or fix duplicated identity names."
            )
    for key, splits in file_splits.items():
        if len(splits) > 1 and not (protocol == "paper" and splits <= {"train", "val", "test"}):
            raise SplitLeakError(
                f"photo {key[1]!r} ({key[0]} catalog) is in splits {sorted(splits)}; a photo "
                "must sit in one split. Re-plan the split or remove the duplicate row."
            )
    overlap = {}
    if protocol == "paper":
        train_files = {r["file"] for r in rows if r["split"] == "train"}
        test_rows = [r for r in rows if r["split"] == "test"]
        overlap["paper_overlap_test_in_train"] = sum(r["file"] in train_files for r in test_rows)
        overlap["paper_test_rows"] = len(test_rows)
    if content_hash is not None:
        check_byte_identity(
            (
                (r["split"], f"{r['catalog']}:{r['file']}", content_hash[(r["catalog"], r["file"])])
                for r in rows
            ),
            "splits",
            "Remove the duplicate file from the catalog, or give both copies one identity and "
            "group.",
        )
    return overlap


def verify_detection_split(rows: list[dict], content_hash: dict[str, str] | None = None) -> None:
    """Fail loudly unless the four detection buckets are disjoint and non-empty.

    Checks: no file twice, every group in one bucket, target and shadow share no file or group,
    and (with ``content_hash``: file -> sha256) no byte-identical image in two buckets.
    """
    where: dict[str, set[tuple[str, str]]] = defaultdict(set)
    seen: set[str] = set()
    for r in rows:
        if r["file"] in seen:
            raise SplitLeakError(f"image {r['file']!r} appears twice in the split manifest.")
        seen.add(r["file"])
        where[r["group"]].add((r["side"], r["split"]))
    for g, buckets in where.items():
        if len(buckets) > 1:
            raise SplitLeakError(
                f"group {g!r} is spread over {sorted(buckets)}; a group (e.g. one SynthText "
                "background and its variants) must stay in one bucket. Re-plan the split."
            )
    target = {r["file"] for r in rows if r["side"] == "target"}
    shadow = {r["file"] for r in rows if r["side"] == "shadow"}
    if target & shadow:
        raise SplitLeakError(f"target and shadow share {len(target & shadow)} images.")
    for side in ("target", "shadow"):
        for split in ("in", "out"):
            if not any(r["side"] == side and r["split"] == split for r in rows):
                raise SplitLeakError(f"bucket {side}-{split} is empty; add images.")
    if content_hash is not None:
        check_byte_identity(
            ((f"{r['side']}-{r['split']}", r["file"], content_hash[r["file"]]) for r in rows),
            "buckets",
            "Remove the duplicate or give both one group.",
        )


def verify_cross_runs(target_rows: list[dict], shadow_rows: list[dict]) -> None:
    """Target run's target rows and shadow run's shadow rows must share no image or group.

    Only meaningful when both runs read the same dataset; rows of different datasets never match.
    """
    t = {(r["dataset"], r["file"]) for r in target_rows if r["side"] == "target"}
    tg = {(r["dataset"], r["group"]) for r in target_rows if r["side"] == "target"}
    s = {(r["dataset"], r["file"]) for r in shadow_rows if r["side"] == "shadow"}
    sg = {(r["dataset"], r["group"]) for r in shadow_rows if r["side"] == "shadow"}
    if t & s or tg & sg:
        n = len(t & s) or len(tg & sg)
        raise SplitLeakError(
            f"the target's and the shadow's data overlap ({n} images or groups): the two runs "
            "used different split settings. Use one data config and seed for both."
        )
