"""The checks of a fit's config before anything runs (experiments/run/input_checks.py), called
directly: image sizes within their limits for every size key, no training batch of one photo
through BatchNorm, and an accelerator this machine has. (The same refusals through the command
line: tests/test_resource_limits.py, tests/test_settings_checks.py.)"""

from __future__ import annotations

import pytest
import torch

from datamodules.errors import DataError
from experiments.run.input_checks import check_accelerator, check_batch_norm, check_image_sizes


def test_image_size_limits_cover_every_size_key():
    check_image_sizes({"data": {"init_args": {"loader": {"image_size": 2048}}}})
    for cfg, key in (
        ({"data": {"init_args": {"reader": {"init_args": {"image_size": 5000}}}}}, "reader"),
        ({"data": {"init_args": {"views": {"height": 7}}}}, "views.height"),
        ({"data": {"init_args": {"loader": {"image_size": 64.0}}}}, "loader.image_size"),
    ):
        with pytest.raises(DataError, match=rf"data\.init_args\..*{key}.*from 8 to 2048"):
            check_image_sizes(cfg)


def _classifier_cfg(batch_size: int, arch: str = "resnet18", **init) -> dict:
    init = {"arch": arch, "preset": "regularized", "batchnorm": None, "dp": None, **init}
    return {
        "data": {"init_args": {"loader": {"batch_size": batch_size}}},
        "model": {"class_path": "lightning_modules.classifier.ImageClassifier", "init_args": init},
    }


def test_batch_of_one_with_batchnorm_is_refused_naming_the_key():
    with pytest.raises(DataError) as exc:
        check_batch_norm(_classifier_cfg(1))
    msg = str(exc.value)
    assert "\n" not in msg
    assert msg.startswith("data.init_args.loader.batch_size=1: a training batch of one photo")
    assert "'resnet18'" in msg and "batchnorm" in msg


def test_batch_of_one_passes_where_no_batchnorm_is_trained():
    check_batch_norm(_classifier_cfg(2))
    check_batch_norm(_classifier_cfg(1, preset="overfit"))  # the preset strips BatchNorm
    check_batch_norm(_classifier_cfg(1, batchnorm=False))
    check_batch_norm(_classifier_cfg(1, arch="vit_b_16"))  # LayerNorm only
    check_batch_norm(_classifier_cfg(1, dp={"noise_multiplier": 1.0}))  # DP: no BatchNorm


def test_embedding_population_batch_of_one_is_refused():
    cfg = {"data": {"class_path": "datamodules.population.PopulationDataModule"}}
    cfg["data"]["init_args"] = {"batch_size": 1}
    with pytest.raises(DataError, match=r"^data\.init_args\.batch_size=1: .*at least 2"):
        check_batch_norm(cfg)


@pytest.mark.skipif(torch.backends.mps.is_available(), reason="this machine has an MPS GPU")
def test_mps_on_a_machine_without_it():
    with pytest.raises(DataError, match=r"trainer.accelerator='mps': this machine has no Apple"):
        check_accelerator({"accelerator": "mps"})
    check_accelerator({"accelerator": "cpu"})
    check_accelerator({"accelerator": "auto"})


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_more_devices_than_gpus_is_refused():
    n = torch.cuda.device_count()
    check_accelerator({"accelerator": "gpu", "devices": n})
    with pytest.raises(DataError, match=rf"trainer.devices={n + 1}: this machine has {n} CUDA"):
        check_accelerator({"accelerator": "gpu", "devices": n + 1})
