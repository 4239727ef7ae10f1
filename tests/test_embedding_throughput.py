"""benchmarks/embedding_throughput.py at tiny size: the cached Lightning epochs, the raw floor and
both fine-tune epochs run on one synthetic population and one result file holds every figure."""

from __future__ import annotations

import json

import pytest


def test_embedding_throughput_tiny(tmp_path):
    import torch

    from benchmarks import embedding_throughput

    threads = torch.get_num_threads()
    out = tmp_path / "embedding.json"
    size = ["--individuals", "4", "--height", "32", "--width", "32", "--batch-size", "8"]
    try:
        embedding_throughput.main([*size, "--epochs", "1", "--threads", "1", "--out", str(out)])
    finally:
        torch.set_num_threads(threads)
    rec = json.loads(out.read_text())
    d = rec["details"]
    assert rec["name"] == "embedding_cached_epoch_vs_floor" and rec["goal"] == ">= 0.8"
    assert d["arch"] == "tf_efficientnet_lite0" and d["frozen_stages"] == 6
    assert d["views"] == {"height": 32, "width": 32, "views": 3, "seed": 0}
    # 4 whales x 2 encounters x 2 photos x 3 views, whole batches of 8
    assert d["train_views"] == 48 and d["samples_per_epoch"] == 48 and d["batch_size"] == 8
    assert len(d["cached_epoch_s"]) == len(d["floor_epoch_s"]) == 1
    assert d["cache_build_s"] > 0 and d["activation_shape"][0] == 112
    for side in ("every_step", "all_stages"):
        assert d[side]["samples"] == 40 and d[side]["samples_per_s"] > 0  # 1 warm-up batch
    assert rec["value"] == pytest.approx(d["cached_samples_per_s"] / d["floor_samples_per_s"])
    assert d["cached_over_every_step"] == pytest.approx(
        d["cached_samples_per_s"] / d["every_step"]["samples_per_s"]
    )
