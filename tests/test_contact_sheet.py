"""The contact sheet of a discriminate output folder (experiments/known_new/contact_sheet.py): a fake
output folder in the discriminate schema, with tiny JPEGs made here; the HTML it writes, and the
page rendered by a real headless Chromium."""

from __future__ import annotations

import csv
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from datamodules.errors import DataError
from experiments.known_new.contact_sheet import PAGE, THUMB_DIR, main, with_ci, write_contact_sheet
from experiments.run import outputs

ROOT = Path(__file__).resolve().parent.parent
EVIL = '<script>alert("x")</script>&'
PHOTO_COLS = ["photo", "encounter", "p_known", "rank", "decision", "flag", "note"]
ENC_COLS = ["encounter", "n_photos", "n_known_photos", "p_known", "rank", "decision", "rule"]
ENC_COLS += ["margin", "flag", "note"]
CAND_COLS = ["encounter", "rank", "individual", "score", "score_kind", "catalog_photo"]
CAND_COLS += ["query_photo"]


def jpeg(path: Path, size=(60, 180), colour=(40, 80, 120)) -> Path:
    """A small JPEG with a gradient (so its thumbnail is not flat)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    a = np.zeros((size[1], size[0], 3), np.uint8)
    a[...] = colour
    a[:, :, 0] = np.linspace(0, 255, size[1], dtype=np.uint8)[:, None]
    Image.fromarray(a).save(path, "JPEG")
    return path


def write_csv(path: Path, cols: list[str], rows: list[dict]) -> None:
    with path.open("w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=cols)
        w.writeheader()
        w.writerows(rows)


def skipped_photos(query: Path) -> list[dict]:
    """Two skipped rows of ``photos.csv`` and their files: an unreadable JPEG that keeps its
    encounter, and a text file."""
    (query / "enc_a" / "bad.jpg").write_bytes(b"truncated")
    (query / "notes.txt").write_text("hi")
    blank = dict(p_known="", rank="", decision="skipped")
    return [
        dict(photo="enc_a/bad.jpg", encounter="enc_a", flag="unreadable", note="cannot be decoded")
        | blank,
        dict(photo="notes.txt", encounter="", flag="not_image", note="not an image") | blank,
    ]


def fake_output(tmp_path: Path, warning: str | None = "WARNING: few whales", images=True) -> dict:
    """A discriminate output folder: 3 encounters (known, new, undecided), a skipped file, five
    candidates each; one candidate's catalog photo is missing and one is not an image."""
    query, catalog, out = tmp_path / "query", tmp_path / "catalog", tmp_path / "out"
    out.mkdir()
    encs = {"enc_a": ("known", 0.97, 1), "enc_b": ("new", 0.04, 3), EVIL: ("undecided", 0.5, 2)}
    photos, enc_rows, cands = [], [], []
    for e, (dec, p, rank) in encs.items():
        sub = "evil" if e == EVIL else e
        rel = [f"{sub}/{k}.jpg" for k in range(2)]
        for k, r in enumerate(rel):
            jpeg(query / r, colour=(30 * k, 90, 60))
            photos.append(dict(photo=r, encounter=e, p_known=f"{p:.3f}", rank="", decision=dec))
        enc_rows.append(
            dict(
                encounter=e,
                n_photos=2,
                n_known_photos=2 if dec == "known" else 0,
                p_known=f"{p:.3f}",
                rank=rank,
                decision=dec,
                rule="mean",
                margin="0.120",
                flag="viewpoint" if e == "enc_b" else "",
                note=EVIL if e == EVIL else "",
            )
        )
        for k in range(1, 6):
            ind = f"whale{rank}{k}" if e != EVIL or k != 2 else EVIL
            cat = jpeg(catalog / ind.replace("/", "_").replace("<", "_") / "best.jpg", (120, 40))
            if e == "enc_b" and k == 4:
                cat = catalog / "gone" / "missing.jpg"
            if e == "enc_b" and k == 5:
                cat = catalog / "broken.jpg"
                cat.write_bytes(b"no jpeg here")
            cands.append(
                dict(
                    encounter=e,
                    rank=k,
                    individual=ind,
                    score=f"{1 - k / 10:.3f}",
                    score_kind="prob",
                    catalog_photo=str(cat),
                    query_photo=rel[0],
                )
            )
    photos += skipped_photos(query)
    write_csv(out / "photos.csv", PHOTO_COLS, photos)
    write_csv(out / "encounters.csv", ENC_COLS, enc_rows)
    write_csv(out / "candidates.csv", CAND_COLS, cands)
    point = {
        "run": str(tmp_path / "run"), "warning": warning,
        "rule": "a photo is known iff its p_known >= 0.800 & <more>",
        "photo": {"threshold_p": 0.8, "eval_tpr": 0.9, "eval_tpr_ci95": [0.8, 0.95],
                  "eval_fpr": 0.05, "eval_fpr_ci95": [0.02, 0.1], "eval_auroc": 0.93,
                  "eval_auroc_ci95": [0.9, 0.96], "separable": True},
        "encounter": {"threshold_p": 0.7, "eval_tpr": [0.92, 0.85, 0.97], "eval_fpr": 0.04,
                      "eval_fpr_ci95": [0.01, 0.08], "eval_auroc": 0.95, "separable": False},
    }  # fmt: skip
    if images:
        point["images"] = str(query)
    (out / "operating_point.json").write_text(json.dumps(point))
    return {"out": out, "query": query, "catalog": catalog, "cands": cands, "photos": photos}


