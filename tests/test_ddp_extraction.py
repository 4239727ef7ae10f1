"""Signal extraction from one checkpoint: 2 CPU processes (gloo, ``cli.py attack`` as torchrun
starts it) give the single-process arrays, sample for sample, and only rank 0 writes."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import torch

from attacks.signals import load_signals
from experiments.run.folder import RunContext
from experiments.side_models.training import extract_signals

# one rank of `torchrun --nproc_per_node 2 cli.py attack --run RUN` with every attack switched
# off; it records which writers it called
CHILD = """
import json, os, sys
from pathlib import Path
import experiments.attack_steps.pipeline as attack_mod
import experiments.run.folder as run_mod
import cli

calls = []
for mod, name in ((run_mod, "save_signals"), (attack_mod, "write_summary")):
    def wrapped(*a, _orig=getattr(mod, name), _name=name, **k):
        calls.append(_name)
        return _orig(*a, **k)
    setattr(mod, name, wrapped)
cli.main(["attack", "--run", sys.argv[1], "--device", "cpu", "--yeom.enabled", "false",
          "--salem.enabled", "false", "--label_only.enabled", "false",
          "--ensemble.enabled", "false", "--baselines", "false"])
Path(sys.argv[2], "rank%s.json" % os.environ["RANK"]).write_text(json.dumps(calls))
"""


@pytest.mark.ddp
@pytest.mark.slow
def test_two_process_extraction_equals_single_process(tmp_path, repo, ddp_env, make_run_folder):
    # 45 synthetic whale photos: an odd count, so the two shards differ in size
    run = make_run_folder(tmp_path, n_individuals=9, encounters=3, photos=3, batch_size=8)
    ctx = RunContext.open(run, "cpu")
    n = len(ctx.rows)
    assert n % 2 == 1, n  # uneven shards: 23 and 22 rows
    torch.set_num_threads(1)
    single = extract_signals(ctx.model(), ctx.rows, ctx.roots, ctx.image_size, device="cpu")

    env = {**ddp_env(), "WORLD_SIZE": "2"}
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", CHILD, str(run), str(tmp_path)],
            cwd=repo,
            env={**env, "RANK": str(r), "LOCAL_RANK": str(r)},
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        for r in range(2)
    ]
    for r, p in enumerate(procs):
        _, err = p.communicate(timeout=300)
        assert p.returncode == 0, f"rank {r}:\n{err[-3000:]}"

    # rank 0 wrote the signal file and the report, rank 1 nothing
    assert json.loads((tmp_path / "rank0.json").read_text()) == ["save_signals", "write_summary"]
    assert json.loads((tmp_path / "rank1.json").read_text()) == []
    assert (run / "attacks" / "report.md").is_file()
    assert json.loads((run / "signals" / "final_timing.json").read_text())["world_size"] == 2
    assert sorted(p.name for p in (run / "signals").iterdir()) == [
        "final.npz",
        "final_timing.json",
    ]

    ddp = load_signals(run / "signals" / "final.npz")
    assert sorted(ddp) == sorted(single)
    assert np.array_equal(ddp["index"], np.arange(n))  # every sample once, in manifest order
    assert np.array_equal(single["index"], np.arange(n))
    for key in ("sample_id", "file", "identity", "split", "role", "set", "label"):
        assert np.array_equal(ddp[key], single[key]), key
    for key in ("logits", "embedding", "loss_true", "loss_pred", "max_prob", "entropy"):
        assert ddp[key].shape == single[key].shape, key
        np.testing.assert_allclose(ddp[key], single[key], rtol=0, atol=1e-5, err_msg=key)
