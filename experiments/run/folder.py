"""A finished run folder: open it, rebuild its target from the checkpoint, extract its signals.

``RunContext.open(folder)`` reads the run's effective config (``config.yaml``, or the latest
``config_resume_K.yaml`` a resume with changed settings wrote) and the split manifest (checked
against its recorded hash), and refuses a checkpoint of another model than the config's, each
in one line naming the file (:mod:`experiments.run.folder_checks`). ``final_signals`` writes
``<run>/signals/final.npz`` (every manifest row, with embeddings), the file every attack of
``cli.py attack`` and ``cli.py discriminate`` reads; a damaged copy is extracted again.
"""

from __future__ import annotations

import os
import time
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING
from zipfile import BadZipFile

from attacks.signals import load_signals, save_signals
from datamodules.errors import DataError
from datamodules.manifest import read_manifest
from experiments.run.folder_checks import check_checkpoint_model, effective_config, read_json_file
from experiments.run.input_checks import check_run_folder, load_checkpoint
from experiments.run.outputs import write_json

if TYPE_CHECKING:  # torch and Lightning are imported only when a model or loader is built
    import torch
    from torch.utils.data import DataLoader

    from lightning_modules.classifier import ImageClassifier


@dataclass
class RunContext:
    """A finished run folder: its config, manifest, roots and (lazily) its target model."""

    folder: Path
    config: dict
    rows: list[dict]
    header: dict
    requested_device: str | None = None
    _model: ImageClassifier | None = field(default=None, repr=False)
    #: the file ``config`` was read from (``config.yaml`` or the latest ``config_resume_K.yaml``)
    config_file: Path | None = None

    @classmethod
    def open(cls, folder: str | Path, device: str | None = None) -> RunContext:
        folder = check_run_folder(folder)
        if not (folder / "split_manifest.csv").is_file():
            raise DataError(
                f"--run {folder}: not a run folder (no split_manifest.csv). Pass the folder printed by "
                "`python cli.py fit`, e.g. lightning_logs/demo/version_0."
            )
        cfg, cfg_file = effective_config(folder)
        rows, header = read_manifest(folder)  # checked against the hash the fit recorded
        ctx = cls(folder, cfg, rows, header, device, config_file=cfg_file)
        if ctx.checkpoint.is_file():
            check_checkpoint_model(ctx.checkpoint, cfg, cfg_file, len(ctx.class_names))
        return ctx

    @property
    def device(self) -> str:
        """``--device``, else ``cuda`` when torch sees a GPU, else ``cpu`` (torch is imported
        here, on first use, so that opening a run does not load it)."""
        if self.requested_device is None:
            import torch

            self.requested_device = "cuda" if torch.cuda.is_available() else "cpu"
        return self.requested_device

    @property
    def roots(self) -> dict[str, Path]:
        return {k: Path(v) for k, v in self.header["roots"].items()}

    @property
    def class_names(self) -> list[str]:
        return list(self.header["class_names"])

    @property
    def data_args(self) -> dict:
        return dict(self.config["data"]["init_args"])

    @property
    def model_args(self) -> dict:
        return dict(self.config["model"]["init_args"])

    def data_setting(self, group: str, key: str, default=None):
        """``data.init_args.<group>.<key>`` of the run's config; a run saved before the data
        settings were grouped (``split``, ``loader``) has it as ``data.init_args.<key>``."""
        args = self.data_args
        return (args.get(group) or {}).get(key, args.get(key, default))

    @property
    def image_size(self) -> int:
        return int(self.data_setting("loader", "image_size", 224))

    @property
    def resize(self) -> str:
        """The run's ``data.loader.resize`` (``squash`` for runs saved before it existed)."""
        return str(self.data_setting("loader", "resize", "squash"))

    @property
    def pad_value(self) -> int:
        return int(self.data_setting("loader", "pad_value", 0))

    def transform(self):
        """The run's evaluation transform: PIL in, normalised float32 ``(3, S, S)`` out."""
        from datamodules.images import eval_transform

        return eval_transform(self.image_size, self.resize, self.pad_value)

    @property
    def checkpoint(self) -> Path:
        return self.folder / "checkpoints" / "last.ckpt"

    def model(self) -> ImageClassifier:
        """The target classifier with the run's last weights, in eval mode on ``device``."""
        if self._model is None:
            self._model = load_classifier(self.checkpoint, self.model_args, len(self.class_names))
            self._model.to(self.device).eval()
        return self._model

    def loader(self, rows: list[dict], batch_size: int = 64) -> DataLoader:
        from torch.utils.data import DataLoader

        from datamodules.images import ManifestDataset

        ds = ManifestDataset(rows, self.roots, self.transform())
        return DataLoader(ds, batch_size=batch_size, shuffle=False, num_workers=0)

    def images(self, rows: list[dict]) -> torch.Tensor:
        """Eval-transformed images (N, 3, S, S) float32 of ``rows``."""
        import torch

        xs = [x for x, _, _ in self.loader(rows)]
        return torch.cat(xs) if xs else torch.zeros(0, 3, self.image_size, self.image_size)


