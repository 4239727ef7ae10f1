"""The calibrated detector audit: the per-image signal against hand-computed values, the reference
halves and their bookkeeping, and LiRA/RMIA rows in a tiny audit's report."""

from __future__ import annotations

import json

import numpy as np
import pytest
import yaml

from attacks.detection.scalar_signal import (
    box_iou,
    detection_confidence,
    detection_phi,
    gt_match_scores,
    logit_scale,
)
from attacks.signals import load_signals
from datamodules.detection.split import reference_training_rows


def _one_image():
    """Two GT objects: class 1 at [0, 0, .5, .5], class 2 at [.5, .5, 1, 1]; four predictions."""
    gt_boxes = np.array([[[0, 0, 0.5, 0.5], [0.5, 0.5, 1, 1]]], np.float32)
    gt_labels = np.array([[1, 2]])
    boxes = np.array(
        [
            [
                [0, 0, 0.5, 0.5],  # exact, class 1, 0.9
                [0, 0, 0.5, 0.4],  # IoU 0.8, class 1, 0.95 -> best for GT 0
                [0.5, 0.5, 1, 1],  # exact but class 1: wrong class for GT 1
                [0.5, 0.5, 0.75, 1],  # IoU 0.5 with GT 1, class 2, 0.3 -> counts (>= 0.5)
            ]
        ],
        np.float32,
    )
    scores = np.array([[0.9, 0.95, 0.8, 0.3]], np.float32)
    labels = np.array([[1, 1, 1, 2]])
    return boxes, scores, labels, gt_boxes, gt_labels


def test_box_iou_hand_values():
    a = np.array([[0, 0, 2, 2]], float)
    b = np.array([[1, 1, 3, 3], [0, 0, 2, 1], [5, 5, 6, 6]], float)
    # overlap 1 / union 7; 2 / 4; disjoint
    np.testing.assert_allclose(box_iou(a, b), [[1 / 7, 0.5, 0.0]])


def test_signal_hand_computed():
    boxes, scores, labels, gt_boxes, gt_labels = _one_image()
    m = gt_match_scores(boxes, scores, labels, [4], gt_boxes, gt_labels, [2])
    np.testing.assert_allclose(m, [[0.95, 0.3]], rtol=1e-6)
    p = detection_confidence(boxes, scores, labels, [4], gt_boxes, gt_labels, [2])
    np.testing.assert_allclose(p, [0.625], rtol=1e-6)
    # only the first 3 predictions valid: GT 1 loses its match -> (0.95 + 0) / 2
    p3 = detection_confidence(boxes, scores, labels, [3], gt_boxes, gt_labels, [2])
    np.testing.assert_allclose(p3, [0.475], rtol=1e-6)
    # IoU threshold above 0.8: only the exact class-1 box (0.9) matches GT 0, and the 0.5 box not
    p_hi = detection_confidence(boxes, scores, labels, [4], gt_boxes, gt_labels, [2], 0.9)
    np.testing.assert_allclose(p_hi, [0.45], rtol=1e-6)
    sig = {
        "boxes": boxes,
        "scores": scores,
        "labels": labels,
        "n_boxes": np.array([4]),
        "gt_boxes": gt_boxes,
        "gt_labels": gt_labels,
        "n_gt": np.array([2]),
    }
    np.testing.assert_allclose(detection_phi(sig), [np.log(0.625 / 0.375)], rtol=1e-6)


def test_signal_padding_and_edges():
    boxes, scores, labels, gt_boxes, gt_labels = _one_image()
    # one GT only (the second slot is padding): mean over the one valid object
    p = detection_confidence(boxes, scores, labels, [4], gt_boxes, gt_labels, [1])
    np.testing.assert_allclose(p, [0.95], rtol=1e-6)
    # no GT object: 0; no prediction: 0
    assert detection_confidence(boxes, scores, labels, [4], gt_boxes, gt_labels, [0])[0] == 0
    assert detection_confidence(boxes, scores, labels, [0], gt_boxes, gt_labels, [2])[0] == 0
    phi = logit_scale(np.array([0.0, 0.5, 1.0]))
    np.testing.assert_allclose(phi, [np.log(1e-6 / (1 - 1e-6)), 0.0, np.log((1 - 1e-6) / 1e-6)])


def _pool(n=10):
    return [
        {"sample_id": f"voc:{i}", "file": f"{i}.jpg", "group": f"{i}.jpg", "side": "target"}
        for i in range(n)
    ]


def test_reference_halves_are_complementary_pairs():
    pool = _pool(10)
    ids = {r["sample_id"] for r in pool}
    halves = [{r["sample_id"] for r in reference_training_rows(pool, k, seed=3)} for k in range(4)]
    for j in (0, 2):
        a, b = halves[j], halves[j + 1]
        assert a | b == ids and not a & b and len(a) == 5
    assert halves[0] != halves[2]  # another pair, another cut
    again = {r["sample_id"] for r in reference_training_rows(pool, 0, seed=3)}
    assert again == halves[0]
    counts = {i: sum(i in h for h in halves) for i in ids}
    assert set(counts.values()) == {2}  # every image IN for exactly half of 4 references


