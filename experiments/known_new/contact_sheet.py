"""The contact sheet of a ``discriminate`` output folder: one HTML page to check the decisions by
eye.

:func:`write_contact_sheet` reads ``photos.csv``, ``encounters.csv``, ``candidates.csv`` and
``operating_point.json`` from the folder and writes ``contact_sheet.html`` beside them, with small
JPEG thumbnails under ``contact_sheet/`` referenced by relative paths, so the folder can be
zipped and opened anywhere (the links to the full-size catalog and query photos are absolute
``file://`` links and only resolve on a machine that has those files). One section per query
encounter, by rank: its decision (colour-coded), ``p_known``, rule and margin, its photos (each
with its own decision, ``p_known`` and flag), and its top-5 catalog candidates (best-matching
catalog photo, individual, score, the photo's path). The operating point's ``warning`` sits in a
banner at the top. Plain HTML with inline CSS: no JavaScript, no network resources.

Run it on a folder by hand with ``python -m experiments.known_new.contact_sheet <folder>``.
Torch-free (Pillow, csv, json, html).
"""

from __future__ import annotations

import csv
import hashlib
import html
import json
import sys
from pathlib import Path

from PIL import Image, ImageOps

from datamodules.errors import DataError
from experiments.run.outputs import atomic_path, make_output_dir, write_text

THUMB_PX = 192  # long side of a thumbnail, pixels
THUMB_DIR = "contact_sheet"
PAGE = "contact_sheet.html"
FLAG_TEXT = {"not_image": "not an image", "out_of_distribution": "out of distribution"}
#: required columns of each table (more are allowed)
COLUMNS = {
    "photos.csv": ("photo", "encounter", "p_known", "decision", "flag", "note"),
    "encounters.csv": ("encounter", "p_known", "rank", "decision"),
    "candidates.csv": ("encounter", "rank", "individual", "score", "score_kind", "catalog_photo"),
}
HELP = (
    "pass the output folder of `cli.py discriminate` (it holds photos.csv, encounters.csv, "
    "candidates.csv and operating_point.json)"
)
CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,Arial,sans-serif;margin:0;
 padding:14px 18px;color:#1f2328;background:#fff;font-size:13px}