def sections(page: str) -> list[str]:
    return re.findall(r'<section class="enc \w+">.*?</section>', page, re.S)


def test_every_encounter_and_candidate_with_thumbnails(tmp_path):
    f = fake_output(tmp_path)
    page_path = write_contact_sheet(f["out"])
    assert page_path == f["out"] / PAGE
    page = page_path.read_text()
    secs = sections(page)
    # by rank: enc_a (1), the evil one (2), enc_b (3), then the loose photos
    assert [re.search(r"</span>(.*?) <span", s).group(1) for s in secs[:3]] == [
        "enc_a",
        "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;&amp;",
        "enc_b",
    ]
    assert 'class="enc known"' in secs[0] and 'class="enc undecided"' in secs[1]
    assert 'class="enc new"' in secs[2] and "viewpoint" in secs[2]
    assert "Photos outside" in secs[3] and "notes.txt" in secs[3] and "not an image" in secs[3]
    for c in f["cands"]:
        assert f">#{c['rank']}</span>" in page
        assert f"p={c['score']}" in page
    for name in {c["individual"] for c in f["cands"]} - {EVIL}:
        assert f'<span class="name">{name}</span>' in page
    assert sum(s.count('<span class="name">') for s in secs) == 15
    srcs = re.findall(r'<img src="([^"]+)"', page)
    assert len(srcs) == 6 + 13  # 6 query photos + 13 readable catalog photos
    for s in srcs:
        thumb = f["out"] / s
        assert s.startswith(f"{THUMB_DIR}/") and thumb.is_file()
        with Image.open(thumb) as im:
            assert im.format == "JPEG" and max(im.size) <= 192
    # a catalog photo's path is shown as text and linked to the full file
    good = Path(f["cands"][0]["catalog_photo"])
    assert f'<a href="{good.as_uri()}">{good}</a>' in page


def test_missing_and_unreadable_catalog_photos_get_placeholders(tmp_path):
    f = fake_output(tmp_path)
    page = write_contact_sheet(f["out"]).read_text()
    assert '<div class="ph">query photo: unreadable</div>' in sections(page)[0]
    enc_b = sections(page)[2]
    assert '<div class="ph">catalog photo: file not found</div>' in enc_b
    assert '<div class="ph">catalog photo: cannot be decoded (' in enc_b
    assert "missing.jpg" in enc_b and "broken.jpg" in enc_b  # the paths are still shown


def test_warning_banner_at_the_top_and_absent_when_null(tmp_path):
    page = write_contact_sheet(fake_output(tmp_path)["out"]).read_text()
    body = page.split("<body>", 1)[1]
    assert body.startswith('<div class="warn">Warning: few whales</div>')
    (tmp_path / "b").mkdir()
    quiet = write_contact_sheet(fake_output(tmp_path / "b", warning=None)["out"]).read_text()
    assert 'class="warn"' not in quiet


def test_strings_are_escaped_and_no_script_or_network(tmp_path):
    page = write_contact_sheet(fake_output(tmp_path)["out"]).read_text()
    assert "<script" not in page and EVIL not in page
    assert page.count("&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;&amp;") >= 3
    assert not re.search(r"(src|href)=\"(https?:)?//", page)
    assert "@import" not in page and "url(" not in page


def test_operating_point_figures_with_their_intervals(tmp_path):
    page = write_contact_sheet(fake_output(tmp_path)["out"]).read_text()
    assert "<td>0.900 [0.800, 0.950]</td>" in page  # discriminate's eval_tpr + eval_tpr_ci95
    assert "<td>0.930 [0.900, 0.960]</td>" in page
    assert "rule: a photo is known iff its p_known &gt;= 0.800 &amp; &lt;more&gt;" in page
    assert "<td>0.920 [0.850, 0.970]</td>" in page
    assert "<td>0.040 [0.010, 0.080]</td>" in page
    assert "<td>0.950</td>" in page and "<td>yes</td>" in page
    assert '<td>0.950</td><td class="bad">no</td>' in page
    assert with_ci(None) == "-" and with_ci([0.5]) == "0.500"
    assert with_ci([0.5, 0.4, 0.6]) == "0.500 [0.400, 0.600]"


