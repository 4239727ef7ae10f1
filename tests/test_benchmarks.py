"""The benchmark scripts answer ``--help``, the result writer writes the required fields, run_all
knows every script, and the ResNet50 throughput script runs end to end at a tiny size."""

from __future__ import annotations

import importlib
import json
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[1] / "benchmarks"

#: the command-line scripts (the others, e.g. common.py, are their shared library)
SCRIPTS = sorted(p.stem for p in BENCH.glob("*.py") if '__name__ == "__main__"' in p.read_text())
REQUIRED = {"name", "value", "unit", "goal", "machine", "date", "command"}


@pytest.mark.parametrize("module", SCRIPTS)
def test_benchmark_script_answers_help(module, capsys):
    """Each script's command line (``main``; run_all's ``parse``) answers ``--help`` before any
    work: exit 0, a usage line with its docstring's first line and the common ``--full``."""
    mod = importlib.import_module(f"benchmarks.{module}")
    with pytest.raises(SystemExit) as exc:
        (mod.parse if module == "run_all" else mod.main)(["--help"])
    assert exc.value.code == 0
    out = " ".join(capsys.readouterr().out.split())
    assert out.startswith("usage:") and " ".join(mod.__doc__.splitlines()[0].split()) in out
    assert "--full" in out


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
    assert listed == {f"{s}.py" for s in SCRIPTS} - {"run_all.py"}
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
    assert "GPU" in saved["goal"] and "note" in saved["details"]
    assert rec["value"] == saved["value"]


def test_run_all_smoke_and_gpu_selection(tmp_path):
    """Every script has smoke arguments, --gpu-checks picks the GPU figures, and the commands
    carry the smoke arguments and the device (the GPU script, benchmarks/gpu_checks.sh, runs
    run_all with --gpu-checks --device cuda)."""
    from benchmarks import run_all

    assert all(b.smoke for b in run_all.BENCHMARKS)
    a = run_all.parse(["--gpu-checks", "--smoke", "--device", "cpu", "--out-dir", str(tmp_path)])
    assert sorted(a.only) == sorted(run_all.GPU_CHECKS)
    assert set(run_all.GPU_CHECKS) <= {b.key for b in run_all.BENCHMARKS}
    lo = next(b for b in run_all.BENCHMARKS if b.key == "label_only_vs_art")
    cmd = run_all.command(lo, a, tmp_path)
    assert cmd[-len(lo.smoke) - 2 : -2] == list(lo.smoke) or set(lo.smoke) <= set(cmd)
    assert cmd[cmd.index("--device") + 1] == "cpu"
    sh = (BENCH / "gpu_checks.sh").read_text()
    assert "--gpu-checks" in sh and "--device cuda" in sh
    records = [{"name": "s", "details": {}}, {"name": "t", "details": [1, 2]}]
    page = run_all.markdown([("x", "1", "s", "< 2", "yes")], records, 3.0)
    assert "| x | 1 | s | < 2 | yes |" in page


def test_label_only_floor_tiny(tmp_path):
    """Our search against the forward floor, and against ART with the per-call figures, on a tiny
    model (the GPU check runs the same code with --device cuda)."""
    import torch
    from torch import nn

    from benchmarks import label_only_vs_art as lo

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        torch.manual_seed(0)
        model = nn.Sequential(nn.Conv2d(3, 4, 3, 2, 1), nn.Flatten(), nn.Linear(64, 3)).eval()
        x = torch.rand(8, 3, 8, 8) * 4 - 2
        hsj = dict(max_iter=2, init_eval=4, max_eval=8, init_size=5, chunk=16)
        fl = lo.ours_vs_floor(model, x, hsj, reps=2, seed=0)
        assert fl["ratio_to_floor"] > 0 and fl["floor_qps"] >= fl["floor_qps_contiguous"]
        assert len(fl["ratio_to_floor_range"]) == 2 and fl["result"]["queries"].sum() > 0
        m = torch.tensor([1, 0] * 4).numpy()
        r = lo.compare(model, x[:4], m[:4], x[4:], m[4:], 3, {**hsj, "chunk": 16})
        ov = r["art_overhead"]
        assert ov["art_calls_per_sample"] > 0 and 0 < ov["art_model_time_share"] <= 1
        assert ov["ceiling_speedup"] > 0 and r["floor"]["ratio_to_floor"] > 0
        rec = lo.write_floor(r["floor"], r, [], tmp_path / "lo.json", {"threads": 1})
    finally:
        torch.set_num_threads(threads)
    assert rec["name"] == "label_only_vs_forward_floor"
    assert json.loads((tmp_path / lo.FLOOR_RESULT).read_text())["goal"] == ">= 0.8"


