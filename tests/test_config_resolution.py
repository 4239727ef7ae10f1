"""Every fit config resolves (``fit --print_config``, from a foreign directory) as it did before
the reader/config restructuring, with the deliberate changes since; population configs and the
real-catalog CPU config resolve to their intended settings; includes are relative to the
including file; ``null`` for a nested data setting keeps the rest."""

from __future__ import annotations

import contextlib
import io
import json
import os
from pathlib import Path

import pytest
import yaml

import cli
from tests.config_lists import CONFIGS, is_fit_config, load_config, population_configs

# ---- every config resolves as it did before the reader/config restructuring ---------------------

RESOLVED = json.loads((Path(__file__).parent / "fixtures" / "resolved_configs.json").read_text())
ABSENT = "<absent>"

#: old flat ``data.init_args`` key -> new path, per datamodule (reader keys: see READER_KEYS)
WHALE_DATA = {
    **{
        k: f"split.{k}"
        for k in (
            "group_by",
            "min_images",
            "min_groups",
            "identity_fractions",
            "photo_fractions",
            "images_per_identity",
            "split_protocol",
            "seed",
            "nonmember_use",
            "balance_nonmembers",
        )
    },
    **{
        k: f"loader.{k}"
        for k in (
            "image_size",
            "batch_size",
            "eval_batch_size",
            "num_workers",
            "train_augment",
            "augment_on_device",
            "verify_images",
            "cache_dir",
        )
    },
    "root": "root",
}
DETECTION_DATA = {
    **{
        k: f"split.{k}"
        for k in ("seed", "protocol", "target_fraction", "in_fraction", "n_target", "n_shadow")
    },
    **{
        k: f"loader.{k}"
        for k in (
            "image_size",
            "augment",
            "keep_difficult",
            "batch_size",
            "eval_batch_size",
            "num_workers",
            "eval_in_set",
            "max_eval_images",
            "verify_images",
        )
    },
    "root": "root",
    "role": "role",
}
#: old ``format`` -> (reader class, old keys that became the reader's init_args)
READER_KEYS = {
    "folder": ("datamodules.catalogs.FolderReader", ()),
    "noaa": ("datamodules.catalogs.NoaaReader", ("viewpoint",)),
    "happywhale": ("datamodules.catalogs.HappywhaleReader", ("species",)),
    "synthetic_whales": ("datamodules.catalogs.SyntheticWhalesReader", ("synthetic.",)),
    "voc": (
        "datamodules.detection.voc.VocReader",
        ("years", "image_sets", "classes", "on_invalid"),
    ),
    "inria": ("datamodules.detection.inria.InriaReader", ("subsets", "on_invalid")),
    "synthtext": (
        "datamodules.detection.synthtext.SynthTextReader",
        ("gt_file", "limit", "on_invalid"),
    ),
    "synthetic_detection": ("datamodules.detection.synthetic.SyntheticVocReader", ("synthetic.",)),
}
#: old reader-specific keys a config left at their default when its format did not use them
INERT = {
    "viewpoint": None,
    "species": None,
    "synthetic": None,
    "nonmember_format": None,
    "nonmember_root": None,
    "nonmember_viewpoint": None,
    "nonmember_species": None,
    "years": None,
    "image_sets": ["trainval"],
    "subsets": ["Train", "Test"],
    "gt_file": "gt.mat",
    "limit": None,
    "classes": None,
    "on_invalid": "error",
}


def _flat(x, prefix: str = "") -> dict:
    if isinstance(x, dict) and x:
        out = {}
        for k, v in x.items():
            out.update(_flat(v, f"{prefix}{k}."))
        return out
    return {prefix[:-1]: x}


def _old(name: str) -> dict:
    entry = RESOLVED["configs"][name]
    out = {**RESOLVED["bases"][entry["base"]], **entry["diff"]}
    return _intended({k: v for k, v in out.items() if v != ABSENT}) | MONITOR_BUDGET.get(name, {})


#: the leakage monitor's per-pass row budget, set deliberately since the capture: 0.4 rows per
#: training photo and epoch (~13% of epoch time) in the paper grid, and the demo every 4 epochs
MONITOR_BUDGET = {
    "demo.yaml": {"leakage.every_n_epochs": 4, "leakage.rows_per_train_photo": 0.4},
    **{
        f"{c}_{a}_{p}.yaml": {"leakage.rows_per_train_photo": 0.4}
        for c in ("gremm", "humpback", "noaa")
        for a in ("resnet50", "densenet121")
        for p in ("overfit", "regularized")
    },
}