def is_embedding_target(model_args: dict) -> bool:
    """True when the run's classifier has an embedding head (``model.init_args.head`` other than
    the softmax one): it is then scored by similarity to the training photos."""
    return model_args.get("head") not in (None, "softmax", "linear")


#: init_args that decide the network's layers (and so the checkpoint's keys)
ARCH_KEYS = (
    "arch",
    "weights",
    "preset",
    "batchnorm",
    "dropout",
    "weight_decay",
    "channels_last",
    "dropout_defense",
    "dropout_defense_p",
    "head",
    "arcface",
)


def model_kwargs(args: dict, num_classes: int, *, with_dp: bool = False) -> dict:
    """Constructor kwargs of :class:`ImageClassifier` from a saved config's ``init_args``.

    ``with_dp`` also passes the run's ``dp`` block: a DP run's network is Opacus-wrapped (BatchNorm
    replaced, ``net._module.*`` keys), so its checkpoint loads only into the same wrapping. Models
    the attacks train themselves (shadows, ensemble subsets) are trained without DP.
    """
    keys = ARCH_KEYS + (("dp",) if with_dp else ())
    return {"num_classes": num_classes, **{k: args[k] for k in keys if args.get(k) is not None}}


def load_classifier(ckpt: Path, args: dict, num_classes: int) -> ImageClassifier:
    """Rebuild the classifier (its DP wrapping included) and load ``ckpt`` with
    ``torch.load(weights_only=True)``."""
    from lightning_modules.classifier import ImageClassifier  # Lightning only when rebuilding

    # the layout of the run's weights; the checkpoint holds their values
    model = ImageClassifier(**model_kwargs(args, num_classes, with_dp=True), load_weights=False)
    state = load_checkpoint(ckpt)
    load_weights(model, state["state_dict"] if "state_dict" in state else state, ckpt, args)
    return model


def load_weights(model, weights: dict, ckpt: Path, args: dict) -> None:
    """``model.load_state_dict(weights)``; one line naming ``ckpt`` and the config's
    ``model.init_args.arch`` when the weights are another network's (keys or shapes differ)."""
    own = model.state_dict()
    missing = [k for k in own if k not in weights]
    unexpected = [k for k in weights if k not in own]
    reshaped = [k for k in own if k in weights and tuple(own[k].shape) != tuple(weights[k].shape)]
    if missing or unexpected or reshaped:
        parts = [f"{len(missing)} of its weights missing", f"{len(unexpected)} unexpected"]
        if reshaped:
            k = reshaped[0]
            parts.append(
                f"{len(reshaped)} of another shape ({k}: {tuple(weights[k].shape)} in the "
                f"checkpoint, {tuple(own[k].shape)} in the model)"
            )
        raise DataError(
            f"{ckpt}: the checkpoint's weights are not those of the run's model "
            f"(model.init_args.arch {args.get('arch')!r}: {', '.join(parts)}); put this run's "
            "own checkpoint back or re-run the fit."
        )
    model.load_state_dict(weights)


def optimizer_factory(args: dict):
    """Optimizer factory from a saved ``optimizer`` config (class_path/init_args) or SGD."""
    opt = args.get("optimizer")
    if not opt:
        return None
    module, name = opt["class_path"].rsplit(".", 1)
    cls = getattr(__import__(module, fromlist=[name]), name)
    kw = {k: v for k, v in (opt.get("init_args") or {}).items() if k != "weight_decay"}

    def make(params):
        return cls(params, **kw)

    return make


def signal_source(ctx: RunContext) -> dict | None:
    """The checkpoint the run's signals come from: ``{"path", "sha256", "epoch", "global_step"}``
    (None when it is gone). The sha256 is remembered per (size, mtime) like the image hashes."""
    ckpt = ctx.checkpoint
    if not ckpt.is_file():
        return None
    from datamodules.hashing import sha256_file

    st = ckpt.stat()
    key = (str(ckpt), st.st_size, st.st_mtime_ns)
    if key not in _SOURCES:
        state = load_checkpoint(ckpt)
        _SOURCES[key] = {
            "path": str(ckpt),
            "sha256": sha256_file(ckpt),
            "epoch": state.get("epoch"),
            "global_step": state.get("global_step"),
        }
    return _SOURCES[key]


