"""A corpus of malformed fit inputs (config keys and values, checkpoints, catalogs): each is
refused with exit code 2 and one line naming the file or key, no traceback on the screen or in a
log, nothing already written changed. (Malformed detection datasets:
tests/test_bad_detection_input.py; damaged run folders: tests/test_run_folder_checks.py; unusual
but valid inputs: tests/test_unusual_inputs.py.)"""

from __future__ import annotations

import csv
import os
import shutil
import tempfile
from pathlib import Path

import pytest
import torch

from datamodules.catalogs import FolderReader, HappywhaleReader, NoaaReader
from tests.cli_checks import refused

#: where the failure boundary keeps an internal error's traceback (experiments/run/failures.py)
TRACEBACK_FOLDERS = (Path("lightning_logs") / "errors", Path(tempfile.gettempdir()) / "whale-mia")


def traceback_logs() -> set[Path]:
    """The traceback logs kept so far (``error-*.log``, relative to the working directory)."""
    return {p for folder in TRACEBACK_FOLDERS for p in folder.glob("error-*.log")}


# ---- a NOAA catalog and fit arguments that fail before any training --------------------------
@pytest.fixture(scope="module")
def noaa(tmp_path_factory, noaa_catalog):
    return noaa_catalog(tmp_path_factory.mktemp("noaa") / "cat", n_ind=6, n_enc=3, per_enc=2)


def fit_args(tmp: Path, root: Path, *extra: str) -> list[str]:
    return [
        "fit",
        "--config",
        "demo.yaml",
        "--trainer.max_epochs",
        "1",
        "--trainer.accelerator",
        "cpu",
        "--trainer.enable_progress_bar",
        "false",
        "--trainer.logger.init_args.save_dir",
        str(tmp / "logs"),
        "--data.init_args.reader",
        "datamodules.catalogs.NoaaReader",
        "--data.init_args.root",
        str(root),
        "--data.init_args.loader.image_size",
        "24",
        "--data.init_args.loader.cache_dir",
        "null",
        "--model.init_args.arch",
        "resnet18",
        "--attack_after_fit",
        "null",
        "--data.init_args.split.holdout_groups",
        "0",  # demo.yaml holds one encounter out; min_groups needs 3 left
        *extra,
    ]


def copy_catalog(src: Path, tmp: Path) -> Path:
    dst = tmp / "cat"
    shutil.copytree(src, dst)
    return dst


def rows_of(root: Path) -> list[dict]:
    with (root / "metadata.csv").open(newline="") as fh:
        return list(csv.DictReader(fh))