TINY = {
    "seed_everything": 0,
    "data": {
        "class_path": "datamodules.detection.datamodule.DetectionDataModule",
        "init_args": {
            "reader": {
                "class_path": "datamodules.detection.voc.VocReader",
                "init_args": {"years": None, "image_sets": ["trainval"]},
            },
            "loader": {
                "image_size": 48,
                "augment": "none",
                "batch_size": 8,
                "num_workers": 0,
                "max_eval_images": 8,
            },
        },
    },
    "model": {
        "class_path": "lightning_modules.detector.ObjectDetector",
        "init_args": {"arch": "tiny_ssd", "input_size": 48, "predict": {"max_boxes": 10}},
    },
    "trainer": {
        "max_epochs": 1,
        "accelerator": "cpu",
        "enable_model_summary": False,
        "enable_progress_bar": False,
        "check_val_every_n_epoch": 5,
    },
    "audit": {
        "rows": ["xgb"],
        "xgb": {"n_estimators": 5},
        "n_boot": 20,
        "calibrated": {"enabled": True, "n_references": 2},
    },
}


@pytest.fixture(scope="module")
def tiny_audit(tmp_path_factory, write_voc):
    import cli

    tmp = tmp_path_factory.mktemp("detcal")
    root = write_voc(tmp / "voc", n=16)
    cfg = tmp / "tiny_cal.yaml"
    cfg.write_text(yaml.safe_dump(TINY))
    out = tmp / "audit"
    cli.main(
        ["audit", "--config", str(cfg), "--output", str(out), "--data.init_args.root", str(root)]
    )
    return tmp, cfg, out, root


def test_tiny_audit_has_calibrated_rows(tiny_audit):
    _, _, out, _ = tiny_audit
    report = json.loads((out / "report.json").read_text())
    rows = report["calibrated"]["rows"]
    assert set(rows) == {"lira_offline", "lira_online", "rmia_k1", "rmia_k3"}
    for m in rows.values():
        assert 0 <= m["auc"] <= 1 and "tpr@1%fpr" in m and m["n_nonmembers"] > 0
        assert len(m["ci"]["auc"]) == 3
    assert "ci" in report["rows"]["xgb"]
    cost = report["calibrated"]["cost"]
    assert len(cost["reference_train_seconds"]) == 3 and cost["target_query_seconds"] > 0
    md = (out / "report.md").read_text()
    assert "## Calibrated attacks" in md and "| lira_online |" in md and "## Cost" in md
    assert "| xgb |" in md  # the confidence-interval table holds every row


def test_reference_bookkeeping(tiny_audit):
    """An OUT reference never trained on an image it calibrates as OUT; the IN flags are the
    references' own training lists; the shadow is OUT for every target image."""
    from datamodules.manifest import read_manifest

    _, _, out, _ = tiny_audit
    refs = json.loads((out / "calibrated" / "references.json").read_text())
    game = load_signals(out / "calibrated" / "target_game.npz")
    rows, _ = read_manifest(out / "target")
    target_ids = {r["sample_id"] for r in rows if r["side"] == "target"}
    assert set(game["sample_id"]) == target_ids
    assert refs["references"] == ["shadow", "ref_0", "ref_1"]
    for r, name in enumerate(refs["references"]):
        seen = set(refs["training"][name])
        outs = set(game["sample_id"][~game["ref_in"][:, r]])
        assert not outs & seen
        assert set(game["sample_id"][game["ref_in"][:, r]]) == seen & target_ids
    assert not set(refs["training"]["shadow"]) & target_ids
    # each reference's list is what its datamodule trained on: half of the target's images
    pool = [r for r in rows if r["side"] == "target"]
    for k in (0, 1):
        half = {r["sample_id"] for r in reference_training_rows(pool, k, seed=0)}
        assert set(refs["training"][f"ref_{k}"]) == half
    # complementary pair: every target image is IN for exactly one extra reference
    assert (game["ref_in"][:, 1:].sum(1) == 1).all()
    members = game["sample_id"][game["role"] == "member"]
    assert set(members) == {r["sample_id"] for r in pool if r["split"] == "in"}


@pytest.mark.slow
def test_reattack_reuses_cached_references(tiny_audit):
    """A second audit on the finished runs loads the references instead of training them; a
    run without saved queries (here a copy of the shadow) is queried from its checkpoint."""
    import shutil

    from experiments.commands.audit import main

    tmp, cfg, out, root = tiny_audit
    shadow = tmp / "shadow_copy"
    shutil.copytree(out / "shadow", shadow)
    for name in ("pool.npz", "pool.json"):
        (shadow / "signals" / name).unlink()
    again = main(
        [
            "--config",
            str(cfg),
            "--output",
            str(tmp / "again"),
            "--target_run",
            str(out / "target"),
            "--shadow_run",
            str(shadow),
            "--data.init_args.root",
            str(root),
        ]
    )
    assert again["calibrated"]["cost"]["extra_references_cached"] == [True, True]
    first = json.loads((out / "report.json").read_text())["calibrated"]["rows"]
    for row, m in again["calibrated"]["rows"].items():
        assert m["auc"] == first[row]["auc"]
    old = load_signals(out / "shadow" / "signals" / "pool.npz")
    new = load_signals(shadow / "signals" / "pool.npz")
    np.testing.assert_allclose(new["scores"], old["scores"], atol=1e-5)
    assert (
        json.loads((shadow / "signals" / "pool.json").read_text())["training"]
        == json.loads((out / "shadow" / "signals" / "pool.json").read_text())["training"]
    )
