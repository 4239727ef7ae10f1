"""`cli.py export` and the exported engine of `cli.py discriminate`: the bundle and its check
against torch, up-to-date and stale bundles, the same decisions as the torch engine, no torch
import on the fast path, the numpy transform and signals against torch's, and bad input as one
line and exit 2."""

from __future__ import annotations

import csv
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]


def sharpen(run: Path, factor: float = 40.0) -> None:
    """Scale the untrained target's head so its logits spread (tens of nats, not hundredths):
    the engines are then compared on probabilities away from uniform."""
    ckpt = run / "checkpoints" / "last.ckpt"
    state = torch.load(ckpt, weights_only=True)
    for k in state["state_dict"]:
        if k.startswith("net.head"):
            state["state_dict"][k] = state["state_dict"][k] * factor
    torch.save(state, ckpt)


@pytest.fixture(scope="module")
def exported(tmp_path_factory, make_run_folder) -> tuple[Path, dict]:
    """A tiny run with its bundle: ``(run folder, export.json)``."""
    from cli import main

    run = make_run_folder(tmp_path_factory.mktemp("export_run"))
    sharpen(run)
    main(["export", "--run", str(run), "--check_photos", "8"])
    return run, json.loads((run / "export" / "export.json").read_text())


@pytest.fixture(scope="module")
def new_photos(exported, tmp_path_factory) -> Path:
    """Two encounters of 3 photos (of catalog whales) and a lone photo."""
    run = exported[0]
    src = sorted((run.parent / "cat").rglob("*.jpg"))
    out = tmp_path_factory.mktemp("export_photos")
    for i, p in enumerate(src[:6]):
        (out / f"enc_{i // 3}").mkdir(exist_ok=True)
        shutil.copy(p, out / f"enc_{i // 3}" / f"p{i}.jpg")
    shutil.copy(src[9], out / "lone.jpg")
    return out


def discriminate(run: Path, photos: Path, out: Path, *extra: str) -> tuple[dict, dict]:
    """``({table: rows}, operating_point.json)`` of one ``discriminate`` into folder ``out``."""
    from cli import main

    main(
        ["discriminate", "--run", str(run), "--images", str(photos), "--output", str(out)]
        + ["--n_boot", "100", "--quiet", "true", *extra]
    )
    tables = {
        k: list(csv.DictReader((out / f"{k}.csv").open()))
        for k in ("photos", "encounters", "candidates")
    }
    return tables, json.loads((out / "operating_point.json").read_text())


def test_export_writes_a_bundle_checked_against_torch(exported):
    from experiments.commands.export import GRAPH_TOLERANCE

    run, info = exported
    assert (run / "export" / "target.onnx").stat().st_size > 1_000_000
    assert info["format"] == 1 and info["outputs"] == ["logits", "embedding"]
    assert info["input"] == {"size": 32, "resize": "squash", "pad_value": 0}
    ckpt = run / "checkpoints" / "last.ckpt"
    assert (
        info["checkpoint"]["size"] == ckpt.stat().st_size
        and len(info["checkpoint"]["sha256"]) == 64
    )
    g, e = info["check"]["graph"], info["check"]["end_to_end"]
    assert g["inputs"] == 8 and g["logit_scale"] > 1.0  # sharpened: logits away from zero
    assert g["max_abs_logit"] <= GRAPH_TOLERANCE * g["logit_scale"]
    assert e["photos"] == 8 and e["top1_agreement"] == 1.0 and e["min_embedding_cosine"] > 0.999
    assert e["max_abs_max_prob"] < 0.02
    assert set(info["versions"]) == {"torch", "onnx", "onnxruntime"}
    assert (run / "signals" / "final.npz").is_file()  # discriminate calibrates on them


def test_an_up_to_date_bundle_is_kept_and_force_writes_it_again(exported, capsys):
    from cli import main

    run, _ = exported
    model = run / "export" / "target.onnx"
    before = model.stat().st_mtime_ns
    main(["export", "--run", str(run)])
    assert "up to date" in capsys.readouterr().out and model.stat().st_mtime_ns == before
    main(["export", "--run", str(run), "--check_photos", "2", "--force", "true"])
    assert "exported ->" in capsys.readouterr().out and model.stat().st_mtime_ns != before
    assert json.loads((run / "export" / "export.json").read_text())["check"]["graph"]["inputs"] == 2


def test_the_exported_engine_decides_as_torch_does(exported, new_photos, tmp_path, capsys):
    run, _ = exported
    fast, s_fast = discriminate(run, new_photos, tmp_path / "fast")
    assert "scoring with torch" not in capsys.readouterr().err
    slow, s_slow = discriminate(run, new_photos, tmp_path / "slow", "--engine", "torch")
    assert s_fast["engine"] == "onnxruntime" and s_slow["engine"] == "torch"
    for level in ("photo", "encounter"):  # the same final signals, the same operating point
        assert s_fast[level] == s_slow[level], level
    assert len(fast["photos"]) == len(slow["photos"]) == 7
    assert len(fast["encounters"]) == len(slow["encounters"]) >= 2
    for table, key in (("photos", "photo"), ("encounters", "encounter")):
        a_rows = sorted(fast[table], key=lambda r: r[key])
        b_rows = sorted(slow[table], key=lambda r: r[key])
        for a, b in zip(a_rows, b_rows):
            assert (a[key], a["decision"]) == (b[key], b["decision"]), (table, a, b)
            assert abs(float(a["p_known"]) - float(b["p_known"])) < 0.02, (table, a, b)
    first = {
        name: {r["encounter"]: r["individual"] for r in t["candidates"] if r["rank"] == "1"}
        for name, t in (("fast", fast), ("slow", slow))
    }
    assert first["fast"] == first["slow"]


