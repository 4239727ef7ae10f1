"""`cli.py defend`: a two-variant sweep on tiny synthetic whales writes the table and the plots."""

from __future__ import annotations

import csv
import math

import pytest
import torch

import cli


@pytest.mark.slow
def test_defend_writes_table_and_plot(tmp_path):
    torch.set_num_threads(1)
    out = tmp_path / "sweep"
    cli.main(
        [
            "defend",
            "--config",
            "defense_sweep.yaml",
            "--epochs",
            "1",
            "--output",
            str(out),
            "--only",
            "[base, dp_sigma2]",
            "--fit_args",
            "[--trainer.enable_progress_bar, 'false', --trainer.accelerator, cpu, "
            f"--data.init_args.root, {tmp_path / 'catalog'}, "
            "--data.init_args.reader.init_args.n_individuals, '9', "
            "--data.init_args.reader.init_args.encounters_per_individual, '3', "
            "--data.init_args.reader.init_args.photos_per_encounter, '2', "
            "--data.init_args.reader.init_args.image_size, '32', --data.init_args.loader.image_size, '32', "
            "--data.init_args.loader.batch_size, '4', --data.init_args.loader.num_workers, '0']",
        ]
    )
    rows = list(csv.DictReader(open(out / "defense_table.csv")))
    assert [r["variant"] for r in rows] == ["base", "dp_sigma2"]
    assert math.isnan(float(rows[0]["epsilon"])) and 0 < float(rows[1]["epsilon"]) < math.inf
    assert float(rows[1]["noise_multiplier"]) == 2.0
    # the empirical lower bound sits beside the accountant's epsilon and never exceeds it here
    assert math.isnan(float(rows[0]["epsilon_lb"]))
    assert 0 <= float(rows[1]["epsilon_lb"]) <= float(rows[1]["epsilon"])
    assert "epsilon_lb" in (out / "defense_table.md").read_text()
    # which attack proved it (or "-" when none proves more than 0)
    assert rows[0]["epsilon_lb_attack"] == "-"
    assert rows[1]["epsilon_lb_attack"] in {"-", "yeom_true", "yeom", "msp", "entropy", "nn_cosine"}
    for r in rows:
        assert 0 <= float(r["attack_auc"]) <= 1 and 0 <= float(r["test_acc"]) <= 1
    assert (out / "privacy_utility.png").stat().st_size > 1000
    assert (out / "defense_table.md").read_text().startswith("| variant")
