"""Shared fixtures: tiny catalogs and detection datasets in the real on-disk formats, a tiny
fit's arguments and its run-folder readers, and signal arrays with known answers.

Builders are plain functions below; each is offered to the tests as a fixture of the same name
(a factory: call it with the arguments it documents)."""

from __future__ import annotations

import csv
import glob
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator


def classifier_signals(member_loss, nonmember_loss, set_name="attack", n_classes=4, seed=0):
    """Classifier signal dict with the given predicted-label losses (nats); logits, max_prob,
    boundary distances and embeddings are built to match them (members: low loss)."""
    rng = np.random.default_rng(seed)
    loss = np.concatenate([member_loss, nonmember_loss]).astype(np.float64)
    n_m, n = len(member_loss), len(loss)
    # class 0 has probability p = exp(-loss); the other classes share 1 - p equally
    p = np.exp(-loss)
    rest = (1 - p) / (n_classes - 1)
    probs = np.concatenate([p[:, None], np.repeat(rest[:, None], n_classes - 1, 1)], 1)
    logits = np.log(np.clip(probs, 1e-12, None)).astype(np.float32)
    role = np.array(["member"] * n_m + ["nonmember"] * (n - n_m))
    member = role == "member"
    embedding = rng.normal(size=(n, 8)).astype(np.float32)
    embedding[member, 0] += 6.0  # members sit near the gallery direction (see gallery rows)
    return {
        "index": np.arange(n),
        "sample_id": np.array([f"{set_name}{i}" for i in range(n)]),
        "file": np.array([f"{set_name}{i}.jpg" for i in range(n)]),
        "identity": np.array([f"id{i % 3}" if i < n_m else f"new{i % 5}" for i in range(n)]),
        "split": np.where(member, "val" if set_name == "attack" else "test", set_name),
        "role": role,
        "set": np.array([set_name] * n),
        "label": np.where(member, 0, -1),
        "logits": logits,
        "loss_pred": loss.astype(np.float32),
        "loss_true": np.where(member, loss, np.nan).astype(np.float32),
        "pred": np.zeros(n, dtype=np.int64),
        "max_prob": p.astype(np.float32),
        "entropy": (-(probs * np.log(np.clip(probs, 1e-12, None))).sum(1)).astype(np.float32),
        "boundary_distance": 1.0 / (loss + 0.05) + rng.normal(0, 1e-6, n),
        "embedding": embedding,
    }


def detector_signals(n: int, k: int, seed: int, side: str) -> dict:
    """Detector signal dict: members get confident, tight boxes; non-members spread, low scores."""
    rng = np.random.default_rng(seed)
    member = np.arange(n) % 2 == 0
    centres = rng.uniform(0.3, 0.7, (n, 1, 2))
    spread = np.where(member[:, None, None], 0.02, 0.2)
    c = centres + rng.normal(0, 1, (n, k, 2)) * spread
    boxes = np.clip(np.concatenate([c - 0.1, c + 0.1], -1), 0, 1).astype(np.float32)
    scores = np.where(member[:, None], rng.uniform(0.8, 1.0, (n, k)), rng.uniform(0.0, 0.5, (n, k)))
    return {
        "index": np.arange(n),
        "boxes": boxes,
        "scores": -np.sort(-scores, axis=1).astype(np.float32),
        "n_boxes": np.full(n, k),
        "role": np.where(member, "member", "nonmember"),
        "side": np.full(n, side),
    }