def test_scale_growth_math():
    """Growth exponents by each stage's units, and the super-linear flag."""
    from benchmarks import scale

    def size(n, t_lin, t_quad):
        return {
            "individuals": n,
            "photos": 8 * n,
            "stages": {
                "lin": {"seconds": t_lin, "units": 8 * n, "peak_rss_mb": 1.0},
                "quad": {"seconds": t_quad, "units": 8 * n, "peak_rss_mb": 1.0},
            },
        }

    sizes = [size(100, 2.0, 2.0), size(1000, 20.0, 200.0)]
    exps = scale.growth(sizes)
    assert exps["lin"][0] == pytest.approx(1.0) and exps["quad"][0] == pytest.approx(2.0)
    assert [b.split(" ")[0] for b in scale.flagged(sizes, exps, "seconds")] == ["quad"]
    table = scale.markdown(sizes, exps)
    assert "| quad | 2.00 s, 1 MiB | 200.00 s, 1 MiB | 2.00 |" in table
    # a classifier stage quadratic in photos but linear in its logit cells (photos x classes,
    # both 10x) is judged by its cells: not flagged; its table cell shows both
    for r, cells in zip(sizes, (800 * 100, 8000 * 1000)):
        r["stages"]["quad"]["work_units"] = cells
    work = scale.growth(sizes, "seconds", "work_units")
    assert work["lin"] == [None] and work["quad"][0] == pytest.approx(1.0)
    assert scale.flagged(sizes, scale.judged(exps, work), "seconds") == []
    assert "| 2.00 [1.00] |" in scale.markdown(sizes, exps, None, work)
    assert scale.step_name(["ensemble_any", "ensemble_mean_score"]) == "ensemble"
    assert scale.step_name(["yeom"]) == "yeom"


@pytest.mark.slow
def test_scale_tiny(tmp_path):
    """The scale benchmark end to end at two tiny catalog sizes (every stage runs)."""
    import torch

    from benchmarks import scale

    threads = torch.get_num_threads()
    try:
        rec = scale.main(
            ["--sizes", "12", "24", "--no-tracemalloc", "--threads", "1"]
            + ["--out", str(tmp_path / "scale.json")]
        )
    finally:
        torch.set_num_threads(threads)
    stages = rec["details"]["sizes"][0]["stages"]
    for name in ("read_plan", "decode_cache", "train_epoch", "monitor_pass", "final_signals"):
        assert stages[name]["seconds"] > 0, name
    assert {"attack_yeom", "attack_salem", "attack_label_only", "attack_ensemble"} <= set(stages)
    assert "attack_calibrated" in stages
    assert "discriminate" in stages and "| read_plan |" in rec["details"]["markdown"]


def test_startup_helpers(tmp_path):
    """The run folder and photo folder the start-up benchmark times discriminate on."""
    from benchmarks import common

    run = common.tiny_run_folder(tmp_path, n_individuals=6, encounters=2, photos=2, size=16)
    assert (run / "checkpoints" / "last.ckpt").is_file() and (run / "split_manifest.csv").is_file()
    photos = common.photo_folder(tmp_path / "cat", tmp_path / "photos", 7, per_group=5)
    assert len(list(photos.rglob("*.jpg"))) == 7 and len(list(photos.iterdir())) == 2
    assert common.median_spread([3, 1, 2, 10]) == {"median": 2.5, "min": 1, "max": 10, "n": 4}


def test_monitor_overhead_short_warmup(tmp_path):
    """The monitor benchmark's warm-up epoch stops after the given batches; later epochs run
    whole (and the DP benchmark's warm-up is cut the same way)."""
    import pytorch_lightning as pl
    import torch
    from torch.utils.data import DataLoader, TensorDataset

    from benchmarks.dp_throughput import run_epochs
    from benchmarks.monitor_overhead import short_warmup
    from experiments.side_models.training import quiet_trainer

    class Tiny(pl.LightningModule):
        def __init__(self):
            super().__init__()
            self.net = torch.nn.Linear(4, 2)
            self.seen: list[int] = []

        def training_step(self, batch, batch_idx):
            self.seen.append(self.current_epoch)
            return torch.nn.functional.cross_entropy(self.net(batch[0]), batch[1])

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.1)

    data = TensorDataset(torch.randn(40, 4), torch.randint(0, 2, (40,)))
    loader = DataLoader(data, batch_size=4)
    model = Tiny()
    short_warmup(model, 3)
    quiet_trainer(max_epochs=3, default_root_dir=str(tmp_path)).fit(model, loader)
    assert [model.seen.count(e) for e in range(3)] == [3, 10, 10]
    opt = torch.optim.SGD(model.net.parameters(), lr=0.1)
    _, n = run_epochs(model.net, opt, loader, 1, torch.device("cpu"), max_batches=2)
    assert n == 8


def test_knn_gallery_smoke_finds_the_same_neighbours_as_the_full_matrix(tmp_path):
    from benchmarks.knn_gallery import main

    out = tmp_path / "knn.json"
    rec = main(["--gallery", "2000", "--queries", "100", "--dim", "32", "--output", str(out)])
    d = rec["details"]
    assert d["same_neighbours"] is True and d["gallery"] == 2000 and d["queries"] == 100
    assert d["blocked_peak_mib"] > 0 and d["full_peak_mib"] > 0 and rec["value"] > 0
