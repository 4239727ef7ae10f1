"""The run's own Lightning loggers, reopened to record results computed after ``fit``.

``cli.py attack`` (and the attacks after fit) log through the loggers that ``config.yaml`` lists
under ``trainer.logger``, so attack results land beside the training curves:

* ``TensorBoardLogger``: the run folder itself (a new event file beside the fit's);
* ``CSVLogger``: ``<run>/<output>/csv/metrics.csv`` (reopening the fit's own CSV folder would
  make Lightning delete the fit's ``metrics.csv``).

Other logger classes are left out with a printed note.
"""

from __future__ import annotations

import importlib
from pathlib import Path

import numpy as np


def _instantiate(entry: dict, run: Path, out_dir: Path):
    module, name = str(entry.get("class_path", "")).rsplit(".", 1)
    cls = getattr(importlib.import_module(module), name)
    kwargs = dict(entry.get("init_args") or {})
    if name == "TensorBoardLogger":
        kwargs.update(save_dir=str(run.parent.parent), name=run.parent.name, version=run.name)
        kwargs["default_hp_metric"] = False
    elif name == "CSVLogger":
        kwargs.update(save_dir=str(out_dir), name="", version="csv")
    else:
        print(f"note: results are not sent to logger {name} (only TensorBoard and CSV loggers)")
        return None
    return cls(**kwargs)


class RunLoggers:
    """Scalars and final results (hyperparameters with their metrics) to every logger of a run,
    figures to its TensorBoard loggers."""

    def __init__(self, loggers: list):
        self.loggers = loggers

    @classmethod
    def for_run(cls, config: dict, run: Path, out_dir: Path) -> RunLoggers:
        """The loggers of ``config`` (a run's saved ``config.yaml``), reopened for ``run``."""
        entries = (config.get("trainer") or {}).get("logger")
        if not entries or isinstance(entries, bool):
            entries = [{"class_path": "pytorch_lightning.loggers.TensorBoardLogger"}]
        entries = entries if isinstance(entries, list) else [entries]
        made = [_instantiate(e, Path(run), Path(out_dir)) for e in entries if isinstance(e, dict)]
        return cls([lg for lg in made if lg is not None])

    def metrics(self, prefix: str, values: dict, step: int = 0) -> None:
        """Log the numeric entries of ``values`` as ``<prefix>/<key>``."""
        numeric = {
            f"{prefix}/{k}": float(v)
            for k, v in values.items()
            if isinstance(v, (int, float, np.number)) and not isinstance(v, bool)
        }
        for lg in self.loggers:
            lg.log_metrics(numeric, step)

    def hparams(self, params: dict, metrics: dict) -> None:
        """Final results, once per run, for comparing runs: ``params`` (the run's settings:
        str, int, float or bool) and ``metrics`` (finite numbers) through each logger's
        ``log_hyperparams`` (TensorBoard: the HPARAMS tab, its metrics stored at step 0 as the
        tab reads them); loggers whose ``log_hyperparams`` takes no metrics (CSV) get them as
        one row of ``log_metrics``."""
        numeric = {
            k: float(v)
            for k, v in metrics.items()
            if isinstance(v, (int, float, np.number)) and np.isfinite(v)
        }
        for lg in self.loggers:
            if type(lg).__name__ == "TensorBoardLogger":
                lg.log_hyperparams(params, numeric)
            else:
                lg.log_hyperparams(params)
                lg.log_metrics(numeric, 0)

    def images(self, prefix: str, pngs: list[Path], step: int = 0) -> None:
        """Add each PNG as ``<prefix>/<file stem>`` to the TensorBoard loggers."""
        import matplotlib.pyplot as plt

        for lg in self.loggers:
            if not hasattr(lg.experiment, "add_image"):
                continue
            for png in pngs:
                img = plt.imread(png)[..., :3]
                lg.experiment.add_image(f"{prefix}/{png.stem}", img, step, dataformats="HWC")

    def close(self) -> None:
        for lg in self.loggers:
            lg.finalize("success")