def test_without_images_the_sheet_has_no_query_thumbnails_and_says_so(tmp_path):
    f = fake_output(tmp_path, images=False)
    page = write_contact_sheet(f["out"]).read_text()
    assert "operating_point.json has no 'images'" in page
    assert page.count("query photo: query folder unknown") == 6
    assert len(re.findall(r'<img src="contact_sheet/q_', page)) == 0
    assert len(re.findall(r'<img src="contact_sheet/c_', page)) == 13


def test_outputs_are_recorded_for_cleanup(tmp_path, monkeypatch):
    monkeypatch.setattr(outputs, "CREATED", [])
    f = fake_output(tmp_path)
    write_contact_sheet(f["out"])
    assert f["out"] / THUMB_DIR in outputs.CREATED and f["out"] / PAGE in outputs.CREATED
    assert not list(f["out"].rglob(".*"))  # no temp files left behind


@pytest.mark.parametrize(
    "damage, match",
    [
        (lambda o: (o / "candidates.csv").unlink(), r"candidates.csv: not found; pass the output"),
        (lambda o: (o / "operating_point.json").write_text("{"), r"operating_point.json: not valid"),
        (lambda o: (o / "operating_point.json").write_text("[]"), r"expected a JSON object"),
        (lambda o: (o / "encounters.csv").write_text("encounter,rank\nx,1\n"),
         r"encounters.csv: missing column\(s\) p_known, decision"),
    ],
)  # fmt: skip
def test_bad_folders_raise_one_line_data_errors(tmp_path, damage, match):
    f = fake_output(tmp_path)
    damage(f["out"])
    with pytest.raises(DataError, match=match) as err:
        write_contact_sheet(f["out"])
    assert "\n" not in str(err.value)
    with pytest.raises(DataError, match="not a folder"):
        write_contact_sheet(tmp_path / "nowhere")


def test_module_entry_point(tmp_path, capsys):
    f = fake_output(tmp_path)
    assert main([str(f["out"])]) == 0
    assert capsys.readouterr().out.strip() == str(f["out"] / PAGE)
    assert main([str(tmp_path / "nowhere")]) == 2
    assert "error:" in capsys.readouterr().err
    assert main([]) == 2


def test_module_is_torch_free():
    code = (
        "import sys, experiments.known_new.contact_sheet\n"
        "heavy = [m for m in ('torch', 'torchvision', 'pytorch_lightning') if m in sys.modules]\n"
        "assert not heavy, heavy\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-1500:]


def browser() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        if found := shutil.which(name):
            return found
    return None


def screenshot(page: Path, png: Path, size=(1200, 1600), timeout=120) -> None:
    """Render ``page`` in headless Chromium to ``png`` (``size`` = window width, height)."""
    cmd = [
        browser(), "--headless", "--disable-gpu", "--no-sandbox", "--hide-scrollbars",
        "--no-first-run", f"--user-data-dir={png.parent / 'chromium-profile'}",
        f"--screenshot={png}", f"--window-size={size[0]},{size[1]}", page.absolute().as_uri(),
    ]  # fmt: skip
    subprocess.run(cmd, capture_output=True, timeout=timeout, check=False)


@pytest.mark.skipif(browser() is None, reason="no chromium, chromium-browser or google-chrome")
def test_headless_chromium_renders_the_page(tmp_path):
    f = fake_output(tmp_path)
    page = write_contact_sheet(f["out"])
    png = tmp_path / "shot.png"
    screenshot(page, png)
    assert png.is_file(), "chromium wrote no screenshot"
    with Image.open(png) as im:
        assert im.size == (1200, 1600)
        a = np.asarray(im.convert("RGB"), dtype=np.float32)
    assert a.std() > 20  # not a blank page
    # the thumbnails were loaded: some pixels carry the red gradient of the test photos
    assert ((a[..., 0] > 200) & (a[..., 2] < 140)).sum() > 2000


def test_reads_what_discriminate_writes(tmp_path):
    """The columns and operating-point shape of experiments.known_new.output_folder (the writer)
    are the ones this sheet reads."""
    writer = pytest.importorskip("experiments.known_new.output_folder")
    from experiments.known_new.contact_sheet import COLUMNS, point_rows

    for name, cols in COLUMNS.items():
        assert set(cols) <= set(writer.COLUMNS[name.removesuffix(".csv")]), name
    level = writer.level_entry(
        {"threshold_p": 0.8, "tpr": [0.9, 0.8, 0.95], "fpr": [0.05, 0.02, 0.1],
         "auroc": [0.93, 0.9, 0.96], "separable": True},
        0.05,
    )  # fmt: skip
    table = point_rows({"photo": level})
    for cell in ("0.900 [0.800, 0.950]", "0.050 [0.020, 0.100]", "0.930 [0.900, 0.960]"):
        assert f"<td>{cell}</td>" in table
