"""The population embedding: fixed views, the frozen-stage cache, GeM, the schedule and a fit."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from datamodules.catalogs import NoaaReader
from datamodules.errors import DataError
from datamodules.population import MANIFEST, PopulationDataModule
from datamodules.views import ArrayCache, ViewSettings, decode_views
from lightning_modules.components.backbones import build_backbone
from lightning_modules.components.reid import EmbeddingNet, GeM
from lightning_modules.embedding import ReIDEmbedding, warmup_cosine

VIEWS = ViewSettings(height=64, width=32, views=3, seed=0)


@pytest.fixture(scope="module")
def population(tmp_path_factory, noaa_catalog):
    return noaa_catalog(tmp_path_factory.mktemp("pop"), n_ind=10, n_enc=2, per_enc=2)


def test_views_are_seeded_and_the_second_is_the_mirror(population):
    paths = sorted((population / "images").glob("*.jpg"))[:3]
    a, b = decode_views(paths, VIEWS), decode_views(paths, VIEWS)
    assert a.shape == (3, 3, 3, 64, 32) and a.dtype == np.uint8
    np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(a[:, 1], a[:, 0, :, :, ::-1])
    assert not np.array_equal(a[:, 2], a[:, 0])


def test_array_cache_computes_once_and_rebuilds_a_damaged_entry(tmp_path):
    cache, calls = ArrayCache(tmp_path), []

    def compute():
        calls.append(1)
        return np.arange(6.0)

    np.testing.assert_array_equal(cache.get("ab" * 32, compute), np.arange(6.0))
    np.testing.assert_array_equal(cache.get("ab" * 32, compute), np.arange(6.0))
    assert len(calls) == 1
    cache.path("ab" * 32).write_bytes(b"garbage")
    np.testing.assert_array_equal(cache.get("ab" * 32, compute), np.arange(6.0))
    assert len(calls) == 2


def test_holdout_whales_never_train_and_labels_are_dense(population, tmp_path):
    dm = PopulationDataModule(NoaaReader(), str(population), VIEWS, holdout_individuals=3)
    rows = dm.plan()
    held = {r["identity"] for r in rows if r["role"] == "reference"}
    train = {r["identity"] for r in rows if r["role"] == "train"}
    assert len(held) == 3 and not held & train and dm.num_classes == len(train) == 7
    assert sorted({r["label"] for r in rows if r["role"] == "train"}) == list(range(7))
    dm.write_manifest(tmp_path)
    assert (tmp_path / MANIFEST).read_text().count("\n") == len(rows) + 1
    other = PopulationDataModule(NoaaReader(), str(population), VIEWS, holdout_individuals=4)
    with pytest.raises(DataError, match="another population split"):
        other.write_manifest(tmp_path)


def test_too_many_held_apart_is_one_line(population):
    dm = PopulationDataModule(NoaaReader(), str(population), VIEWS, holdout_individuals=10)
    with pytest.raises(DataError, match="holdout_individuals=10"):
        dm.plan()


def test_frozen_activations_are_cached_and_equal_the_net(population, tmp_path):
    net = EmbeddingNet(build_backbone("tf_efficientnet_lite0", "packaged"), 16, 6).eval()
    dm = PopulationDataModule(NoaaReader(), str(population), VIEWS, cache_dir=str(tmp_path))
    rows = dm.plan()[:4]
    images = dm.inputs(rows)
    calls = []

    def frozen(x):
        calls.append(len(x))
        return net.frozen_features(x)

    dm.attach_frozen(frozen, "k1")
    a = dm.inputs(rows)
    assert a.dtype == torch.float16 and a.shape[:2] == (12, 112)
    torch.testing.assert_close(a.float(), net.frozen_features(images), atol=2e-2, rtol=1e-2)
    dm.attach_frozen(frozen, "k1")
    dm.inputs(rows)
    assert sum(calls) == 12  # the second call read the cache


def test_gem_between_mean_and_max():
    x = torch.rand(2, 3, 4, 5) + 0.1
    assert torch.allclose(GeM(p=1.0)(x), x.mean((2, 3)), atol=1e-6)
    g = GeM(p=3.0)(x)
    assert (g >= x.mean((2, 3)) - 1e-6).all() and (g <= x.amax((2, 3)) + 1e-6).all()
    by_hand = (x**3).mean((2, 3)) ** (1 / 3)
    torch.testing.assert_close(g, by_hand)


def test_frozen_stages_stay_frozen_in_training_mode():
    net = EmbeddingNet(build_backbone("resnet18", "none"), 8, frozen_stages=2).train()
    assert not net.frozen.training and net.trainable.training
    assert all(not p.requires_grad for p in net.frozen.parameters())
    emb = net(torch.randn(2, 3, 64, 32))
    assert emb.shape == (2, 8)
    torch.testing.assert_close(emb.norm(dim=1), torch.ones(2))
    with pytest.raises(ValueError, match="frozen_stages=5"):
        EmbeddingNet(build_backbone("resnet18", "none"), 8, frozen_stages=5)


def test_warmup_then_cosine_by_hand():
    assert warmup_cosine(0, 10, 110) == pytest.approx(0.01)
    assert warmup_cosine(5, 10, 110) == pytest.approx(0.01 + 0.99 * 0.5)
    assert warmup_cosine(10, 10, 110) == pytest.approx(1.0)
    assert warmup_cosine(60, 10, 110) == pytest.approx(
        0.01 + 0.99 * 0.5 * (1 + math.cos(math.pi / 2))
    )
    assert warmup_cosine(110, 10, 110) == pytest.approx(0.01)


def test_backbone_file_loads_as_local_weights(tmp_path):
    model = ReIDEmbedding(num_classes=4, frozen_stages=6, embedding_dim=16)
    with torch.no_grad():
        model.net.trainable[0][0].conv_pw.weight.add_(1.0)
    torch.save(model.net.backbone_state_dict(), tmp_path / "backbone.pt")
    again = build_backbone("tf_efficientnet_lite0", str(tmp_path / "backbone.pt"))
    torch.testing.assert_close(
        again.stages[6][0].conv_pw.weight, model.net.trainable[0][0].conv_pw.weight
    )


@pytest.mark.slow
def test_fit_writes_a_run_the_reid_command_reads(
    population, tmp_path, noaa_catalog, reid_fit_args, scalars
):
    import cli

    cli.main(reid_fit_args(population, tmp_path))
    run = tmp_path / "runs" / "beluga_reid_cpu" / "version_0"
    for name in ("config.yaml", MANIFEST, "backbone.pt", "checkpoints/last.ckpt"):
        assert (run / name).is_file(), name
    (val,) = scalars(run, "val/map20")  # retrieval on the held-apart whales, once per epoch
    assert 0.0 <= val[1] <= 1.0
    dev = noaa_catalog(tmp_path / "dev", n_ind=8, n_enc=3, per_enc=2)
    out = tmp_path / "reid"
    from experiments.commands.reid import main as reid

    res = reid(["--run", str(run), "--catalog", str(dev), "--output", str(out),
                    "--draws", "2", "--n_boot", "50"])  # fmt: skip
    assert (out / "report.md").is_file() and (out / "results.json").is_file()
    assert res["n_reference_whales"] == 3 and set(res["summary"]) == {"encounter", "photo"}
    enc = res["per_draw"]["encounter"][0]["encounter"]
    assert 0.0 <= enc["auroc_zscore"][0] <= 1.0 and enc["n_known"] > 0 and enc["n_new"] > 0
    assert res["benchmark"]["encounter"]["n_queries"] > 0
    assert len(res["checkpoint_sha256"]) == 64 and "torch" in res["versions"]


def test_a_reloaded_embedding_embeds_as_the_trained_one():
    """The checkpoint carries the input normalisation of its weights (packaged: [-1, 1]); a
    model rebuilt without reading the weights and loaded from it gives the same embeddings and
    the same activation-cache key."""
    torch.manual_seed(0)
    trained = ReIDEmbedding(num_classes=4, frozen_stages=6, embedding_dim=16).eval()
    assert "net.frozen.0.scale" in trained.state_dict()
    again = ReIDEmbedding(num_classes=4, frozen_stages=6, embedding_dim=16, load_weights=False)
    again.load_state_dict(trained.state_dict())
    again.eval()
    x = torch.randn(2, 3, 64, 32)
    torch.testing.assert_close(again.net(x), trained.net(x))
    assert again.frozen_key() == trained.frozen_key()
    again.net.frozen[0].shift.add_(0.1)  # another normalisation, same weights: another key
    assert again.frozen_key() != trained.frozen_key()


def test_frozen_features_use_running_statistics_in_any_mode():
    """The cached activations must be what the frozen stages give at evaluation: batch norm on
    its running statistics, never on the batch's (which would also move the running ones)."""
    net = EmbeddingNet(build_backbone("resnet18", "none"), 8, frozen_stages=2)
    assert not net.frozen.training  # from construction on
    x = torch.randn(4, 3, 64, 32)
    before = {k: v.clone() for k, v in net.frozen.state_dict().items()}
    for m in net.frozen.modules():  # as a trainer restoring a captured mode might
        m.train()
    a = net.frozen_features(x)
    net.eval()
    torch.testing.assert_close(a, net.frozen_features(x))
    for k, v in net.frozen.state_dict().items():
        assert torch.equal(v, before[k]), k


