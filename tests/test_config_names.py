"""Config names: every config lives in one folder of ``configs/`` by kind, a bare name resolves to
it from any command, and every name the README and the docs mention still resolves."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from datamodules.errors import DataError
from experiments.run.config_files import (
    CONFIG_DIR,
    CONFIG_KINDS,
    config_by_name,
    known_configs,
    resolve_config_args,
)

REPO = Path(__file__).resolve().parents[1]
#: names the text mentions that are not configs of configs/: run-folder files, a grid part, a
#: config the results page shows in full because it names a local path
NOT_CONFIGS = {"config.yaml", "hparams.yaml", "paper_run.yaml", "detection_voc_sample_cpu.yaml"}


def test_every_config_sits_in_a_kind_folder_and_names_are_unique():
    loose = sorted(p.name for p in CONFIG_DIR.glob("*.yaml"))
    assert loose == [], f"configs/ holds configs outside a kind folder: {loose}"
    folders = {p.name for p in CONFIG_DIR.iterdir() if p.is_dir()}
    assert folders == {*CONFIG_KINDS, "parts"}
    names = [p.name for p in known_configs()]
    assert len(names) == len(set(names)), "two kinds hold a config of the same name"


def test_a_bare_name_resolves_to_its_kind_folder():
    assert config_by_name("gremm_resnet50_overfit.yaml") == CONFIG_DIR / "fit" / (
        "gremm_resnet50_overfit.yaml"
    )
    assert config_by_name("attack_demo") == CONFIG_DIR / "attack" / "attack_demo.yaml"
    assert config_by_name("detection_demo.yaml").parent.name == "detection"
    assert config_by_name("defense_sweep.yaml").parent.name == "commands"
    assert config_by_name("fit/demo.yaml") == CONFIG_DIR / "fit" / "demo.yaml"
    assert config_by_name("paper_run.yaml") is None  # a part, never a whole config
    out = resolve_config_args(["--config", "gremm_resnet50_overfit.yaml", "--x", "1"])
    assert out == ["--config", str(CONFIG_DIR / "fit" / "gremm_resnet50_overfit.yaml"), "--x", "1"]


def test_an_unknown_name_is_one_line_listing_the_known_ones():
    with pytest.raises(DataError) as err:
        resolve_config_args(["--config", "gremm_resnet50_overfitt.yaml"])
    msg = str(err.value)
    assert "gremm_resnet50_overfitt.yaml" in msg and "gremm_resnet50_overfit.yaml" in msg
    assert "\n" not in msg


def mentioned_names() -> set[str]:
    """Every ``NAME.yaml`` the README, the docs and the config headers mention."""
    texts = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md")), *known_configs()]
    found = set()
    for path in texts:
        found |= set(re.findall(r"(?<![\w/<>.-])([a-z][a-z0-9_]*\.yaml)\b", path.read_text()))
    return found - NOT_CONFIGS


def test_every_config_name_the_text_mentions_resolves():
    names = mentioned_names()
    assert "gremm_resnet50_overfit.yaml" in names and "attack_demo.yaml" in names
    missing = sorted(n for n in names if config_by_name(n) is None)
    assert missing == []


def test_every_config_path_the_code_names_exists():
    """Paths built as ``ROOT / "configs" / ...`` in benchmarks and experiments point at files."""
    pattern = re.compile(r'"configs"((?:\s*/\s*"[^"]+")+)')
    named = []
    for folder in ("benchmarks", "experiments"):
        for path in sorted((REPO / folder).rglob("*.py")):
            for m in pattern.finditer(path.read_text()):
                parts = re.findall(r'"([^"]+)"', m.group(1))
                named.append((path.name, CONFIG_DIR.joinpath(*parts)))
    assert any(p.name == "demo.yaml" for _, p in named)
    assert [f"{src}: {p}" for src, p in named if not p.is_file()] == []
