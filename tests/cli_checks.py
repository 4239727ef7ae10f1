"""What the bad-input tests assert about a command run in-process (``cli.main``): its exit
status, its one ``error:`` line, and that it left a folder as it was."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

import cli


def snapshot(root: Path) -> dict[str, str]:
    """sha256 of every file under ``root``, by relative path (folders listed too)."""
    out = {}
    for p in sorted(root.rglob("*")):
        rel = str(p.relative_to(root))
        out[rel] = hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else "dir"
    return out


def ending(argv: list[str], capsys) -> tuple[int, list[str]]:
    """Exit status of ``cli.main(argv)`` (0 when it returned) and its non-empty stderr lines."""
    try:
        cli.main(argv)
        code = 0
    except SystemExit as exc:
        code = exc.code or 0
    return code, [ln for ln in capsys.readouterr().err.splitlines() if ln.strip()]


def one_error_line(argv: list[str], capsys) -> str:
    """``cli.main(argv)`` exits 2 and its stderr ends with its one ``error:`` line; returns it."""
    with pytest.raises(SystemExit) as exc:
        cli.main(argv)
    assert exc.value.code == 2
    lines = capsys.readouterr().err.rstrip().splitlines()
    assert lines and lines[-1].startswith("error: "), lines
    assert sum(line.startswith("error:") for line in lines) == 1, lines
    return lines[-1]


def refused(capsys, argv: list[str], root: Path, *names: str) -> str:
    """``cli.main(argv)``: exit 2, one ``error:`` line naming each of ``names``, no traceback,
    and no file under ``root`` added, removed or changed. Returns the line."""
    before = snapshot(root)
    capsys.readouterr()
    with pytest.raises(SystemExit) as exc:
        cli.main(argv)
    err = capsys.readouterr().err
    assert exc.value.code == 2, err
    assert "Traceback" not in err and "weights_only=False" not in err, err
    lines = [ln for ln in err.splitlines() if ln.startswith("error:")]
    assert len(lines) == 1, err
    for name in names:
        assert name in lines[0], lines[0]
    assert snapshot(root) == before
    return lines[0]