def write_rows(root: Path, rows: list[dict]) -> None:
    with (root / "metadata.csv").open("w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)


CONFIG_CASES = {
    "misspelled_trainer_key": (["--trainer.max_epochz", "1"], ["max_epochz", "max_epochs"]),
    "misspelled_nested_key": (
        ["--data.init_args.loader.batch_sise", "2"],
        ["data.init_args.loader.batch_sise", "loader.batch_size"],
    ),
    "negative_batch_size": (["--data.init_args.loader.batch_size", "-1"], ["batch_size"]),
    "zero_image_size": (["--data.init_args.loader.image_size", "0"], ["image_size"]),
    "zero_max_epochs": (["--trainer.max_epochs", "0"], ["max_epochs"]),
    "unknown_arch": (["--model.init_args.arch", "resnet181"], ["resnet181", "resnet18"]),
    "missing_ckpt_path": (["--ckpt_path", "/nonexistent/last.ckpt"], ["/nonexistent/last.ckpt"]),
}


@pytest.mark.parametrize("case", list(CONFIG_CASES))
def test_config_errors(case, tmp_path, capsys, noaa, monkeypatch):
    """A config error is refused before any data work: the catalog is never read, no run folder
    or log folder is made and no traceback is kept."""
    reads = []
    read = NoaaReader.read
    monkeypatch.setattr(
        NoaaReader, "read", lambda self, *a, **k: reads.append(a) or read(self, *a, **k)
    )
    kept = traceback_logs()
    extra, names = CONFIG_CASES[case]
    refused(capsys, fit_args(tmp_path, noaa, *extra), tmp_path, *names)
    assert reads == []
    assert not (tmp_path / "logs").exists() and traceback_logs() == kept


def test_misspelled_key_in_config_file(tmp_path, capsys, noaa):
    cfg = tmp_path / "typo.yaml"
    cfg.write_text("trainer:\n  max_epocs: 1\n")
    refused(capsys, fit_args(tmp_path, noaa, "--config", str(cfg)), tmp_path, "max_epocs")


def _ckpt_cases(tmp: Path) -> dict[str, Path]:
    good = tmp / "good.ckpt"
    torch.save({"state_dict": {"w": torch.zeros(3)}}, good)
    data = good.read_bytes()
    (tmp / "truncated.ckpt").write_bytes(data[: len(data) // 2])
    (tmp / "text.ckpt").write_text("not a checkpoint\n")
    good.unlink()
    return {"truncated": tmp / "truncated.ckpt", "text": tmp / "text.ckpt"}


@pytest.mark.parametrize("kind", ["truncated", "text"])
def test_bad_ckpt_path(kind, tmp_path, capsys, noaa):
    path = _ckpt_cases(tmp_path)[kind]
    refused(capsys, fit_args(tmp_path, noaa, "--ckpt_path", str(path)), tmp_path, str(path))


def _noaa_duplicate_row(root):
    rows = rows_of(root)
    write_rows(root, rows + [rows[3]])
    return "line"


def _noaa_dot_slash(root):
    rows = rows_of(root)
    extra = dict(rows[2], path="./" + rows[2]["path"], image_id="dup")
    write_rows(root, rows + [extra])
    return "same file"


def _noaa_symlink(root):
    rows = rows_of(root)
    os.symlink(root / rows[1]["path"], root / "images" / "link.jpg")
    write_rows(root, rows + [dict(rows[1], path="images/link.jpg", image_id="link")])
    return "same file"


def _noaa_hardlink(root):
    rows = rows_of(root)
    os.link(root / rows[1]["path"], root / "images" / "hard.jpg")
    write_rows(root, rows + [dict(rows[1], path="images/hard.jpg", image_id="hard")])
    return "hard.jpg"


def _noaa_missing_image(root):
    rows = rows_of(root)
    (root / rows[4]["path"]).unlink()
    return rows[4]["path"]


def _noaa_empty_image(root):
    rows = rows_of(root)
    (root / rows[4]["path"]).write_bytes(b"")
    return "empty"


def _noaa_truncated_jpeg(root):
    for row in rows_of(root):  # every photo, whichever the split keeps
        p = root / row["path"]
        p.write_bytes(p.read_bytes()[:300])
    return "corrupt image"


def _noaa_text_as_jpeg(root):
    for row in rows_of(root):
        (root / row["path"]).write_text("hello")
    return "cannot identify"


def _noaa_latin1(root):
    text = (root / "metadata.csv").read_text().replace("top", "t\xf6p", 1)
    (root / "metadata.csv").write_bytes(text.encode("latin-1"))
    return "metadata.csv"


def _noaa_missing_column(root):
    rows = [{k: v for k, v in r.items() if k != "whale_id"} for r in rows_of(root)]
    write_rows(root, rows)
    return "whale_id"


def _noaa_missing_root(root):
    shutil.rmtree(root)
    return "data.root"


def _noaa_absolute_path(root):
    rows = rows_of(root)
    write_rows(root, rows + [dict(rows[0], path=str(root / rows[0]["path"]))])
    return "absolute"


def _noaa_escaping_path(root):
    rows = rows_of(root)
    write_rows(root, rows + [dict(rows[0], path="../outside.jpg")])
    return "escapes"


CATALOG_CASES = {
    f.__name__[1:]: f
    for f in (
        _noaa_duplicate_row,
        _noaa_dot_slash,
        _noaa_symlink,
        _noaa_hardlink,
        _noaa_missing_image,
        _noaa_empty_image,
        _noaa_truncated_jpeg,
        _noaa_text_as_jpeg,
        _noaa_latin1,
        _noaa_missing_column,
        _noaa_missing_root,
        _noaa_absolute_path,
        _noaa_escaping_path,
    )
}


@pytest.mark.parametrize("case", list(CATALOG_CASES))
def test_catalog_errors(case, tmp_path, capsys, noaa):
    root = copy_catalog(noaa, tmp_path)
    name = CATALOG_CASES[case](root)
    kept = traceback_logs()
    refused(capsys, fit_args(tmp_path, root), tmp_path, name)
    assert not (tmp_path / "logs").exists()  # no run folder, not even an empty log folder
    assert traceback_logs() == kept  # bad input, not an internal error: no traceback kept


def test_happywhale_duplicate_row(tmp_path, happywhale_catalog):
    root = happywhale_catalog(tmp_path / "hw", n_ind=3, per_ind=2)
    text = (root / "train.csv").read_text().splitlines()
    (root / "train.csv").write_text("\n".join([*text, text[1]]) + "\n")
    with pytest.raises(Exception, match=r"train\.csv, line \d+: .*same file as .*line 2"):
        HappywhaleReader().read(root)


def test_folder_symlink_duplicate(tmp_path, folder_catalog):
    root = folder_catalog(tmp_path / "f", n_ind=3, n_enc=1, per_enc=2, nested=False)
    os.symlink(root / "ind_00" / "e0_f0.jpg", root / "ind_01" / "copy.jpg")
    with pytest.raises(Exception, match="same file as"):
        FolderReader().read(root)


# ---- run folders and the attack command ------------------------------------------------------


# ---- detection annotations -------------------------------------------------------------------


# ---- valid but unusual inputs: same pixels or rows as the plain equivalent -------------------
