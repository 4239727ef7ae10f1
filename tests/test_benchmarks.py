"""The benchmark scripts import, the result writer writes the required fields, run_all knows
every script, and the ResNet50 throughput script runs end to end at a tiny size."""

from __future__ import annotations

import importlib
import json
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[1] / "benchmarks"

SCRIPTS = sorted(p.stem for p in BENCH.glob("*.py") if p.stem != "__init__")
REQUIRED = {"name", "value", "unit", "goal", "machine", "date", "command"}


@pytest.mark.parametrize("module", SCRIPTS)
def test_benchmark_module_imports(module):
    mod = importlib.import_module(f"benchmarks.{module}")
    if module not in ("common", "run_all"):
        assert callable(mod.main)


def test_write_result_fields(tmp_path):
    from benchmarks import common

    out = tmp_path / "x.json"
    rec = common.write_result(
        "demo_ratio", 1.25, "x", ">= 1", {"a": 1}, ["--full"], out, threads=2, device="cpu"
    )
    saved = json.loads(out.read_text())
    assert saved == rec
    assert REQUIRED <= set(saved) and {"device", "details"} <= set(saved)
    assert saved["name"] == "demo_ratio" and saved["value"] == 1.25
    assert saved["command"].startswith("python ") and saved["command"].endswith("--full")
    assert "2 torch threads" in saved["machine"]
    assert saved["details"] == {"a": 1}
    # default location: results/<name>.json
    assert common.result_path("demo_ratio") == common.RESULTS / "demo_ratio.json"


def test_goal_met():
    from benchmarks import common

    assert common.goal_met(0.95, ">= 0.9") is True
    assert common.goal_met(0.2, "<= 0.15") is False
    assert common.goal_met(3100.0, ">= 3,000 img/s on one H100") is True
    assert common.goal_met(1.0, "fast") is None


def test_run_all_lists_every_script():
    from benchmarks import run_all

    listed = {b.script for b in run_all.BENCHMARKS}
    assert listed == {f"{s}.py" for s in SCRIPTS} - {"common.py", "run_all.py"}
    assert len({b.result for b in run_all.BENCHMARKS}) == len(run_all.BENCHMARKS)


def test_common_args_full_flag():
    import argparse

    from benchmarks import common

    a = common.add_common_args(argparse.ArgumentParser()).parse_args(["--full"])
    assert a.full and a.threads == 2 and a.device == "cpu" and a.out is None


def test_gpu_resnet50_tiny(tmp_path):
    import torch

    from benchmarks import gpu_resnet50

    threads = torch.get_num_threads()
    out = tmp_path / "r50.json"
    args = ["--steps", "1", "--warmup", "1", "--image-size", "32", "--batch-size", "2"]
    try:
        rec = gpu_resnet50.main([*args, "--threads", "1", "--out", str(out)])
    finally:
        torch.set_num_threads(threads)
    saved = json.loads(out.read_text())
    assert saved["name"] == "resnet50_train_throughput" and saved["value"] > 0
    assert saved["details"]["fast"]["bf16"] and saved["details"]["fast"]["channels_last"]
    assert not saved["details"]["baseline_fp32_contiguous"]["bf16"]
    assert "H100" in saved["goal"] and "note" in saved["details"]
    assert rec["value"] == saved["value"]