def test_discriminate_on_the_exported_target_imports_no_torch(exported, new_photos, tmp_path):
    run, _ = exported
    out = tmp_path / "child"
    code = (
        "import sys, cli; cli.main(['discriminate', '--run', sys.argv[1], '--images', "
        "sys.argv[2], '--output', sys.argv[3], '--n_boot', '50']); "
        "print(sorted(m for m in ('torch', 'torchvision', 'pytorch_lightning') if m in sys.modules))"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code, str(run), str(new_photos), str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.strip().splitlines()[-1] == "[]"
    assert json.loads((out / "operating_point.json").read_text())["engine"] == "onnxruntime"


def test_a_bundle_from_another_checkpoint_is_not_used(exported, new_photos, tmp_path, capsys):
    from cli import main

    src, _ = exported
    run = tmp_path / "run"
    shutil.copytree(src, run, ignore=shutil.ignore_patterns("discriminate"))
    sharpen(run, 2.0)  # a retrained checkpoint: other weights, other bytes
    _, summary = discriminate(run, new_photos, tmp_path / "auto")
    assert summary["engine"] == "torch"
    assert "exported from another checkpoint" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exc:
        discriminate(run, new_photos, tmp_path / "onnx", "--engine", "onnx")
    err = capsys.readouterr().err.strip()
    assert exc.value.code == 2 and len(err.splitlines()) == 1 and "--engine onnx" in err
    assert "export again" in err and not (tmp_path / "onnx").exists()
    main(["export", "--run", str(run), "--check_photos", "2"])  # a stale bundle is replaced
    assert discriminate(run, new_photos, tmp_path / "again")[1]["engine"] == "onnxruntime"


def test_a_copied_run_keeps_its_bundle_by_content(exported, tmp_path):
    from experiments.target.onnx_engine import same_checkpoint

    run, info = exported
    copy = tmp_path / "copy.ckpt"
    shutil.copyfile(run / "checkpoints" / "last.ckpt", copy)  # new mtime, same bytes
    os.utime(copy, ns=(1, 1))
    assert same_checkpoint(copy, info["checkpoint"])
    with copy.open("ab") as fh:
        fh.write(b"x")
    assert not same_checkpoint(copy, info["checkpoint"])
    assert not same_checkpoint(tmp_path / "absent.ckpt", info["checkpoint"])


@pytest.mark.parametrize("resize", ["squash", "letterbox"])
def test_the_numpy_transform_is_torch_s_within_one_grey_level(resize):
    from PIL import Image

    from datamodules.decode import eval_array
    from datamodules.images import eval_transform

    rng = np.random.default_rng(0)
    one_level = 1 / 255 / 0.25 + 1e-6  # one grey level after normalisation
    for h, w in ((37, 91), (300, 120), (64, 64), (20, 23)):
        img = Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8))
        ours = eval_array(img, 48, resize, pad_value=7)
        ref = eval_transform(48, resize, 7)(img).numpy()
        assert ours.shape == ref.shape == (3, 48, 48) and ours.dtype == np.float32
        assert np.abs(ours - ref).max() <= one_level
        assert np.abs(ours - ref).mean() < 0.5 * one_level  # most pixels agree exactly


def test_signals_from_outputs_are_the_extracted_ones():
    from experiments.target.onnx_engine import signals_from_outputs
    from lightning_modules.extraction import extract_arrays

    torch.manual_seed(0)
    logits, emb = torch.randn(6, 5) * 8, torch.randn(6, 3)

    class Fixed(torch.nn.Module):
        def forward(self, x):
            return logits[x[:, 0].long()]

        def logits_and_embedding(self, x):
            return logits[x[:, 0].long()], emb[x[:, 0].long()]

    batches = [(torch.arange(6.0)[:, None], torch.full((6,), -1), torch.arange(6))]
    ref = extract_arrays(Fixed(), batches, "cpu", embed=lambda x: emb)
    ours = signals_from_outputs(logits.numpy(), emb.numpy())
    assert set(ref) == set(ours)
    for k in ref:
        np.testing.assert_allclose(ours[k], ref[k], rtol=1e-5, atol=1e-6, err_msg=k)


@pytest.mark.parametrize(
    "case",
    ["export_no_checkpoint", "export_check_photos", "engine_name", "engine_onnx_no_bundle"],
)
def test_bad_input_is_one_line_and_exit_2(case, exported, new_photos, tmp_path, capsys):
    from cli import main

    run, _ = exported
    if case == "export_no_checkpoint":
        bare = tmp_path / "bare"
        shutil.copytree(run, bare, ignore=shutil.ignore_patterns("checkpoints", "export"))
        args, expect = ["export", "--run", str(bare)], "no checkpoint"
    elif case == "export_check_photos":
        args, expect = ["export", "--run", str(run), "--check_photos", "-1"], "--check_photos"
    else:
        bare = tmp_path / "noexport"
        shutil.copytree(run, bare, ignore=shutil.ignore_patterns("export"))
        engine = "gpu" if case == "engine_name" else "onnx"
        args = ["discriminate", "--run", str(bare), "--images", str(new_photos)]
        args += ["--engine", engine, "--output", str(tmp_path / "x.csv")]
        expect = "choose one of" if engine == "gpu" else "python cli.py export"
    with pytest.raises(SystemExit) as exc:
        main(args)
    err = capsys.readouterr().err.strip()
    assert exc.value.code == 2 and len(err.splitlines()) == 1 and expect in err, err
    assert "Traceback" not in err and not (tmp_path / "x.csv").exists()
