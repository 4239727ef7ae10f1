"""The known/new table command (experiments/commands/openset_table.py): a run on a tiny
Where's Whale-do catalog, and its encounter scores from discriminate's scorer."""

from __future__ import annotations

import json

import numpy as np
import pytest


@pytest.mark.slow
def test_openset_table_runs_on_a_tiny_noaa_catalog(tmp_path, noaa_catalog):
    from datamodules.errors import DataError
    from experiments.commands.openset_table import main

    root = noaa_catalog(tmp_path / "cat", n_ind=12, n_enc=3, per_enc=2)
    out = tmp_path / "table"
    args = ["--root", str(root), "--output", str(out), "--protocols", "group", "--epochs", "1"]
    args += ["--image_size", "16", "--n_boot", "20", "--cache_dir", str(tmp_path / "cache")]
    main([*args, "--targets", "softmax-letterbox", "arcface-letterbox"])
    res = json.loads((out / "table.json").read_text())["results"]
    assert [r["target"] for r in res] == ["softmax-letterbox", "arcface-letterbox"]
    assert set(res[1]["attacks"]) == {"yeom", "salem", "baseline_msp", "baseline_nn_cosine"}
    m = res[0]["attacks"]["baseline_nn_cosine"]
    assert m["n_known"] > 0 and m["n_new"] > 0 and len(m["auroc"]) == 3
    assert "| group | arcface-letterbox | baseline_nn_cosine |" in (out / "table.md").read_text()
    with pytest.raises(DataError, match="already exists"):
        main(args)


def test_openset_table_scores_encounters_with_discriminate_s_scorer():
    """The table's encounters are :class:`experiments.known_new.classifier_scorer.Scorer`'s: the mean of
    the photos' scores on the calibration scale (minus the log of Yeom's loss) and the mean of
    their softmax probabilities."""
    from attacks.known_new import Scorer, feature
    from attacks.known_new import encounter_rows as encounters
    from attacks.yeom import YeomAttack
    from experiments.known_new.openset_table_rows import scorer_for

    loss = np.array([0.5, 2.0, 1.0, 0.25])
    logits = np.log(np.array([[0.7, 0.3], [0.2, 0.8], [0.5, 0.5], [0.9, 0.1]]))
    sig = {
        "loss_pred": loss, "logits": logits, "embedding": np.eye(4)[:, :3],
        "split": np.array(["train", "train", "test", "attack"]),
        "role": np.array(["member", "member", "member", "nonmember"]),
        "identity": np.array(["a", "a", "b", "c"]), "label": np.array([0, 0, 1, -1]),
    }  # fmt: skip
    scorer = scorer_for("yeom", YeomAttack(), sig)
    assert isinstance(scorer, Scorer) and not scorer.by_cosine and scorer.rule == "mean"
    enc = encounters(scorer, sig, np.array(["a/1", "a/1", "b/1", "c/1"]))
    assert list(enc["name"]) == ["a/1", "b/1", "c/1"]
    want = feature("yeom", -loss)
    np.testing.assert_allclose(enc["score"], [want[:2].mean(), want[2], want[3]])
    np.testing.assert_allclose(enc["cls"][0], [0.45, 0.55])
    assert list(enc["member"]) == [1, 1, 0] and list(enc["label"]) == [0, 1, -1]
    nn = scorer_for("baseline_nn_cosine", YeomAttack(), sig)
    assert nn.by_cosine and nn.class_scores(sig).shape == (4, 2)
