"""Training health: a non-finite loss stops the fit in one line (status 2) and keeps the last
good checkpoint; a fit that ends at chance level on its training data says so and records it in
``fit_health.json``."""

from __future__ import annotations

import json

import pytest
import torch

import cli
from experiments.callbacks.fit_health import at_chance, read_health


def test_at_chance_is_three_binomial_sd_above_one_over_classes():
    # 10 classes, 100 photos: chance 0.1, sd 0.03, bound 0.19 (by hand)
    assert at_chance(0.19, 10, 100) and not at_chance(0.191, 10, 100)
    assert at_chance(0.0, 10, 100)
    assert not at_chance(1.0, 2, 10)


def test_read_health_absent_unreadable_and_at_chance(tmp_path):
    assert read_health(tmp_path) is None
    (tmp_path / "fit_health.json").write_text("{not json")
    assert "could not be read" in read_health(tmp_path)["unreadable"]
    (tmp_path / "fit_health.json").write_text("[1]")
    assert "not a JSON object" in read_health(tmp_path)["unreadable"]
    health = {"at_chance": True, "train_accuracy": 0.11, "chance_accuracy": 0.111}
    (tmp_path / "fit_health.json").write_text(json.dumps(health))
    assert read_health(tmp_path) == health


def run_fit(args, capsys) -> tuple[int, str, str]:
    """``cli.main(args)``: its exit status (0 when it returned), stdout and stderr."""
    try:
        cli.main(args)
        code = 0
    except SystemExit as exc:
        code = exc.code or 0
    out = capsys.readouterr()
    return code, out.out, out.err


@pytest.mark.slow
def test_a_non_finite_loss_stops_the_fit_and_keeps_the_last_good_checkpoint(
    tmp_path, tiny_args, capsys, one_thread
):
    # one training batch an epoch (6 photos of 3 target whales): last.ckpt after steps 1 and 2
    hook = {"class_path": "tests.fault_hooks.PoisonAtStep", "init_args": {"step": 2}}
    args = [
        *tiny_args(tmp_path, epochs=4),
        "--leakage.every_n_epochs",
        "10",
        f"--trainer.callbacks+={json.dumps(hook)}",
    ]
    code, _, err = run_fit(args, capsys)
    assert code == 2
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1 and "training loss became nan at step 2" in lines[0], err
    ckpt = tmp_path / "logs" / "run" / "version_0" / "checkpoints" / "last.ckpt"
    assert str(ckpt) in lines[0]
    state = torch.load(ckpt, map_location="cpu", weights_only=True)
    assert state["global_step"] == 2
    assert all(
        torch.isfinite(v).all() for v in state["state_dict"].values() if v.is_floating_point()
    )


@pytest.mark.slow
def test_a_fit_at_chance_says_so_and_records_it(tmp_path, tiny_args, capsys, one_thread):
    args = [*tiny_args(tmp_path, epochs=1), "--model.init_args.optimizer.init_args.lr", "1e-12"]
    code, out, _ = run_fit(args, capsys)
    assert code == 0
    health = json.loads((tmp_path / "logs" / "run" / "version_0" / "fit_health.json").read_text())
    assert health["at_chance"] is True and health["chance_accuracy"] == pytest.approx(1 / 3)
    assert "chance level" in out