def _intended(old: dict) -> dict:
    """The captured values with the deliberate changes since: no ``hp_metric`` of -1, the
    classifier's generic name, the leakage monitor's attack settings (every cheap attack,
    label-only off, the figure in TensorBoard), the checkpoint written at the end of every
    training epoch into the same ``last.ckpt`` (no ``last-v1.ckpt``), and the
    detector audit's settings in their own validated ``audit`` section (defaults filled in)
    instead of a ``DetectionAudit`` entry under ``trainer.callbacks``, and the explicit
    ``resume_changes`` switch (off: a resume with other settings is refused)."""
    out = {**old, "trainer.logger.init_args.default_hp_metric": False, "resume_changes": False}
    if "checkpoint.enable_version_counter" in old:
        out |= {"checkpoint.enable_version_counter": False}
        out |= {"checkpoint.save_on_train_epoch_end": True}
    if any(k.startswith("leakage.") for k in old):
        out |= {"leakage.attacks": None, "leakage.label_only": None, "leakage.tb_figure": True}
        out["leakage.rows_per_train_photo"] = None
    if out.get("model.class_path") == "lightning_modules.classifier.WhaleClassifier":
        out["model.class_path"] = "lightning_modules.classifier.ImageClassifier"  # renamed
    callbacks = out.pop("trainer.callbacks", None) or []
    audit = {"rows": None, "xgb": {}, "canvas": {}, "shadow_config": None, "shadow_args": []}
    audit |= {"transfer": {}, "transfer_row": "alexnet_aug_u_sr", "n_boot": 1000}
    audit["calibrated"] = {"enabled": False, "n_references": 2, "seed": 0, "iou": 0.5}
    audit["calibrated"] |= {"variance": "auto", "a": 0.3, "gamma": 1.0}
    for cb in callbacks:
        assert cb["class_path"].endswith("DetectionAudit"), cb
        args = dict(cb.get("init_args") or {})
        assert args.pop("write_signals", True)  # prediction signals are always written now
        audit |= {k: v for k, v in args.items() if v is not None}
    for grid in audit["transfer"].values():  # validated entries: args default to []
        for entry in grid:
            entry.setdefault("args", [])
    out["trainer.callbacks"] = None  # the suite adds its callbacks itself
    if out.get("model.class_path") == "lightning_modules.classifier.ImageClassifier":
        out["model.init_args.head"] = "softmax"  # the ArcFace head is a setting, softmax default
        out["model.init_args.weights"] = "none"  # pretrained backbones are a setting
        out["model.init_args.load_weights"] = True
        arcface = {"embedding_dim": 128, "margin": 28.6, "scale": 30.0, "sub_centers": 1}
        out |= _flat({"model": {"init_args": {"arcface": arcface}}})
    return out | _flat({"audit": audit})


#: whale configs whose photos keep their aspect ratio (letterbox) since it was added; the demo and
#: the other generated-catalog configs keep the square stretch (their photos are square anyway)
LETTERBOX = ("gremm_", "humpback_", "noaa_")


def _intended_data(name: str, data: dict) -> dict:
    """The whale data settings added since the capture: resize (letterbox for real catalogs),
    pad value, the training sampler, the unreadable-image policy (``error``) and the time
    protocol's column and cutoff, the catalog subsampling (defaults)."""
    if data.get("data.class_path") == "datamodules.detection.datamodule.DetectionDataModule":
        # the reference detectors of the calibrated audit (data.role: reference), defaults
        return data | {"data.init_args.reference_index": 0, "data.init_args.reference_seed": 0}
    if data.get("data.class_path") != "datamodules.whale.WhaleDataModule":
        return data
    resize = "letterbox" if name.startswith(LETTERBOX) else "squash"
    loader = {"resize": resize, "pad_value": 0, "sampler": "shuffle", "m_per_individual": 4}
    loader["unreadable"] = "error"
    split = {"time_column": "date", "time_cutoff": None, "holdout_groups": 0}
    split |= {"member_fraction": 1.0, "max_train_groups": None}
    if name == "demo.yaml":  # photo split with one encounter held out whole
        split |= {"group_by": "encounter", "split_protocol": "photo", "holdout_groups": 1}
    return data | _flat({"data": {"init_args": {"loader": loader, "split": split}}})


def _print_config(name: str, *extra: str) -> dict:
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf), pytest.raises(SystemExit) as exc:
        cli.main(["fit", "--config", name, *extra, "--print_config"])
    assert not exc.value.code
    return yaml.safe_load(buf.getvalue())


@pytest.fixture(scope="module")
def resolved(tmp_path_factory):
    """Every top-level fit config as ``--print_config`` resolves it, from a foreign directory."""
    here = os.getcwd()
    os.chdir(tmp_path_factory.mktemp("elsewhere"))
    try:
        return {name: _flat(_print_config(name)) for name in sorted(RESOLVED["configs"])}
    finally:
        os.chdir(here)


