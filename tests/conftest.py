"""Shared fixtures: tiny catalogs and detection datasets in the real on-disk formats, a tiny
fit's arguments and its run-folder readers, and signal arrays with known answers.

The builders live in tests/catalog_writers.py, tests/detection_writers.py, tests/cli_runs.py and
tests/signal_builders.py; each is offered to the tests as a fixture of the same name (a factory:
call it with the arguments it documents)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from tests import catalog_writers, cli_runs, detection_writers
from tests.signal_builders import classifier_signals, detector_signals, with_references


@pytest.fixture
def make_classifier_signals():
    """Factory: :func:`classifier_signals`."""
    return classifier_signals


@pytest.fixture
def make_detector_signals():
    """Factory: :func:`detector_signals`."""
    return detector_signals


@pytest.fixture
def separable():
    """Attack-set classifier signals whose members (loss 0.01-0.2) and non-members (1-3) separate."""
    return classifier_signals(np.linspace(0.01, 0.2, 20), np.linspace(1.0, 3.0, 20))


@pytest.fixture
def separable_run():
    """A run's classifier signals whose members and non-members separate cleanly: training
    rows (the gallery), an attack set and an evaluation set."""
    train = classifier_signals(np.linspace(0.01, 0.05, 12), [], "train", seed=3)
    train["split"] = np.full(len(train["index"]), "train")
    att = classifier_signals(np.linspace(0.01, 0.2, 20), np.linspace(1.0, 3.0, 20), "attack")
    ev = classifier_signals(np.linspace(0.02, 0.25, 16), np.linspace(1.1, 2.8, 16), "eval", seed=1)
    run = {k: np.concatenate([train[k], att[k], ev[k]]) for k in att}
    run["index"] = np.arange(len(run["index"]))
    run = with_references(run)
    n_train, n_att = len(train["index"]), len(att["index"])
    att = {k: v[n_train : n_train + n_att] for k, v in run.items()}
    ev = {k: v[n_train + n_att :] for k, v in run.items()}
    return run, att, ev


# ---- the builders as fixtures ------------------------------------------------------------


@pytest.fixture(scope="session", name="tiny_image")
def _tiny_image_fixture():
    return catalog_writers.tiny_image


@pytest.fixture(scope="session", name="folder_catalog")
def _folder_catalog_fixture():
    return catalog_writers.folder_catalog


@pytest.fixture(scope="session", name="noaa_catalog")
def _noaa_catalog_fixture():
    return catalog_writers.noaa_catalog


@pytest.fixture(scope="session", name="happywhale_catalog")
def _happywhale_catalog_fixture():
    return catalog_writers.happywhale_catalog


@pytest.fixture(scope="session", name="dated_catalog")
def _dated_catalog_fixture():
    return catalog_writers.dated_catalog


@pytest.fixture(scope="session", name="make_run_folder")
def _make_run_folder_fixture():
    return catalog_writers.make_run_folder


@pytest.fixture(scope="session", name="write_voc")
def _write_voc_fixture():
    return detection_writers.write_voc


@pytest.fixture(scope="session", name="write_inria")
def _write_inria_fixture():
    return detection_writers.write_inria


@pytest.fixture(scope="session", name="write_synthtext")
def _write_synthtext_fixture():
    return detection_writers.write_synthtext


@pytest.fixture(scope="session", name="tiny_args")
def _tiny_args_fixture():
    return cli_runs.tiny_args


@pytest.fixture(scope="session", name="reid_fit_args")
def _reid_fit_args_fixture():
    return cli_runs.reid_fit_args


@pytest.fixture(scope="session", name="ddp_env")
def _ddp_env_fixture():
    return cli_runs.ddp_env


@pytest.fixture(scope="session", name="run_cli")
def _run_cli_fixture():
    return cli_runs.run_cli


@pytest.fixture(scope="session", name="scalars")
def _scalars_fixture():
    return cli_runs.scalars


@pytest.fixture(scope="session")
def one_step() -> list[str]:
    """Trainer arguments of a smoke run: one training step, one validation batch, fp32."""
    return [
        "--trainer.max_epochs",
        "1",
        "--trainer.limit_train_batches",
        "1",
        "--trainer.limit_val_batches",
        "1",
        "--trainer.num_sanity_val_steps",
        "0",
        "--trainer.precision",
        "32-true",
    ]


@pytest.fixture
def one_thread():
    """One intra-op thread: on 2 shared cores, more threads slow small convolutions."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def repo() -> Path:
    """The repository root."""
    return cli_runs.REPO