h1{font-size:20px;margin:0 0 6px}h2{font-size:15px;margin:0}h3{font-size:12px;margin:6px 0 4px;
 color:#57606a;text-transform:uppercase;letter-spacing:.04em}
.warn{background:#fff1c2;border:2px solid #d4a72c;padding:8px 12px;margin:0 0 10px;
 font-weight:600;border-radius:4px}
.meta{color:#57606a;margin:2px 0}.meta code{color:#1f2328}
table.op{border-collapse:collapse;margin:6px 0 8px}table.op td,table.op th{border:1px solid #d0d7de;
 padding:3px 8px;text-align:left}table.op th{background:#f6f8fa}
.legend span{margin-right:6px}
.enc{border:1px solid #d0d7de;border-left:8px solid #8c959f;border-radius:4px;margin:12px 0;
 padding:8px 10px}
.enc.known{border-left-color:#1a7f37}.enc.new{border-left-color:#0969da}
.enc.undecided{border-left-color:#bf8700}.enc.skipped{border-left-color:#8c959f}
.sub{color:#57606a;margin:3px 0 0}.row{display:flex;gap:14px;align-items:flex-start}
.query{flex:0 0 36%}.cands{flex:1;min-width:0}
.qgrid{display:flex;flex-wrap:wrap;gap:6px}.cgrid{display:grid;
 grid-template-columns:repeat(5,minmax(0,1fr));gap:6px}
figure{margin:0;border:1px solid #d0d7de;border-radius:3px;padding:4px;background:#fafbfc}
.qgrid figure{width:96px}
.box{height:140px;display:flex;align-items:center;justify-content:center;background:#eef1f4}
.box img{max-width:100%;max-height:140px}
.ph{height:140px;display:flex;align-items:center;justify-content:center;text-align:center;
 background:#f6f8fa;border:2px dashed #afb8c1;color:#57606a;font-size:11px;padding:4px;
 box-sizing:border-box;overflow-wrap:anywhere}
figcaption{font-size:11px;line-height:1.35;margin-top:3px;overflow-wrap:anywhere}
.name{font-weight:700;font-size:12px}.note{color:#57606a;font-size:10px;overflow-wrap:normal}.path{color:#57606a;font-size:10px;word-break:break-all}
.b{display:inline-block;padding:0 5px;border-radius:8px;color:#fff;font-weight:600;font-size:11px}
.b.known{background:#1a7f37}.b.new{background:#0969da}.b.undecided{background:#9a6700}
.b.skipped{background:#6e7781}.b.flag{background:#fff;color:#cf222e;border:1px solid #cf222e}
h2 .b{font-size:13px;vertical-align:1px}.rank{color:#57606a;margin-right:4px}
a{color:#0969da}.bad{color:#cf222e;font-weight:700}
"""


# ---- reading the discriminate folder ----------------------------------------------------------
def read_table(folder: Path, name: str) -> list[dict]:
    """Rows of ``folder/name`` (a CSV of :data:`COLUMNS`); DataError naming the file and fix."""
    path = folder / name
    if not path.is_file():
        raise DataError(f"{path}: not found; {HELP}")
    try:
        with path.open(newline="", encoding="utf-8") as fh:
            reader = csv.DictReader(fh)
            rows = list(reader)
            header = reader.fieldnames or []
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise DataError(f"{path}: cannot be read as CSV ({exc}); {HELP}") from exc
    missing = [c for c in COLUMNS[name] if c not in header]
    if missing:
        raise DataError(f"{path}: missing column(s) {', '.join(missing)}; {HELP}")
    return [{k: (v or "") for k, v in r.items() if k is not None} for r in rows]


def read_point(folder: Path) -> dict:
    """``operating_point.json`` of ``folder`` as a dict; DataError naming the file and fix."""
    path = folder / "operating_point.json"
    if not path.is_file():
        raise DataError(f"{path}: not found; {HELP}")
    try:
        point = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise DataError(f"{path}: not valid JSON ({exc}); {HELP}") from exc
    if not isinstance(point, dict):
        raise DataError(f"{path}: expected a JSON object; {HELP}")
    return point


def rank_key(row: dict) -> tuple:
    """Sort key: numeric ``rank`` first (1, 2, ...), rows without one last, then by name."""
    try:
        return (0, float(row.get("rank", "")), row.get("encounter", ""))
    except ValueError:
        return (1, 0.0, row.get("encounter", ""))


# ---- thumbnails -------------------------------------------------------------------------------
class Thumbs:
    """Thumbnails of source photos under ``folder/contact_sheet/``, one per source file (cached);
    :meth:`get` returns ``(relative path, width, height)`` or ``(None, why)``."""

    def __init__(self, folder: Path, px: int = THUMB_PX):
        self.px, self.done = px, {}
        self.dir = make_output_dir(folder / THUMB_DIR)

    def get(self, src: Path | None, kind: str) -> tuple:
        if src is None:
            return None, "no path"
        key = str(src)
        if key not in self.done:
            self.done[key] = self._make(Path(src), kind)
        return self.done[key]

    def _make(self, src: Path, kind: str) -> tuple:
        if not src.is_file():
            return None, "file not found"
        name = f"{kind}_{hashlib.sha1(str(src).encode()).hexdigest()[:16]}.jpg"
        try:
            with Image.open(src) as img:
                img.draft("RGB", (self.px, self.px))  # fast JPEG downscale on decode
                small = ImageOps.exif_transpose(img).convert("RGB")
                small.thumbnail((self.px, self.px))
                with atomic_path(self.dir / name) as tmp:
                    small.save(tmp, "JPEG", quality=82, optimize=True)
        except Exception as exc:  # noqa: BLE001 - any undecodable file becomes a placeholder
            return None, f"cannot be decoded ({type(exc).__name__})"
        return f"{THUMB_DIR}/{name}", small.width, small.height


# ---- HTML pieces ------------------------------------------------------------------------------
def esc(value) -> str:
    """``value`` as text, HTML-escaped (quotes included, safe in attributes)."""
    return html.escape("" if value is None else str(value), quote=True)


def num(value, digits: int = 3) -> str:
    """A number with ``digits`` decimals; ``-`` when empty; other text escaped as it is."""
    if value in (None, ""):
        return "-"
    try:
        return f"{float(value):.{digits}f}"
    except (TypeError, ValueError):
        return esc(value)


def with_ci(value, ci=None) -> str:
    """An operating-point figure and its interval: ``value`` with ``ci`` ``[lo, hi]`` (as
    discriminate writes ``eval_tpr`` and ``eval_tpr_ci95``), or ``value`` ``[v, lo, hi]``."""
    if isinstance(value, list | tuple):
        value, ci = (value[0], value[1:]) if value else (None, None)
    if isinstance(ci, list | tuple) and len(ci) == 2 and None not in ci and value is not None:
        return f"{num(value)} [{num(ci[0])}, {num(ci[1])}]"
    return num(value)


def badge(decision: str) -> str:
    d = decision if decision in ("known", "new", "undecided", "skipped") else "skipped"
    return f'<span class="b {d}">{esc(decision or "?")}</span>'


def flag_text(flag: str) -> str:
    """A photo or encounter flag in words (``not_image`` -> ``not an image``)."""
    return FLAG_TEXT.get(flag, flag.replace("_", " "))


def flag_badge(flag: str) -> str:
    return f' <span class="b flag">{esc(flag_text(flag))}</span>' if flag else ""


def picture(thumb: tuple, link: Path | None, label: str) -> str:
    """A thumbnail (linked to the full file) or a placeholder box saying why there is none."""
    if thumb[0] is None:
        return f'<div class="ph">{esc(label)}: {esc(thumb[1])}</div>'
    rel, w, h = thumb
    img = f'<img src="{esc(rel)}" width="{w}" height="{h}" alt="{esc(label)}">'
    if link is not None:
        img = f'<a href="{esc(link.as_uri())}">{img}</a>'
    return f'<div class="box">{img}</div>'


def query_path(images: Path | None, photo: str) -> Path | None:
    """The query photo's absolute path, or None when the images folder is unknown."""
    if images is None or not photo:
        return None
    return (images / photo).absolute()


def photo_card(row: dict, images: Path | None, thumbs: Thumbs) -> str:
    """A query photo: thumbnail, decision, p_known, flag and note."""
    src = query_path(images, row["photo"])
    if row.get("flag") in ("not_image", "unreadable"):
        thumb = (None, flag_text(row["flag"]))
    elif images is None:
        thumb = (None, "query folder unknown")
    else:
        thumb = thumbs.get(src, "q")
    note = f'<br><span class="note">{esc(row["note"])}</span>' if row.get("note") else ""
    p_text = f"p={num(row['p_known'])}" if row.get("p_known") else ""
    return (
        f"<figure>{picture(thumb, src, 'query photo')}<figcaption>{badge(row['decision'])} "
        f"{p_text}{flag_badge(row.get('flag', ''))}<br>"
        f'<span class="path">{esc(row["photo"])}</span>{note}</figcaption></figure>'
    )


def candidate_card(row: dict, thumbs: Thumbs) -> str:
    """A catalog candidate: its best-matching catalog photo, individual, score and path."""
    path = row["catalog_photo"]
    src = Path(path) if path else None
    thumb = thumbs.get(src, "c") if src is not None else (None, "no path given")
    link = src.absolute() if src is not None and thumb[0] is not None else None
    kind = "cos" if row.get("score_kind") == "cosine" else "p"
    match = row.get("query_photo", "")
    seen = f'<br><span class="note">matched with {esc(match)}</span>' if match else ""
    shown = f'<a href="{esc(link.as_uri())}">{esc(path)}</a>' if link is not None else esc(path)
    return (
        f"<figure>{picture(thumb, link, 'catalog photo')}<figcaption>"
        f'<span class="rank">#{esc(row["rank"])}</span><span class="name">'
        f"{esc(row['individual'])}</span><br>{kind}={num(row['score'])}<br>"
        f'<span class="path">{shown}</span>{seen}</figcaption></figure>'
    )


def encounter_section(enc: dict, photos: list[dict], cands: list[dict], ctx: dict) -> str:
    """One query encounter: header line, its photos and its top-5 candidates."""
    d = enc.get("decision", "")
    cls = d if d in ("known", "new", "undecided", "skipped") else "skipped"
    facts = [f"p_known={num(enc['p_known'])}"]
    facts += [f"{k}={esc(enc[k])}" for k in ("rule", "margin") if enc.get(k)]
    if enc.get("n_photos"):
        n, s = enc["n_photos"], "" if enc["n_photos"] == "1" else "s"
        facts.append(f"{esc(n)} photo{s}, {esc(enc.get('n_known_photos', '?'))} known")
    note = f"<p class='sub'>{esc(enc['note'])}</p>" if enc.get("note") else ""
    qs = "".join(photo_card(r, ctx["images"], ctx["thumbs"]) for r in photos)
    cs = "".join(candidate_card(r, ctx["thumbs"]) for r in cands)
    return (
        f'<section class="enc {cls}"><h2><span class="rank">#{esc(enc["rank"])}</span>'
        f"{esc(enc['encounter'])} {badge(d)}{flag_badge(enc.get('flag', ''))}</h2>"
        f'<p class="sub">{" &middot; ".join(facts)}</p>{note}<div class="row">'
        f'<div class="query"><h3>Query photos</h3><div class="qgrid">{qs or "none"}</div></div>'
        f'<div class="cands"><h3>Catalog candidates to check</h3>'
        f'<div class="cgrid">{cs or "no candidates"}</div></div></div></section>'
    )


def yes_no(value) -> str:
    """``yes`` / ``no`` for a boolean, ``-`` for none, other values as text."""
    if isinstance(value, bool):
        return "yes" if value else "no"
    return "-" if value is None else esc(value)


def point_rows(point: dict) -> str:
    """The operating point table: one row per level (photo, encounter)."""
    keys = ("threshold_p", "eval_tpr", "eval_fpr", "eval_auroc")
    head = "".join(f"<th>{k}</th>" for k in ("level", *keys, "separable"))
    rows = []
    for level in ("photo", "encounter"):
        lv = point.get(level)
        if isinstance(lv, dict):
            cells = "".join(
                f"<td>{with_ci(lv.get(k), lv.get(f'{k}_ci95', lv.get(f'{k}_ci')))}</td>"
                for k in keys
            )
            sep = lv.get("separable")
            cells += '<td class="bad">no</td>' if sep is False else f"<td>{yes_no(sep)}</td>"
            rows.append(f"<tr><td>{level}</td>{cells}</tr>")
    return f'<table class="op"><tr>{head}</tr>{"".join(rows)}</table>' if rows else ""


def header(point: dict, folder: Path, images: Path | None) -> str:
    """Title, the warning banner, the run, query folder, rule and operating point."""
    warn = str(point.get("warning") or "")
    warn = warn[8:].lstrip() if warn.lower().startswith("warning:") else warn
    banner = f'<div class="warn">Warning: {esc(warn)}</div>' if warn else ""
    where = (
        f"<code>{esc(images)}</code>"
        if images is not None
        else "unknown (operating_point.json has no 'images'): query thumbnails are not shown"
    )
    legend = " ".join(badge(d) for d in ("known", "new", "undecided", "skipped"))
    return (
        f"{banner}<h1>discriminate contact sheet</h1>"
        f'<p class="meta">run <code>{esc(point.get("run", "?"))}</code> &middot; query photos '
        f'{where}</p><p class="meta">results <code>{esc(folder.absolute())}</code></p>'
        f'<p class="meta">rule: {esc(point.get("rule", "?"))}</p>{point_rows(point)}'
        f'<p class="meta legend">{legend} encounters by rank; candidates: the catalog whales to '
        "check by eye, best first (p = probability, cos = cosine similarity)</p>"
    )


def loose_section(photos: list[dict], ctx: dict) -> str:
    """Photos not in any encounter row (skipped files, photos without an encounter)."""
    if not photos:
        return ""
    cards = "".join(photo_card(r, ctx["images"], ctx["thumbs"]) for r in photos)
    return (
        '<section class="enc skipped"><h2>Photos outside the encounters above</h2>'
        f'<div class="qgrid">{cards}</div></section>'
    )


# ---- the page ---------------------------------------------------------------------------------
def write_contact_sheet(folder: str | Path, thumb_px: int = THUMB_PX) -> Path:
    """Write ``folder/contact_sheet.html`` and its thumbnails (``folder/contact_sheet/*.jpg``,
    ``thumb_px`` long side) from the discriminate outputs in ``folder``; return the page's path.

    Raises:
        DataError: a file of the schema is missing, unreadable or lacks a column.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise DataError(f"{folder}: not a folder; {HELP}")
    point = read_point(folder)
    photos = read_table(folder, "photos.csv")
    encounters = sorted(read_table(folder, "encounters.csv"), key=rank_key)
    cands = sorted(read_table(folder, "candidates.csv"), key=rank_key)
    images = Path(point["images"]) if point.get("images") else None
    ctx = {"images": images, "thumbs": Thumbs(folder, thumb_px)}
    names = {e["encounter"] for e in encounters}
    by_enc: dict[str | None, list] = {}  # None: photos outside every encounter row
    for r in sorted(photos, key=lambda r: r["photo"]):
        by_enc.setdefault(r["encounter"] if r["encounter"] in names else None, []).append(r)
    cand_of: dict[str, list] = {}
    for c in cands:
        cand_of.setdefault(c["encounter"], []).append(c)
    sections = [
        encounter_section(e, by_enc.get(e["encounter"], []), cand_of.get(e["encounter"], []), ctx)
        for e in encounters
    ]
    body = (
        header(point, folder, images) + "".join(sections) + loose_section(by_enc.get(None, []), ctx)
    )
    page = (
        '<!doctype html>\n<html lang="en"><head><meta charset="utf-8">'
        f"<title>discriminate contact sheet: {esc(folder.name)}</title>"
        f"<style>{CSS}</style></head><body>{body}</body></html>\n"
    )
    return write_text(folder / PAGE, page)


def main(argv: list[str]) -> int:
    """``python -m experiments.known_new.contact_sheet <discriminate output folder>``: write the sheet."""
    if len(argv) != 1 or argv[0].startswith("-"):
        print(
            f"usage: python -m experiments.known_new.contact_sheet FOLDER  ({HELP})",
            file=sys.stderr,
        )
        return 2
    try:
        print(write_contact_sheet(argv[0]))
    except DataError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
