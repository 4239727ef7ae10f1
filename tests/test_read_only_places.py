"""A run folder on a read-only file system (a real read-only bind mount; skipped where mounts
are not allowed): commands that must write into the run say so in one line with status 2, and
``discriminate --output elsewhere`` still works."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from tests.cli_checks import ending


@pytest.fixture
def read_only_run(tmp_path, make_run_folder):
    run = make_run_folder(tmp_path)
    view = tmp_path / "ro"
    view.mkdir()
    mounted = subprocess.run(["mount", "--bind", str(run), str(view)], capture_output=True)
    if mounted.returncode != 0:
        pytest.skip("bind mounts are not allowed here")
    try:
        ro = subprocess.run(["mount", "-o", "remount,bind,ro", str(view)], capture_output=True)
        if ro.returncode != 0:
            pytest.skip("read-only remounts are not allowed here")
        yield view, run
    finally:
        subprocess.run(["umount", str(view)], capture_output=True)


def photos(run: Path, out: Path) -> Path:
    """Two encounter folders of the run's own catalog photos."""
    cat = sorted((run.parent / "cat").rglob("*.jpg"))
    for i, p in enumerate(cat[:4]):
        (out / f"enc_{i // 2}").mkdir(parents=True, exist_ok=True)
        shutil.copy(p, out / f"enc_{i // 2}" / p.name)
    return out


def test_attack_and_export_name_the_read_only_place(read_only_run, capsys):
    view, run = read_only_run
    for argv in (["attack", "--run", str(view)], ["export", "--run", str(view)]):
        code, lines = ending(argv, capsys)
        assert code == 2 and len(lines) == 1 and "read-only" in lines[0], lines
        assert lines[0].startswith(f"error: {view}")
    assert not (run / "attacks").exists() and not (run / "export").exists()


def test_discriminate_writes_elsewhere_from_a_read_only_run(read_only_run, tmp_path, capsys):
    view, _ = read_only_run
    out = tmp_path / "decisions"
    argv = ["discriminate", "--run", str(view), "--images", str(photos(view, tmp_path / "p"))]
    code, lines = ending([*argv, "--output", str(out), "--n_boot", "20", "--quiet"], capsys)
    assert code == 0, lines
    assert (out / "photos.csv").is_file() and (out / "contact_sheet.html").is_file()
    assert any("signals kept in memory" in ln for ln in lines)
