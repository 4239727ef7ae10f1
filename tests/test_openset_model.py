"""Letterbox resize, the ArcFace head, the individual/encounter sampler and the time protocol."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from datamodules.catalogs import Catalog, Record
from datamodules.errors import DataError
from datamodules.identity_batches import IndividualEncounterSampler
from datamodules.image_cache import DecodeSettings, ImageCache
from datamodules.images import ManifestDataset, eval_transform, letterbox_size, resize_uint8
from datamodules.splits import SplitSettings, plan_splits
from lightning_modules.classifier import ImageClassifier


# ---- letterbox ------------------------------------------------------------------------------
def _wide(w: int = 90, h: int = 30) -> Image.Image:
    arr = np.full((h, w, 3), 200, np.uint8)
    arr[:, : w // 3] = 10  # a dark left third: a mark that squashing would stretch
    return Image.fromarray(arr)


def test_letterbox_keeps_the_aspect_ratio_and_pads():
    s = DecodeSettings(48, resize="letterbox", pad_value=7)
    x = resize_uint8(_wide(), s)
    assert x.shape == (3, 48, 48) and x.dtype == torch.uint8
    assert letterbox_size(30, 90, 48) == (16, 48)
    top = (48 - 16) // 2
    assert (x[:, :top] == 7).all() and (x[:, top + 16 :] == 7).all()  # padding rows
    content = x[0, top : top + 16]
    assert (content[:, :14] < 50).all() and (content[:, 18:] > 150).all()  # dark third kept 1/3
    squash = resize_uint8(_wide(), DecodeSettings(48))
    assert (squash != 7).all() and squash.shape == (3, 48, 48)


def test_squash_is_unchanged_and_letterbox_on_a_square_is_a_resize():
    img = _wide(40, 40)
    old = eval_transform(32)(img)
    assert torch.equal(old, eval_transform(32, "squash")(img))
    assert torch.allclose(eval_transform(32, "letterbox")(img), old, atol=1e-6)


def test_the_cache_key_depends_on_the_resize_mode(tmp_path):
    a = ImageCache(tmp_path, DecodeSettings(32))
    b = ImageCache(tmp_path, DecodeSettings(32, resize="letterbox"))
    c = ImageCache(tmp_path, DecodeSettings(32, resize="letterbox", pad_value=128))
    assert len({a.key("h", ""), b.key("h", ""), c.key("h", "")}) == 3


def test_dataset_letterboxes_through_the_cache_and_without(tmp_path):
    _wide().save(tmp_path / "w.png")
    rows = [{"catalog": "main", "file": "w.png", "aug": "", "label": 0}]
    s = DecodeSettings(24, resize="letterbox")
    plain = ManifestDataset(rows, {"main": tmp_path}, None, image_size=24, decode=s)
    cached = ManifestDataset(rows, {"main": tmp_path}, None, cache=ImageCache(tmp_path / "c", s))
    assert torch.equal(plain[0][0], cached[0][0]) and torch.equal(cached[0][0], cached[0][0])
    assert (plain[0][0][:, 0] == 0).all()  # the top row is padding


def test_a_bad_resize_setting_is_one_line(tmp_path):
    from datamodules.catalogs import SyntheticWhalesReader
    from datamodules.whale import LoaderSettings, WhaleDataModule

    with pytest.raises(DataError, match="data.loader.resize"):
        WhaleDataModule(SyntheticWhalesReader(), loader=LoaderSettings(resize="stretch"))
    with pytest.raises(DataError, match="data.loader.sampler"):
        WhaleDataModule(SyntheticWhalesReader(), loader=LoaderSettings(sampler="m"))


# ---- sampler ----------------------------------------------------------------------------
def _rows(n_ind=3, n_enc=(5, 2, 1), per=3):
    return [
        {"identity": f"w{i}", "group": f"w{i}-e{e}"}
        for i in range(n_ind)
        for e in range(n_enc[i])
        for _ in range(per)
    ]


def test_sampler_gives_runs_of_m_from_different_encounters():
    rows = _rows()
    s = IndividualEncounterSampler(rows, m=4, seed=0)
    idx = list(s)
    assert len(idx) == len(s) == (len(rows) // 4) * 4
    for k in range(0, len(idx), 4):
        run = [rows[i] for i in idx[k : k + 4]]
        assert len({r["identity"] for r in run}) == 1
        n_enc = {"w0": 5, "w1": 2, "w2": 1}[run[0]["identity"]]
        assert len({r["group"] for r in run}) == min(4, n_enc)  # spread over the encounters
    assert idx != list(IndividualEncounterSampler(rows, m=4, seed=1))


def test_sampler_without_groups_takes_distinct_photos():
    rows = [{"identity": "a", "group": ""} for _ in range(6)]
    assert (
        len(set(IndividualEncounterSampler(rows, m=4, seed=0).run("a", np.random.default_rng(0))))
        == 4
    )


# ---- ArcFace head ---------------------------------------------------------------------------
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
    import json

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


# ---- time protocol --------------------------------------------------------------------------
def _dated_catalog() -> Catalog:
    """8 individuals; w0-w3 seen in 2017 (w0-w2 again in 2018/2019), w4-w7 first seen in 2019."""
    recs = []
    plan = {0: ("2017", "2018", "2019"), 1: ("2017", "2019"), 2: ("2017", "2018"), 3: ("2017",)}
    plan |= {k: ("2019",) for k in range(4, 8)}
    for i, years in plan.items():
        for e, year in enumerate(years):
            for f in range(3):
                meta = {"date": f"{year}-08-0{e + 1}", "encounter_id": f"w{i}-{year}"}
                recs.append(Record(f"w{i}_{year}_{f}.jpg", f"w{i}", f"w{i}-{year}", None, meta))
    return Catalog(root=__import__("pathlib").Path("/nowhere"), records=recs)


def test_time_protocol_builds_the_catalog_from_earlier_dates():
    cat = _dated_catalog()
    s = SplitSettings(group_by="encounter_id", split_protocol="time", time_cutoff="2018-01-01")
    rows, info = plan_splits(cat, s)
    date = {r.file: r.meta["date"] for r in cat.records}
    assert info["time_cutoff"] == "2018-01-01"
    assert sorted(info["class_names"]) == ["w0", "w1", "w2", "w3"]
    for r in rows:
        before = date[r["file"]] < "2018-01-01"
        assert (r["split"] == "train") == before  # the catalog is exactly the earlier photos
        if r["role"] == "nonmember":
            assert r["identity"] in {"w4", "w5", "w6", "w7"}
    later = {}
    for r in rows:
        if r["split"] in ("val", "test"):
            later.setdefault(r["group"], set()).add(r["split"])
    assert later and all(len(v) == 1 for v in later.values())  # encounters stay whole
    assert {r["split"] for r in rows} == {"train", "val", "test", "attack", "eval"}
    assert rows == plan_splits(cat, s)[0]  # deterministic


def test_time_protocol_default_cutoff_and_errors():
    cat = _dated_catalog()
    rows, info = plan_splits(cat, SplitSettings(split_protocol="time"))
    assert info["time_cutoff"].startswith("2017") or info["time_cutoff"] <= "2019-08-01"
    with pytest.raises(DataError, match="time_cutoff"):
        plan_splits(cat, SplitSettings(split_protocol="time", time_cutoff="2016-01-01"))
    with pytest.raises(DataError, match="time_column"):
        plan_splits(cat, SplitSettings(split_protocol="time", time_column="when"))


def test_time_protocol_on_a_noaa_catalog_is_in_the_manifest(tmp_path, noaa_catalog):
    import csv

    from datamodules.catalogs import NoaaReader
    from datamodules.manifest import read_manifest
    from datamodules.whale import LoaderSettings, WhaleDataModule

    root = noaa_catalog(tmp_path / "cat", n_ind=9, n_enc=3)

    def module(cutoff):
        return WhaleDataModule(
            NoaaReader(),
            root=str(root),
            split=SplitSettings(split_protocol="time", group_by="encounter_id", time_cutoff=cutoff),
            loader=LoaderSettings(image_size=16, cache_dir=None),
        )

    with pytest.raises(DataError, match="first seen"):
        module("2019-08-02").plan()  # every whale is seen on the first day: nobody is new
    meta = list(csv.DictReader((root / "metadata.csv").open()))
    for r in meta:  # whales 6-8 are first seen in September
        if r["whale_id"] >= "whale006":
            r["date"] = r["date"].replace("-08-", "-09-")
    with (root / "metadata.csv").open("w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(meta[0]))
        w.writeheader()
        w.writerows(meta)
    dm = module("2019-08-03")
    dm.write_manifest(tmp_path / "run")
    rows, header = read_manifest(tmp_path / "run")
    assert header["time_cutoff"] == "2019-08-03"
    assert header["settings"]["split_protocol"] == "time"
    assert {r["identity"] for r in rows if r["role"] == "nonmember"} <= {
        "whale006",
        "whale007",
        "whale008",
    }
    assert {r["split"] for r in rows if r["role"] == "member"} == {"train", "val", "test"}


# ---- photo split with held-out encounters, and the report's encounter figures ----------------
def test_holdout_groups_sends_whole_encounters_to_test():
    cat = _dated_catalog()
    recs = [r for r in cat.records if r.identity in ("w0", "w1", "w2")] * 1
    more = [
        Record(f"x{i}_{e}_{f}.jpg", f"x{i}", f"x{i}-{e}", None, {})
        for i in range(6)
        for e in range(4)
        for f in range(3)
    ]
    cat = Catalog(cat.root, recs + more)
    s = SplitSettings(group_by="encounter", split_protocol="photo", holdout_groups=1)
    rows, _ = plan_splits(cat, s)
    members = [r for r in rows if r["role"] == "member"]
    for ident in {r["identity"] for r in members}:
        mine = [r for r in members if r["identity"] == ident]
        by_group: dict[str, set] = {}
        for r in mine:
            by_group.setdefault(r["group"], set()).add(r["split"])
        assert {"test"} in by_group.values()  # one encounter went to test whole
        assert {r["split"] for r in mine} == {"train", "val", "test"}
    plain, _ = plan_splits(cat, SplitSettings(group_by="encounter", split_protocol="photo"))
    assert plain != rows


def test_encounter_figures_split_member_photos_by_encounter():
    from attacks.report import encounter_table
    from experiments.attack_steps.results import encounter_figures

    rows = [
        {"identity": "x", "group": "a", "split": "train"},
        {"identity": "x", "group": "a", "split": "test"},  # seen encounter
        {"identity": "y", "group": "a", "split": "test"},  # y's own "a": held out (names repeat)
        {"identity": "y", "group": "a", "split": "test"},
        {"identity": "n", "group": "n1", "split": "eval"},
        {"identity": "n", "group": "n2", "split": "eval"},
    ]
    ev = {"index": np.arange(1, 6), "role": np.array(["member"] * 3 + ["nonmember"] * 2)}
    scores = np.array([0.9, 0.2, 0.6, 0.5, 0.1])
    f = encounter_figures(scores, ev, rows)
    assert (f["n_seen_encounter_photos"], f["n_new_encounter_photos"]) == (1, 2)
    assert f["auc_seen_encounter"] == 1.0  # 0.9 above both non-members
    assert f["auc_new_encounter"] == 0.75  # 0.2 and 0.6 against 0.5 and 0.1: 3 of 4 pairs
    assert f["auc_encounter_level"] == 0.5  # encounter y/a mean 0.4: above n2 (0.1), below n1
    assert "held out" in encounter_table({"yeom": f})
    assert encounter_figures(scores, {"role": ev["role"]}, rows) == {}


def test_one_encounter_key_for_every_command():
    from types import SimpleNamespace

    from datamodules.manifest import encounter_key
    from experiments.commands.discriminate import run_encounters

    rows = [
        {"identity": "x", "group": "a", "file": "x/1.jpg"},
        {"identity": "y", "group": "a", "file": "y/1.jpg"},  # group names repeat across whales
        {"identity": "y", "group": "", "file": "y/2.jpg"},  # no group: the photo alone
        {"identity": "y", "group": "", "file": "y/3.jpg"},  # same folder, not the same encounter
    ]
    assert [encounter_key(r) for r in rows] == ["x/a", "y/a", "y/y/2.jpg", "y/y/3.jpg"]
    ctx = SimpleNamespace(rows=rows)
    got = run_encounters(ctx, {"index": np.array([3, 0, 2])})
    assert got.tolist() == ["y/y/3.jpg", "x/a", "y/y/2.jpg"]


@pytest.mark.slow
def test_openset_table_runs_on_a_tiny_noaa_catalog(tmp_path, noaa_catalog):
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
    with pytest.raises(SystemExit, match="already exists"):
        main(args)


def test_openset_table_scores_encounters_with_discriminate_s_scorer():
    """The table's encounters are :class:`experiments.known_new.classifier_scorer.Scorer`'s: the mean of
    the photos' scores on the calibration scale (minus the log of Yeom's loss) and the mean of
    their softmax probabilities."""
    from attacks.yeom import YeomAttack
    from experiments.commands.openset_table import encounters, scorer_for
    from experiments.known_new.classifier_scorer import Scorer, feature

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