def with_references(sig: dict, k: int = 4, n_aug: int = 2, seed: int = 0) -> dict:
    """``sig`` plus calibrated-attack fields (attacks/lira.py): each row has a difficulty ``d``;
    OUT references see ``phi ~ d``, IN ones ``d + 3``, the target ``d + 3`` for members and
    ``d`` for non-members (noise 0.3). Each row is IN for the first half of a random order of
    the ``k`` references."""
    rng = np.random.default_rng(seed)
    n = len(sig["role"])
    member = sig["role"] == "member"
    d = rng.normal(0, 2, n)
    ref_in = np.zeros((n, k), bool)
    for i in range(n):
        ref_in[i, rng.permutation(k)[: k // 2]] = True
    ref_phi = d[:, None, None] + 3.0 * ref_in[:, :, None] + rng.normal(0, 0.3, (n, k, n_aug))
    cal = d[:, None] + 3.0 * member[:, None] + rng.normal(0, 0.3, (n, n_aug))
    return {**sig, "cal_phi": cal, "ref_phi": ref_phi, "ref_in": ref_in}


@pytest.fixture
def make_classifier_signals():
    """Factory: :func:`classifier_signals`."""
    return classifier_signals


@pytest.fixture
def make_detector_signals():
    """Factory: :func:`detector_signals`."""
    return detector_signals


@pytest.fixture
def separable():
    """Attack-set classifier signals whose members (loss 0.01-0.2) and non-members (1-3) separate."""
    return classifier_signals(np.linspace(0.01, 0.2, 20), np.linspace(1.0, 3.0, 20))


@pytest.fixture
def separable_run():
    """A run's classifier signals whose members and non-members separate cleanly: training
    rows (the gallery), an attack set and an evaluation set."""
    train = classifier_signals(np.linspace(0.01, 0.05, 12), [], "train", seed=3)
    train["split"] = np.full(len(train["index"]), "train")
    att = classifier_signals(np.linspace(0.01, 0.2, 20), np.linspace(1.0, 3.0, 20), "attack")
    ev = classifier_signals(np.linspace(0.02, 0.25, 16), np.linspace(1.1, 2.8, 16), "eval", seed=1)
    run = {k: np.concatenate([train[k], att[k], ev[k]]) for k in att}
    run["index"] = np.arange(len(run["index"]))
    run = with_references(run)
    n_train, n_att = len(train["index"]), len(att["index"])
    att = {k: v[n_train : n_train + n_att] for k, v in run.items()}
    ev = {k: v[n_train + n_att :] for k, v in run.items()}
    return run, att, ev


# ---- whale catalogs ----------------------------------------------------------------------
def tiny_image(path: Path, seed: int, size: int = 24) -> Path:
    """A small random JPEG (distinct bytes per seed)."""
    rng = np.random.default_rng(seed)
    arr = rng.integers(0, 255, (size, size, 3), dtype=np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr).save(path, quality=90)
    return path


def folder_catalog(
    root: Path, n_ind: int = 9, n_enc: int = 3, per_enc: int = 2, nested: bool = True
) -> Path:
    """GREMM layout: root/<ind>/[enc_k/]img.jpg."""
    seed = 0
    for i in range(n_ind):
        for e in range(n_enc):
            for f in range(per_enc):
                sub = f"ind_{i:02d}/enc_{e}" if nested else f"ind_{i:02d}"
                tiny_image(root / sub / f"e{e}_f{f}.jpg", seed)
                seed += 1
    return root


def noaa_catalog(
    root: Path,
    n_ind: int = 9,
    n_enc: int = 3,
    per_enc: int = 2,
    extra_rows: list[dict] | None = None,
    drop_column: str | None = None,
) -> Path:
    """Where's Whale-do layout: root/metadata.csv + root/images/trainNNNN.jpg."""
    cols = [
        "image_id",
        "path",
        "height",
        "width",
        "viewpoint",
        "date",
        "timestamp",
        "whale_id",
        "encounter_id",
    ]
    rows, k = [], 0
    for i in range(n_ind):
        for e in range(n_enc):
            for _ in range(per_enc):
                image_id = f"train{k:04d}"
                tiny_image(root / "images" / f"{image_id}.jpg", 1000 + k)
                rows.append(
                    {
                        "image_id": image_id,
                        "path": f"images/{image_id}.jpg",
                        "height": 24,
                        "width": 24,
                        "viewpoint": "top" if k % 7 else "lateral",
                        "date": f"2019-08-{e + 1:02d}",
                        "timestamp": f"2019-08-{e + 1:02d} 10:00:00",
                        "whale_id": f"whale{i:03d}",
                        "encounter_id": f"whale{i:03d}-{e:03d}",
                    }
                )
                k += 1
    rows += extra_rows or []
    if drop_column:
        cols = [c for c in cols if c != drop_column]
    with (root / "metadata.csv").open("w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=cols, extrasaction="ignore")
        w.writeheader()
        w.writerows(rows)
    return root


def happywhale_catalog(root: Path, n_ind: int = 9, per_ind: int = 6) -> Path:
    """Happywhale layout: root/train.csv + root/train_images/."""
    rows, k = [], 0
    for i in range(n_ind):
        for _ in range(per_ind):
            name = f"{k:06x}.jpg"
            tiny_image(root / "train_images" / name, 5000 + k)
            rows.append({"image": name, "species": "humpback_whale", "individual_id": f"hw{i:03d}"})
            k += 1
    # another species that the filter must drop
    for j in range(4):
        name = f"dolphin{j}.jpg"
        tiny_image(root / "train_images" / name, 9000 + j)
        rows.append({"image": name, "species": "bottlenose_dolphin", "individual_id": "bd000"})
    with (root / "train.csv").open("w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=["image", "species", "individual_id"])
        w.writeheader()
        w.writerows(rows)
    return root


def make_run_folder(
    tmp: Path,
    *,
    n_individuals: int = 12,
    encounters: int = 2,
    photos: int = 3,
    size: int = 32,
    batch_size: int = 16,
    model_args: dict | None = None,
) -> Path:
    """A run folder like ``cli.py fit`` leaves (``config.yaml``, split manifest, ``last.ckpt``)
    of an untrained, seeded demo model on generated synthetic whales; no training.
    ``model_args``: extra ``model.init_args`` (e.g. a ``dp`` block). One recipe with the
    benchmarks: :func:`benchmarks.common.tiny_run_folder`."""
    from benchmarks.common import tiny_run_folder

    return tiny_run_folder(
        tmp,
        n_individuals=n_individuals,
        encounters=encounters,
        photos=photos,
        size=size,
        batch_size=batch_size,
        model_args=model_args,
    )


# ---- detection datasets ----------------------------------------------------------------
VOC_XML = """<annotation>
  <folder>VOC2012</folder>
  <filename>{id}.jpg</filename>
  <size><width>{w}</width><height>{h}</height><depth>3</depth></size>
{objects}</annotation>
"""
VOC_OBJ = """  <object>
    <name>{name}</name><pose>Unspecified</pose><truncated>0</truncated>
    <difficult>{difficult}</difficult>
    <bndbox><xmin>{x0}</xmin><ymin>{y0}</ymin><xmax>{x1}</xmax><ymax>{y1}</ymax></bndbox>
  </object>
"""


def _image(path: Path, w: int, h: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8)).save(path)


def write_voc(
    root: Path,
    n: int = 12,
    size: tuple[int, int] = (64, 48),
    classes: tuple[str, ...] = ("person", "dog", "car"),
    year: str = "2012",
    objects: dict[str, list[tuple]] | None = None,
    broken_xml: tuple[str, ...] = (),
    missing_images: tuple[str, ...] = (),
) -> Path:
    """VOCdevkit/VOC<year> with ``n`` images ``img_000..``; ``objects`` overrides an image's
    objects as (name, xmin, ymin, xmax, ymax, difficult) with 1-based VOC corners."""
    voc = root / "VOCdevkit" / f"VOC{year}"
    (voc / "Annotations").mkdir(parents=True, exist_ok=True)
    (voc / "ImageSets" / "Main").mkdir(parents=True, exist_ok=True)
    w, h = size
    ids = [f"img_{i:03d}" for i in range(n)]
    for i, image_id in enumerate(ids):
        if image_id not in missing_images:
            _image(voc / "JPEGImages" / f"{image_id}.jpg", w, h, i)
        objs = (objects or {}).get(
            image_id,
            [
                (classes[i % len(classes)], 5, 6, 30, 40, 0),
                (classes[(i + 1) % len(classes)], 20, 10, 60, 45, int(i % 4 == 0)),
            ],
        )
        body = "".join(
            VOC_OBJ.format(name=o[0], x0=o[1], y0=o[2], x1=o[3], y1=o[4], difficult=o[5])
            for o in objs
        )
        text = VOC_XML.format(id=image_id, w=w, h=h, objects=body)
        if image_id in broken_xml:
            text = text[: len(text) // 2]
        (voc / "Annotations" / f"{image_id}.xml").write_text(text)
    (voc / "ImageSets" / "Main" / "trainval.txt").write_text("\n".join(ids) + "\n")
    return root


def write_inria(
    root: Path,
    n_train: int = 8,
    n_test: int = 4,
    size: tuple[int, int] = (64, 96),
    boxes: dict[str, list[tuple[int, int, int, int]]] | None = None,
) -> Path:
    """INRIAPerson/{Train,Test} with pos.lst, annotations.lst, PNG images and PASCAL v1.00 text."""
    base = root / "INRIAPerson"
    w, h = size
    k = 0
    for subset, n in (("Train", n_train), ("Test", n_test)):
        pos, ann = [], []
        for i in range(n):
            stem = f"crop_{subset.lower()}_{i:06d}"
            img_rel, ann_rel = f"{subset}/pos/{stem}.png", f"{subset}/annotations/{stem}.txt"
            _image(base / img_rel, w, h, 100 + k)
            k += 1
            bxs = (boxes or {}).get(stem, [(5, 8, 30, 90), (33, 4, 60, 80)])
            lines = [
                "# PASCAL Annotation Version 1.00",
                "",
                f'Image filename : "{img_rel}"',
                f"Image size (X x Y x C) : {w} x {h} x 3",
                'Database : "The INRIA Rural Database"',
                f"Objects with ground truth : {len(bxs)} {{ "
                + " ".join('"PASperson"' for _ in bxs)
                + " }",
                "",
            ]
            for j, (x0, y0, x1, y1) in enumerate(bxs, 1):
                lines += [
                    f'# Details for object {j} ("PASperson")',
                    f'Original label for object {j} "PASperson" : "UprightPerson"',
                    f'Center point on object {j} "PASperson" (X, Y) : ({(x0 + x1) // 2}, {y0 + 5})',
                    f'Bounding box for object {j} "PASperson" (Xmin, Ymin) - (Xmax, Ymax) : '
                    f"({x0}, {y0}) - ({x1}, {y1})",
                    "",
                ]
            (base / ann_rel).parent.mkdir(parents=True, exist_ok=True)
            (base / ann_rel).write_bytes("\n".join(lines).encode("latin-1"))
            pos.append(img_rel)
            ann.append(ann_rel)
        (base / subset / "pos.lst").write_text("\n".join(pos) + "\n")
        (base / subset / "annotations.lst").write_text("\n".join(ann) + "\n")
    return root


def write_synthtext(
    root: Path,
    n_backgrounds: int = 6,
    variants: int = 3,
    size: tuple[int, int] = (64, 48),
    single_word_every: int = 2,
) -> Path:
    """gt.mat (imnames, wordBB) + JPEGs ``<k>/<bg>_<v>.jpg``; every ``single_word_every``-th
    image has one word, stored as a squeezed 2x4 wordBB."""
    import scipy.io

    w, h = size
    names, bbs = [], []
    i = 0
    for b in range(n_backgrounds):
        for v in range(variants):
            rel = f"{b % 2 + 1}/scene{b}_{10 + b}_{v}.jpg"
            _image(root / rel, w, h, 200 + i)
            x0, y0 = 4 + v, 5 + b % 3
            quad = np.array(
                [[x0, x0 + 20, x0 + 20, x0], [y0, y0, y0 + 10, y0 + 10]], dtype=np.float64
            )
            if i % single_word_every == 0:
                bb = quad  # 2x4: one word, squeezed like MATLAB does
            else:
                bb = np.stack([quad, quad + np.array([[25.0], [20.0]])], axis=2)  # 2x4x2
            names.append(np.array([rel]))
            bbs.append(bb)
            i += 1
    imnames = np.empty((1, len(names)), dtype=object)
    wordbb = np.empty((1, len(bbs)), dtype=object)
    for k in range(len(names)):
        imnames[0, k] = names[k]
        wordbb[0, k] = bbs[k]
    scipy.io.savemat(root / "gt.mat", {"imnames": imnames, "wordBB": wordbb})
    return root


# ---- a tiny fit -------------------------------------------------------------------------
REPO = Path(__file__).resolve().parents[1]


def tiny_args(tmp: Path, epochs: int, name: str = "run") -> list[str]:
    return [
        "fit",
        "--config",
        "demo.yaml",
        "--trainer.max_epochs",
        str(epochs),
        "--trainer.accelerator",
        "cpu",
        "--trainer.enable_progress_bar",
        "false",
        "--trainer.logger.init_args.save_dir",
        str(tmp / "logs"),
        "--trainer.logger.init_args.name",
        name,
        "--data.init_args.root",
        str(tmp / "catalog"),
        "--data.init_args.reader.init_args.n_individuals",
        "9",
        "--data.init_args.reader.init_args.encounters_per_individual",
        "3",
        "--data.init_args.reader.init_args.photos_per_encounter",
        "2",
        "--data.init_args.reader.init_args.image_size",
        "32",
        "--data.init_args.loader.image_size",
        "32",
        "--data.init_args.loader.batch_size",
        "8",
        "--data.init_args.loader.num_workers",
        "0",
        "--model.init_args.arch",
        "resnet18",
        "--attack_after_fit",
        "null",  # the attacks have tests of their own
        # the monitor every epoch on every row (the demo's per-pass row budget is for speed)
        "--leakage.every_n_epochs",
        "1",
        "--leakage.rows_per_train_photo",
        "null",
    ]


def ddp_env() -> dict:
    """Environment for a 2-process CPU DDP child: one thread each and a free rendezvous port
    (a fixed port can still be held by the previous DDP test's exiting processes)."""
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return {
        **os.environ,
        "OMP_NUM_THREADS": "1",
        "PYTHONUNBUFFERED": "1",
        "MASTER_ADDR": "127.0.0.1",
        "MASTER_PORT": str(port),
    }


def run_cli(args: list[str]) -> None:
    """``python cli.py ARGS`` in a child process (as a user runs it, so Lightning's DDP launcher
    can re-run it per rank); fails the test with the child's stderr tail."""
    proc = subprocess.run(
        [sys.executable, "cli.py", *args],
        cwd=REPO,
        env=ddp_env(),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]


def scalars(run: Path, tag: str) -> list[tuple[int, float]]:
    """(step, value) pairs of ``tag`` over every event file in ``run``, sorted by step."""
    out = []
    for ev in sorted(glob.glob(str(run / "events.out.tfevents.*"))):
        acc = EventAccumulator(ev)
        acc.Reload()
        if tag in acc.Tags()["scalars"]:
            out += [(e.step, e.value) for e in acc.Scalars(tag)]
    return sorted(out)


# ---- the builders as fixtures ------------------------------------------------------------


@pytest.fixture(scope="session", name="tiny_image")
def _tiny_image_fixture():
    return tiny_image


@pytest.fixture(scope="session", name="folder_catalog")
def _folder_catalog_fixture():
    return folder_catalog


@pytest.fixture(scope="session", name="noaa_catalog")
def _noaa_catalog_fixture():
    return noaa_catalog


@pytest.fixture(scope="session", name="happywhale_catalog")
def _happywhale_catalog_fixture():
    return happywhale_catalog


@pytest.fixture(scope="session", name="make_run_folder")
def _make_run_folder_fixture():
    return make_run_folder


@pytest.fixture(scope="session", name="write_voc")
def _write_voc_fixture():
    return write_voc


@pytest.fixture(scope="session", name="write_inria")
def _write_inria_fixture():
    return write_inria


@pytest.fixture(scope="session", name="write_synthtext")
def _write_synthtext_fixture():
    return write_synthtext


@pytest.fixture(scope="session", name="tiny_args")
def _tiny_args_fixture():
    return tiny_args


@pytest.fixture(scope="session", name="ddp_env")
def _ddp_env_fixture():
    return ddp_env


@pytest.fixture(scope="session", name="run_cli")
def _run_cli_fixture():
    return run_cli


@pytest.fixture(scope="session", name="scalars")
def _scalars_fixture():
    return scalars


@pytest.fixture(scope="session")
def one_step() -> list[str]:
    """Trainer arguments of a smoke run: one training step, one validation batch, fp32."""
    return [
        "--trainer.max_epochs",
        "1",
        "--trainer.limit_train_batches",
        "1",
        "--trainer.limit_val_batches",
        "1",
        "--trainer.num_sanity_val_steps",
        "0",
        "--trainer.precision",
        "32-true",
    ]


@pytest.fixture
def one_thread():
    """One intra-op thread: on 2 shared cores, more threads slow small convolutions."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def reid_fit_args(pop: Path, out: Path, *extra: str) -> list[str]:
    """A one-epoch embedding fit of ``beluga_reid_cpu.yaml`` on a tiny catalog (64 x 32 views,
    3 reference whales), its runs and caches under ``out``."""
    return [
        "fit", "--config", "beluga_reid_cpu.yaml", "--data.root", str(pop),
        "--data.init_args.views.height", "64", "--data.init_args.views.width", "32",
        "--data.init_args.holdout_individuals", "3", "--data.init_args.batch_size", "8",
        "--data.init_args.cache_dir", str(out / "cache"), "--trainer.max_epochs", "1",
        "--trainer.default_root_dir", str(out / "runs"),
        "--trainer.enable_progress_bar", "false", *extra,
    ]  # fmt: skip


@pytest.fixture(scope="session", name="reid_fit_args")
def _reid_fit_args_fixture():
    return reid_fit_args


@pytest.fixture(scope="session")
def repo() -> Path:
    """The repository root."""
    return REPO
