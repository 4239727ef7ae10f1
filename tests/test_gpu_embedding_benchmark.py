"""benchmarks/gpu_embedding_b5.py at tiny size on the CPU: it trains the population embedding's
B5 network in bf16, times its forward floor and writes one result."""

from __future__ import annotations

import json

import pytest


def test_b5_embedding_benchmark_tiny(tmp_path):
    from benchmarks import gpu_embedding_b5

    out = tmp_path / "b5.json"
    args = ["--height", "32", "--width", "32", "--batch-size", "2", "--steps", "1"]
    gpu_embedding_b5.main([*args, "--warmup", "0", "--threads", "1", "--out", str(out)])
    rec = json.loads(out.read_text())
    d = rec["details"]
    assert d["arch"] == "tf_efficientnet_b5" and d["height"] == 32
    assert d["train_img_per_s"] > 0 and d["floor_img_per_s"] > 0
    assert rec["value"] == pytest.approx(d["train_img_per_s"] / d["floor_img_per_s"])
    assert "CPU run" in d["note"]
