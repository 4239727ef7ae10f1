"""The leakage monitor (experiments/callbacks/leakage_monitor.py): its seeded, stratified row
sample and per-pass row budget, the per-epoch chart it draws, the opt-in label-only attack under a
query budget, and its image at the same global step as its ``leak/*`` scalars. (The cheap attacks
it scores: tests/test_leakage_math.py; its scalars over a whole demo fit: tests/test_run_folder.py.)"""

from __future__ import annotations

import numpy as np
import pytest

import cli
from attacks.epoch_leakage import CHEAP_ATTACKS
from attacks.report import LeakageChart, leakage_image
from attacks.signals import load_signals
from experiments.callbacks.leakage_monitor import LeakageMonitor, pass_budget, sample_rows
from tests.cli_runs import accumulators


def test_monitor_row_sample_is_stratified_seeded_and_ordered():
    rows = [
        {"split": sp, "set": st, "role": ro, "sample_id": f"{sp}{st}{ro}{i}"}
        for sp, st, ro, n in (
            ("train", "", "member", 60),
            ("test", "eval", "member", 20),
            ("eval", "eval", "nonmember", 20),
            ("val", "attack", "member", 15),
            ("attack", "attack", "nonmember", 5),
        )
        for i in range(n)
    ]
    assert sample_rows(rows, None) is rows and sample_rows(rows, 500) is rows
    got = sample_rows(rows, 30, seed=1)
    assert got == sample_rows(rows, 30, seed=1)  # the same rows every epoch
    assert got != sample_rows(rows, 30, seed=2)
    assert got == [r for r in rows if r in got]  # manifest order kept
    count = lambda sp: sum(r["split"] == sp for r in got)  # noqa: E731
    assert (count("train"), count("test"), count("eval"), count("val"), count("attack")) == (
        15,
        5,
        5,
        4,
        1,
    )


def test_monitor_row_budget_follows_the_training_set():
    """Rows per pass = ceil(factor x training photos x every_n_epochs), capped by max_rows, and
    the sampled rows are the same every pass."""
    assert pass_budget(96, 4, 0.4, None) == 154  # the demo: ceil(153.6)
    assert pass_budget(100, 5, 0.4, None) == 200  # no float round-up past an exact product
    assert pass_budget(666, 5, 0.4, 4096) == 1332  # 1,000 individuals, paper settings
    assert pass_budget(20_000, 5, 0.4, 4096) == 4096  # max_rows still caps
    assert pass_budget(96, 1, None, None) is None and pass_budget(96, 1, None, 50) == 50
    assert pass_budget(3, 1, 0.01, None) == 1
    rows = [
        {"split": sp, "set": st, "role": ro, "sample_id": f"{sp}{i}"}
        for sp, st, ro, n in (
            ("train", "", "member", 100),
            ("eval", "eval", "nonmember", 60),
            ("attack", "attack", "nonmember", 40),
        )
        for i in range(n)
    ]
    n = pass_budget(100, 1, 0.5, None)
    got = sample_rows(rows, n, seed=0)
    assert len(got) == n == 50 and got == sample_rows(rows, n, seed=0)
    assert sample_rows(rows, pass_budget(100, 5, 0.4, None)) is rows  # clipped to what exists
    with pytest.raises(ValueError, match="rows_per_train_photo"):
        LeakageMonitor(rows_per_train_photo=0)


def test_leakage_chart_redraws_only_the_curves():
    """The per-epoch chart keeps its figure while the curves and ranges stay, and matches the
    from-scratch image's size."""

    def row(e):
        r = {"leak/train_acc": 0.3 + 0.03 * e, "leak/test_acc": 0.3, "leak/gap": 0.03 * e}
        r |= {"leak/kl": 0.1, "leak/kl_null": 0.05}
        for i, s in enumerate(CHEAP_ATTACKS):
            r |= {f"leak/{s}_auc": 0.5 + 0.01 * i * e, f"leak/{s}_tpr@1%fpr": 0.01 * i * e}
        return r

    chart, rows, images = LeakageChart("t", x_max=9), [], []
    for e in range(4):
        rows.append(row(e))
        images.append(chart.image(list(range(e + 1)), rows))
        if e == 1:
            fig = chart._fig
    assert chart._fig is fig  # epochs 2 and 3 only moved the lines
    assert images[-1].shape == leakage_image(list(range(4)), rows).shape
    assert images[-1].dtype == np.uint8 and not np.array_equal(images[-1], images[-2])


@pytest.mark.slow
def test_monitor_label_only_opt_in_under_a_query_budget(tmp_path, tiny_args, scalars):
    """With ``leakage.label_only`` the monitor runs the boundary search on a few attack- and
    evaluation-set rows each pass and logs the label-only attack beside the others."""
    budget = "{max_per_role: 2, max_queries: 30, max_iter: 1, init_eval: 5, init_size: 5}"
    cli.main(tiny_args(tmp_path, epochs=1, name="lo") + ["--leakage.label_only", budget])
    run = tmp_path / "logs" / "lo" / "version_0"
    assert len(scalars(run, "leak/label_only_auc")) == 1
    sig = load_signals(run / "signals" / "epoch=000.npz")
    measured = np.isfinite(sig["boundary_distance"])
    assert measured.sum() == 8  # 2 per role in the attack and in the evaluation set
    assert set(sig["set"][measured]) == {"attack", "eval"}


@pytest.mark.slow
def test_monitor_image_and_scalars_share_the_global_step(tmp_path, tiny_args, scalars):
    # batches of 2: several optimizer steps per epoch, so steps and epoch numbers differ
    cli.main(tiny_args(tmp_path, epochs=2) + ["--data.init_args.loader.batch_size", "2"])
    run = tmp_path / "logs" / "run" / "version_0"
    gap = [s for s, _ in scalars(run, "leak/gap")]
    images = sorted(
        e.step for acc in accumulators(run) for e in acc.Images("leak/overfitting_vs_leakage")
    )
    assert len(gap) == 2 and images == gap
    loss = [s for s, _ in scalars(run, "train/loss_epoch")]
    assert loss == gap  # the epoch's other epoch-end scalars sit there too
    assert gap[0] > 1 and gap[1] > 2 * gap[0]  # the global step, not the epoch number
