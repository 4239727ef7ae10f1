"""The ArcFace head of the classifier (lightning_modules/classifier.py): scores, unit embeddings and
learning, sub-centers with local backbone weights, the settings it refuses, and an ArcFace target
through ``fit`` and ``attack``."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from lightning_modules.classifier import ImageClassifier


def test_arcface_head_scores_embeds_and_learns():
    torch.manual_seed(0)
    m = ImageClassifier(3, arch="resnet18", head="arcface", arcface={"embedding_dim": 8})
    x, y = torch.randn(6, 3, 32, 32), torch.tensor([0, 1, 2, 0, 1, 2])
    logits, emb = m.logits_and_embedding(x)
    assert logits.shape == (6, 3) and emb.shape == (6, 8)
    assert torch.allclose(emb.norm(dim=1), torch.ones(6), atol=1e-5)
    assert torch.allclose(m(x), logits) and torch.allclose(m.embed(x), emb)
    assert logits.abs().max() <= 30.0 + 1e-4  # scale (default 30) x cosine
    opt = torch.optim.Adam(m.parameters(), lr=1e-3)
    first = None
    for _ in range(15):
        loss = m._logits_and_loss(x, y, "train")[1]
        first = float(loss.detach()) if first is None else first
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert float(loss) < first


def test_subcenter_arcface_and_local_weights(tmp_path):
    from torchvision import models

    torch.manual_seed(0)
    path = tmp_path / "backbone.pt"
    torch.save(models.resnet18(weights=None).state_dict(), path)
    m = ImageClassifier(
        4,
        arch="resnet18",
        head="arcface",
        arcface={"embedding_dim": 8, "sub_centers": 3},
        weights_path=str(path),
    )
    ref = models.resnet18(weights=None)
    ref.load_state_dict(torch.load(path, weights_only=True))
    trunk = m.plain_net.features[0]
    assert torch.equal(trunk.conv1.weight, ref.conv1.weight)  # the local weights were loaded
    assert m.plain_net.head.loss_fn.W.shape == (8, 12)
    assert m(torch.randn(2, 3, 32, 32)).shape == (2, 4)


def test_arcface_refuses_dp_and_the_dropout_defense():
    with pytest.raises(ValueError, match="arcface"):
        ImageClassifier(3, arch="resnet18", head="arcface", dropout_defense=True)
    with pytest.raises(ValueError, match="model.head"):
        ImageClassifier(3, arch="resnet18", head="cosface")


@pytest.mark.slow
def test_arcface_target_is_attacked_like_any_other(tmp_path, tiny_args, run_cli):
    """fit (ArcFace head, individual sampler, letterbox) -> attack: the baselines score it."""
    args = tiny_args(tmp_path, 1) + [
        "--model.init_args.head",
        "arcface",
        "--data.init_args.loader.sampler",
        "individuals",
        "--data.init_args.loader.resize",
        "letterbox",
        "--data.init_args.loader.m_per_individual",
        "2",
        "--leakage.save_embeddings",
        "true",
    ]
    run_cli(args)
    run = next((tmp_path / "logs" / "run").glob("version_*"))
    run_cli(
        [
            "attack",
            "--run",
            str(run),
            "--config",
            "attack_cpu.yaml",
            "--salem.epochs",
            "30",
        ]
    )
    from attacks.signals import load_signals

    sig = load_signals(run / "signals" / "final.npz")
    assert np.allclose(np.linalg.norm(sig["embedding"], axis=1), 1, atol=1e-4)
    summary = json.loads((run / "attacks" / "summary.json").read_text())
    assert {"yeom", "salem", "baseline_nn_cosine"} <= set(summary["metrics"])
    assert json.loads((run / "split_manifest.json").read_text())
