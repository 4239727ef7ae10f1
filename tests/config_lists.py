"""The configs of configs/ by kind, read without the parser (for choosing fixtures and cases)."""

from __future__ import annotations

from pathlib import Path

import yaml

CONFIGS = Path(__file__).resolve().parents[1] / "configs"


def load_config(path: Path) -> dict:
    """A config's top-level sections, following ``config:`` includes and section paths one level
    deep (paths relative to the including file), without the parser: for choosing fixtures."""
    cfg = yaml.safe_load(path.read_text()) or {}
    if isinstance(cfg.get("config"), str):
        cfg = {**load_config(path.parent / cfg.pop("config")), **cfg}
    for key, value in cfg.items():
        if key in ("data", "model", "trainer") and isinstance(value, str):
            cfg[key] = yaml.safe_load((path.parent / value).read_text())
    return cfg


def is_fit_config(cfg: dict) -> bool:
    """A fit config: it has a model and a data section."""
    return "model" in cfg and "data" in cfg


def whale_configs() -> list[Path]:
    """Fit configs of the whale datamodule."""
    return sorted(
        p
        for p in CONFIGS.glob("[!p]*/*.yaml")
        if is_fit_config(c := load_config(p)) and "WhaleDataModule" in c["data"]["class_path"]
    )


def population_configs() -> list[Path]:
    """Fit configs of the population (re-identification embedding) datamodule."""
    return sorted(
        p
        for p in CONFIGS.glob("[!p]*/*.yaml")
        if is_fit_config(c := load_config(p)) and "PopulationDataModule" in c["data"]["class_path"]
    )