_SOURCES: dict[tuple, dict] = {}


def cached_final_signals(ctx: RunContext, sha256: str | None) -> tuple[dict, float] | None:
    """``(signals, seconds per sample)`` of ``<run>/signals/final.npz`` when it exists, is whole
    (one row per manifest row) and was extracted from the checkpoint with this ``sha256`` (any
    checkpoint when None), else None: a truncated or corrupt file or ``final_timing.json`` is
    extracted again. Needs no torch."""
    path = ctx.folder / "signals" / "final.npz"
    timing = path.with_name("final_timing.json")
    if not (path.is_file() and timing.is_file()):
        return None
    try:
        info = read_json_file(timing, "")
        if sha256 is not None and (info.get("checkpoint") or {}).get("sha256") != sha256:
            return None
        sig = load_signals(path)
        per = float(info["seconds_per_sample"])
    except (DataError, OSError, ValueError, EOFError, KeyError, TypeError, BadZipFile, zlib.error):
        return None
    if len(sig.get("index", ())) != len(ctx.rows):
        return None
    return sig, per


def final_signals(ctx: RunContext, force: bool = False, cached: bool = False) -> tuple[dict, float]:
    """``<run>/signals/final.npz`` (every manifest row, with embeddings) and the forward-pass
    time per sample in seconds (stored in ``final_timing.json`` with the checkpoint they came
    from, :func:`signal_source`).

    The cached file is reused only while it records the current checkpoint's sha256; a changed
    checkpoint (a resumed or retrained run) recomputes it. ``cached``: reuse it even when the
    checkpoint is gone. Inside an initialised ``torch.distributed`` group (``cli.py attack``
    under ``torchrun``) every rank must call it: each scores its shard of the rows, every rank
    gets all of them back, and rank 0 alone writes the two files.
    """
    path = ctx.folder / "signals" / "final.npz"
    timing = path.with_name("final_timing.json")
    source = signal_source(ctx)
    if not force and (source is not None or cached):
        found = cached_final_signals(ctx, source["sha256"] if source else None)
        if found is not None:
            return found
    if source is None:
        raise DataError(
            f"{path}: missing, truncated or unreadable (or {timing.name} is), and the checkpoint "
            f"{ctx.checkpoint} to extract it again is gone; restore either, or re-run the fit."
        )
    import torch

    from lightning_modules.extraction import extract_rows, is_rank_zero, rank_world

    t0 = time.perf_counter()
    model = ctx.model()
    sig = extract_rows(model, ctx.rows, ctx.loader, ctx.device, embed=getattr(model, "embed", None))
    per = (time.perf_counter() - t0) / max(1, len(ctx.rows))
    world = rank_world()[1]
    if is_rank_zero():
        info = {"seconds_per_sample": per, "device": ctx.device, "world_size": world}
        cache_signals(path, sig, {**info, "checkpoint": source})
    if world > 1:
        torch.distributed.barrier()  # the files exist for every rank once it returns
    return sig, per


def extract_distributed(run: str | Path, device: str | None = None) -> bool:
    """``cli.py attack`` started by ``torchrun`` (``RANK`` and ``WORLD_SIZE`` > 1 set): join the
    group (gloo on CPU, NCCL on ``cuda:LOCAL_RANK``), write ``signals/final.npz`` sharded over the
    ranks (:func:`final_signals`) and leave the group. True on rank 0, which then runs the
    attacks on its own; the other ranks are done."""
    import torch
    import torch.distributed as dist

    local = int(os.environ.get("LOCAL_RANK", "0"))
    if device is None:
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda":
        device = f"cuda:{local}"
    cuda = device.startswith("cuda")
    if cuda:
        torch.cuda.set_device(torch.device(device))
    dist.init_process_group("nccl" if cuda else "gloo")
    try:
        final_signals(RunContext.open(run, device))
        rank = dist.get_rank()
    finally:
        dist.destroy_process_group()
    return rank == 0


def cache_signals(path: Path, sig: dict, info: dict) -> bool:
    """Write ``final.npz`` and ``final_timing.json``; a run folder that cannot be written
    (read-only, no permission) keeps the signals in memory instead, with a note on stderr, so
    commands that write elsewhere (``discriminate --output``) still work. Returns whether the
    cache was written."""
    import errno
    import sys

    try:
        save_signals(path, sig)
        write_json(path.with_name("final_timing.json"), info)
        return True
    except OSError as exc:
        if exc.errno not in (errno.EROFS, errno.EACCES, errno.EPERM):
            raise
        print(f"note: {path.parent} cannot be written ({exc.strerror}); signals kept in memory",
              file=sys.stderr)  # fmt: skip
        return False
