"""A finished re-identification embedding run (``cli.py fit`` of a ``ReIDEmbedding``): its config,
population manifest and weights, and the embeddings it gives photos of any catalog.

Photos are embedded as the run trained on them: the run's input size, its fixed views (view 0 the
photo, view 1 its mirror) and, with ``tta``, the mean of the photo's and its mirror's embeddings
(test-time flip), renormalised. Frozen-stage activations go through the run's cache.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import yaml

from datamodules.catalogs import CatalogReader, NoaaReader
from datamodules.errors import DataError
from datamodules.views import ViewSettings
from experiments.run.input_checks import check_run_folder, load_checkpoint

#: model init_args that decide the embedding net's layers
EMBEDDING_KEYS = ("arch", "frozen_stages", "embedding_dim", "arcface", "dropout")


def is_embedding_run(config: dict) -> bool:
    """True when the run's model is a :class:`~lightning_modules.embedding.ReIDEmbedding`."""
    return str(config.get("model", {}).get("class_path", "")).endswith("ReIDEmbedding")


def catalog_rows(root: str | Path, viewpoint: str | None) -> list[dict]:
    """Photos of a Where's Whale-do catalog: file, identity, encounter, year."""
    rows = []
    for r in NoaaReader(viewpoint=viewpoint).read(root).records:
        date = str(r.meta.get("date") or "")
        year = int(date[:4]) if date[:4].isdigit() else -1
        enc = f"{r.identity}/{r.group or r.file}"
        rows.append({"file": r.file, "identity": r.identity, "encounter": enc, "year": year})
    return rows


def embedding_run_in(argv: list[str]) -> bool:
    """True when the ``--run`` of ``argv`` is an embedding run (its ``config.yaml``)."""
    runs = [v for k, v in zip(argv, argv[1:]) if k == "--run"]
    runs += [k.split("=", 1)[1] for k in argv if k.startswith("--run=")]
    config = Path(runs[-1]) / "config.yaml" if runs else None
    if config is None or not config.is_file():
        return False
    try:
        cfg = yaml.safe_load(config.read_text())
    except yaml.YAMLError:
        return False  # the run checks below say what is wrong
    return isinstance(cfg, dict) and is_embedding_run(cfg)


@dataclass
class EmbeddingRun:
    """An embedding run folder; :meth:`embed` gives (N, D) unit-length embeddings of photos."""

    folder: Path
    config: dict
    population: list[dict]
    _model: object = field(default=None, repr=False)
    #: reference embeddings by ``tta``: a command's steps share one embedding of them
    _reference: dict = field(default_factory=dict, repr=False)

    @classmethod
    def open(cls, folder: str | Path) -> EmbeddingRun:
        folder = check_run_folder(folder)
        config = yaml.safe_load((folder / "config.yaml").read_text())
        if not isinstance(config, dict) or not is_embedding_run(config):
            raise DataError(
                f"--run {folder}: not an embedding run (its model is not ReIDEmbedding). Pass a "
                "run of `cli.py fit --config beluga_reid_cpu.yaml`."
            )
        from datamodules.population import MANIFEST  # torch: keep this module torch-free

        manifest = folder / MANIFEST
        if not manifest.is_file():
            raise DataError(f"--run {folder}: no {MANIFEST}; the fit did not finish its setup.")
        with manifest.open(newline="") as fh:
            population = list(csv.DictReader(fh))
        return cls(folder, config, population)

    @property
    def data_args(self) -> dict:
        return dict(self.config["data"]["init_args"])

    @property
    def views(self) -> ViewSettings:
        v = self.data_args.get("views") or {}
        return ViewSettings(**{k: v[k] for k in ("height", "width", "seed") if k in v})

    @property
    def population_root(self) -> Path:
        return Path(self.data_args["root"])

    @property
    def cache_dir(self) -> str | None:
        return self.data_args.get("cache_dir", "data_cache/views")

    def model(self):
        """The embedding module with the run's last weights, in eval mode (CPU)."""
        if self._model is None:
            from lightning_modules.embedding import ReIDEmbedding

            args = dict(self.config["model"]["init_args"])
            kwargs = {k: args[k] for k in EMBEDDING_KEYS if args.get(k) is not None}
            n = len({r["identity"] for r in self.population if r["role"] == "train"})
            # the layout and input normalisation of the run's weights; the checkpoint's values
            weights = str(args.get("weights") or "none")
            model = ReIDEmbedding(num_classes=n, weights=weights, load_weights=False, **kwargs)
            state = load_checkpoint(self.folder / "checkpoints" / "last.ckpt")
            model.load_state_dict(state.get("state_dict", state))
            self._model = model.eval()
        return self._model

    def embed(self, reader: CatalogReader, root: str | Path, rows: list[dict], tta: bool = True):
        """(N, D) float32 embeddings of ``rows`` (``file`` relative to ``root``)."""
        import torch

        from datamodules.population import PopulationDataModule

        model = self.model()
        dm = PopulationDataModule(
            reader,
            str(root),
            replace(self.views, views=2 if tta else 1),
            cache_dir=self.cache_dir,
        )
        dm.catalog_root = Path(root).resolve()
        if model.net.frozen_stages > 0:
            dm.attach_frozen(model.net.frozen_features, model.frozen_key())
            model.serves_frozen = True
        x = dm.inputs(rows)
        with torch.no_grad():
            emb = torch.cat([model.embed(x[i : i + 256]) for i in range(0, len(x), 256)])
        emb = emb.view(len(rows), -1, emb.shape[1]).sum(1)
        return torch.nn.functional.normalize(emb, dim=1).numpy()

    def reference(self, tta: bool = True) -> tuple[np.ndarray, np.ndarray]:
        """Embeddings (R, D) and identities (R,) of the population whales held apart (embedded
        once per ``tta`` setting)."""
        if tta not in self._reference:
            rows = [r for r in self.population if r["role"] == "reference"]
            if not rows:
                emb = np.zeros((0, 1), np.float32)
            else:
                emb = self.embed(NoaaReader(), self.population_root, rows, tta)
            self._reference[tta] = (emb, np.asarray([r["identity"] for r in rows], dtype=str))
        return self._reference[tta]