@pytest.mark.slow
def test_a_resumed_fit_ends_with_the_weights_of_an_uninterrupted_one(
    population, tmp_path, reid_fit_args, capsys
):
    import cli

    def weights(run):
        state = torch.load(run / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
        return state["state_dict"]

    whole, part = tmp_path / "whole", tmp_path / "part"
    cli.main(reid_fit_args(population, whole, "--trainer.max_epochs", "2"))
    stop = {"class_path": "tests.fault_hooks.StopAtEpoch", "init_args": {"epoch": 1}}
    with pytest.raises(SystemExit) as stopped:  # an unexpected error: status 1, one line
        cli.main(reid_fit_args(population, part, "--trainer.max_epochs", "2",
                          f"--trainer.callbacks+={json.dumps(stop)}"))  # fmt: skip
    assert stopped.value.code == 1
    assert "stopped at the start of epoch 1" in capsys.readouterr().err
    run = part / "runs" / "beluga_reid_cpu" / "version_0"
    cli.main(reid_fit_args(population, part, "--trainer.max_epochs", "2",
                      "--ckpt_path", str(run / "checkpoints" / "last.ckpt")))  # fmt: skip
    a, b = weights(whole / "runs" / "beluga_reid_cpu" / "version_0"), weights(run)
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(a[k], b[k], msg=k)