#: fit configs added after the capture (no old values to compare with; smoke-run above)
ADDED = {
    "noaa_beluga_cpu.yaml",
    "beluga_target_cpu.yaml",
    "beluga_reid_cpu.yaml",
    "beluga_reid_gpu.yaml",
}


def test_every_fit_config_has_a_fixture():
    fit = {p.name for p in CONFIGS.glob("[!p]*/*.yaml") if is_fit_config(load_config(p))}
    assert fit - ADDED == set(RESOLVED["configs"])


@pytest.mark.parametrize("config", population_configs(), ids=lambda p: p.stem)
def test_population_configs_resolve(config):
    cfg = _flat(_print_config(config.name))
    assert cfg["model.class_path"] == "lightning_modules.embedding.ReIDEmbedding"
    assert cfg["data.init_args.holdout_individuals"] > 0  # the reference whales
    assert cfg["model.init_args.arcface.sub_centers"] > 1
    assert cfg["model.init_args.embedding_dim"] == cfg["model.init_args.arcface.embedding_dim"]
    assert cfg["leakage.enabled"] is False  # the monitor needs a whale datamodule


def test_the_real_catalog_cpu_config_resolves():
    cfg = _flat(_print_config("noaa_beluga_cpu.yaml"))
    assert cfg["model.init_args.head"] == "arcface"
    assert cfg["data.init_args.loader.resize"] == "letterbox"
    assert cfg["data.init_args.loader.sampler"] == "individuals"
    assert cfg["attack_after_fit"] == "attack_cpu.yaml"


def _expected_data(old: dict) -> dict:
    """The old flat data arguments at their new paths (reader, split, loader)."""
    data = {
        k[len("data.init_args.") :]: v for k, v in old.items() if k.startswith("data.init_args.")
    }
    whale = "WhaleDataModule" in old["data.class_path"]
    fmt = data.pop("format")
    if fmt == "synthetic":
        fmt += "_whales" if whale else "_detection"
    cls, keys = READER_KEYS[fmt]
    new = {"data.class_path": old["data.class_path"], "data.init_args.reader.class_path": cls}
    for key, value in data.items():
        mapped = (WHALE_DATA if whale else DETECTION_DATA).get(key)
        reader_key = next((k for k in keys if key == k or key.startswith(k)), None)
        if mapped:
            new[f"data.init_args.{mapped}"] = value
        elif reader_key:
            name = key[len("synthetic.") :] if reader_key == "synthetic." else key
            new[f"data.init_args.reader.init_args.{name}"] = value
        else:
            assert value == INERT[key.split(".")[0]], f"{key}={value!r} has no new home"
    if whale:
        new["data.init_args.nonmember_reader"] = new["data.init_args.nonmember_root"] = None
    return new


@pytest.mark.parametrize("name", sorted(RESOLVED["configs"]))
def test_config_resolves_as_before(name, resolved):
    """Model, trainer, seed, leakage, checkpoint and the rest equal the values captured before
    the restructuring; the data arguments equal the old ones at their new paths."""
    old, new = _old(name), dict(resolved[name])
    new.pop("trainer.logger.init_args.name")  # the config's name, set by cli.main
    assert {k: v for k, v in new.items() if not k.startswith("data.")} == {
        k: v for k, v in old.items() if not k.startswith("data.")
    }
    expected = _intended_data(name, _expected_data(old))
    assert {k: v for k, v in new.items() if k.startswith("data.")} == expected


def test_grid_config_resolves_from_a_relative_path_elsewhere(tmp_path, monkeypatch):
    """Includes are relative to the including file, not to the working directory."""
    (tmp_path / "sub").mkdir()
    monkeypatch.chdir(tmp_path / "sub")
    rel = os.path.relpath(CONFIGS / "fit/gremm_resnet50_overfit.yaml")
    cfg = _flat(_print_config(rel, "--data.root", "/catalog"))
    assert cfg["model.init_args.arch"] == "resnet50" and cfg["trainer.max_epochs"] == 200
    assert cfg["data.init_args.root"] == "/catalog"
    assert cfg["data.init_args.reader.class_path"] == "datamodules.catalogs.FolderReader"


def test_null_for_a_nested_data_setting_is_none_and_keeps_the_rest():
    cfg = _flat(_print_config("noaa_resnet50_overfit.yaml", "--data.split.group_by", "null"))
    assert cfg["data.init_args.split.group_by"] is None
    assert cfg["data.init_args.split.min_images"] == 3  # the group's other values stay
    cfg = _flat(_print_config("demo.yaml", "--data.init_args.loader.cache_dir", "null"))
    assert cfg["data.init_args.loader.cache_dir"] is None
    assert cfg["data.init_args.loader.image_size"] == 48
