"""User-input checks every command runs before it trains or writes anything.

Each check raises :class:`datamodules.errors.DataError` with one line naming the key or file and
the fix; ``cli.py`` prints it and exits 2. ``fit`` runs :func:`check_fit_config` on the parsed
config before any class is instantiated (so before the trainer and the run folder exist);
``attack``, ``defend``, ``study`` and ``audit`` call :func:`check_run_folder`,
:func:`check_folder` and :func:`load_checkpoint`.
"""

from __future__ import annotations

import difflib
import pickle
import zipfile
from pathlib import Path

from datamodules.errors import DataError

#: config keys (dotted, as in the YAML) that must hold a positive integer when set
POSITIVE = (
    "data.init_args.loader.batch_size",
    "data.init_args.loader.image_size",
    "data.init_args.loader.eval_batch_size",
    "data.init_args.reader.init_args.image_size",
    "data.init_args.reader.init_args.n_individuals",
    "data.init_args.reader.init_args.encounters_per_individual",
    "data.init_args.reader.init_args.photos_per_encounter",
    "data.init_args.batch_size",
    "data.init_args.image_size",
    "leakage.every_n_epochs",
)
#: image side lengths in pixels (``key: (low, high)``): a larger one runs out of memory in the
#: first allocation, a smaller one leaves too few pixels for the networks' downsampling
IMAGE_SIZE_LIMITS = (8, 2048)
IMAGE_SIZES = (
    "data.init_args.loader.image_size",
    "data.init_args.reader.init_args.image_size",
    "data.init_args.image_size",
    "data.init_args.views.height",
    "data.init_args.views.width",
)
#: training batch-size keys (the classifier's, the embedding population's)
TRAIN_BATCH = ("data.init_args.loader.batch_size", "data.init_args.batch_size")


def _get(cfg, dotted: str):
    node = cfg
    for part in dotted.split("."):
        if node is None:
            return None
        node = node.get(part) if hasattr(node, "get") else getattr(node, part, None)
    return node


def check_positive(cfg, keys=POSITIVE) -> None:
    """Every set key of ``keys`` holds an integer >= 1."""
    for key in keys:
        value = _get(cfg, key)
        if value is None or isinstance(value, bool):
            continue
        if not isinstance(value, int) or value < 1:
            raise DataError(f"{key}={value!r}: must be a positive integer (1 or more).")


def check_learning_rates(cfg) -> None:
    """Every learning rate of the model's settings (``lr``, ``*_lr``; the optimizer's too) is a
    positive finite number (a rate so large that training diverges is stopped by the
    fit's non-finite-loss check instead)."""
    model = _get(cfg, "model.init_args") or {}
    optimizer = _get(model, "optimizer.init_args") or {}
    found = [(f"model.init_args.{k}", k, v) for k, v in dict(model).items()]
    found += [
        (f"model.init_args.optimizer.init_args.{k}", k, v) for k, v in dict(optimizer).items()
    ]
    for key, name, value in found:
        if not (name == "lr" or name.endswith("_lr")) or value is None:
            continue
        number = isinstance(value, int | float) and not isinstance(value, bool)
        if not number or not 0 < value < float("inf"):
            raise DataError(
                f"{key}={value!r}: a learning rate must be a positive number, e.g. 3e-4."
            )


def check_image_sizes(cfg, keys=IMAGE_SIZES, limits=IMAGE_SIZE_LIMITS) -> None:
    """Every set key of ``keys`` holds an integer within ``limits`` (pixels)."""
    low, high = limits
    for key in keys:
        value = _get(cfg, key)
        if value is None or isinstance(value, bool):
            continue
        if not isinstance(value, int) or not low <= value <= high:
            raise DataError(
                f"{key}={value!r}: must be an integer from {low} to {high} pixels (the suite's "
                f"image-size limit); e.g. 224."
            )


def check_trainer(trainer) -> None:
    """``max_epochs`` is -1 (no limit), None or >= 1; ``max_steps`` -1 or >= 1."""
    if trainer is None:
        return
    epochs, steps = _get(trainer, "max_epochs"), _get(trainer, "max_steps")
    if epochs is not None and epochs != -1 and epochs < 1:
        raise DataError(f"trainer.max_epochs={epochs!r}: must be 1 or more (-1: no limit).")
    if steps is not None and steps != -1 and steps < 1:
        raise DataError(f"trainer.max_steps={steps!r}: must be 1 or more (-1: no limit).")


def check_arch(model) -> None:
    """``model.init_args.arch`` names a torchvision or timm classifier or a registered detector."""
    arch = _get(model, "init_args.arch")
    class_path = str(_get(model, "class_path") or "")
    if not isinstance(arch, str):
        return
    if "detector" in class_path.lower():
        from lightning_modules.components.detectors import detector_names

        known = list(detector_names())
    else:
        from torchvision import models

        known = models.list_models(module=models)
        if arch.split("/", 1)[-1] in known or _is_timm_model(arch):
            return
    if arch not in known:
        close = difflib.get_close_matches(arch, known, n=1)
        hint = f" Did you mean {close[0]!r}?" if close else f" Choose one of {', '.join(known)}."
        raise DataError(f"model.init_args.arch={arch!r}: unknown architecture.{hint}")


def _is_timm_model(arch: str) -> bool:
    """``arch`` (optionally ``timm/``-prefixed) names a timm architecture."""
    import timm

    return timm.is_model(arch.removeprefix("timm/"))


def check_accelerator(trainer) -> None:
    """``trainer.accelerator`` names a device this machine has (``gpu``/``cuda``/``mps``), and
    ``trainer.devices`` (a count) no more CUDA GPUs than it has."""
    acc = _get(trainer, "accelerator") if trainer is not None else None
    if not isinstance(acc, str) or acc.lower() not in ("gpu", "cuda", "mps"):
        return
    import torch

    mps = torch.backends.mps.is_available()
    if acc.lower() == "mps":
        have, what = mps, "Apple MPS GPU"
    else:
        have, what = torch.cuda.is_available() or (acc.lower() == "gpu" and mps), "CUDA GPU"
    if not have:
        raise DataError(
            f"trainer.accelerator={acc!r}: this machine has no {what} (no such device here); use "
            "'cpu', or 'auto' (a GPU when there is one)."
        )
    devices = _get(trainer, "devices")
    count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    wanted = int(devices) if isinstance(devices, str) and devices.isdigit() else devices
    if count and isinstance(wanted, int) and not isinstance(wanted, bool) and wanted > count:
        raise DataError(
            f"trainer.devices={devices!r}: this machine has {count} CUDA GPU(s); ask for at most "
            f"{count}, or 'auto'."
        )


def check_batch_norm(cfg) -> None:
    """A training batch of one photo cannot pass a BatchNorm layer in training mode: refuse
    ``batch_size: 1`` for a classifier whose network keeps BatchNorm (preset ``regularized`` or
    ``batchnorm: true``, an architecture that has it, no DP) and for the embedding population."""
    data_class = str(_get(cfg, "data.class_path") or "")
    if data_class.endswith("PopulationDataModule") and _get(cfg, TRAIN_BATCH[1]) == 1:
        raise DataError(
            f"{TRAIN_BATCH[1]}=1: the embedding's BatchNorm needs at least 2 photos in a training "
            "batch; give 2 or more."
        )
    if _get(cfg, TRAIN_BATCH[0]) != 1:
        return
    init = _get(cfg, "model.init_args")
    if not str(_get(cfg, "model.class_path") or "").endswith("ImageClassifier") or init is None:
        return
    if _get(init, "dp") is not None or not isinstance(_get(init, "arch"), str):
        return  # DP-SGD trains without BatchNorm
    from lightning_modules.components.classifier import PRESETS

    batchnorm = _get(init, "batchnorm")
    if batchnorm is None:
        batchnorm = PRESETS.get(_get(init, "preset") or "overfit", {}).get("batchnorm", False)
    if batchnorm and _has_batchnorm(_get(init, "arch")):
        raise DataError(
            f"{TRAIN_BATCH[0]}=1: a training batch of one photo cannot pass the BatchNorm layers "
            f"of model.init_args.arch={_get(init, 'arch')!r} (preset {_get(init, 'preset')!r}); "
            "give a batch_size of 2 or more, or set model.init_args.batchnorm to false."
        )


def _has_batchnorm(arch: str) -> bool:
    """``arch`` built as the classifier builds it (on the meta device: no memory, no weights)
    has a BatchNorm layer; False when it cannot be built here (the fit then says why)."""
    import torch
    from torch import nn

    from lightning_modules.components.classifier import build_classifier

    try:
        with torch.device("meta"):
            net = build_classifier(arch, 2, batchnorm=True, load_weights=False)
    except Exception:  # noqa: BLE001  an unknown or unbuildable arch is check_arch's business
        return False
    return any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in net.modules())


def check_fit_config(cfg, subcommand: str = "fit") -> None:
    """The ``fit``/``validate``/``test``/``predict`` config (``subcommand``), before anything is
    instantiated; the training-batch check only for ``fit``."""
    check_positive(cfg)
    check_image_sizes(cfg)
    check_learning_rates(cfg)
    check_trainer(_get(cfg, "trainer"))
    check_accelerator(_get(cfg, "trainer"))
    check_arch(_get(cfg, "model"))
    if subcommand == "fit":
        check_batch_norm(cfg)
    ckpt = _get(cfg, "ckpt_path")
    if ckpt and ckpt not in ("last", "best", "hpc", "registry"):
        load_checkpoint(Path(ckpt), option="--ckpt_path")


def check_folder(path: str | Path, option: str) -> Path:
    """``path`` is an existing folder."""
    path = Path(path)
    if not path.is_dir():
        what = "is not a folder" if path.exists() else "does not exist"
        raise DataError(f"{option} {path}: {what}. Pass an existing folder.")
    return path


def check_run_folder(path: str | Path, option: str = "--run") -> Path:
    """``path`` is a run folder ``cli.py fit`` made (it has ``config.yaml``)."""
    path = check_folder(path, option)
    if not (path / "config.yaml").is_file():
        raise DataError(
            f"{option} {path}: not a run folder (no config.yaml). Pass the folder printed by "
            "`python cli.py fit`, e.g. lightning_logs/demo/version_0."
        )
    return path


def check_checkpoint_file(path: Path, option: str = "checkpoint") -> Path:
    """``path`` exists and is a whole torch zip archive (a truncated file is refused)."""
    if not path.is_file():
        raise DataError(f"{option} {path}: checkpoint not found. Pass an existing .ckpt file.")
    try:
        with zipfile.ZipFile(path) as zf:
            bad = zf.testzip()
    except (zipfile.BadZipFile, OSError, EOFError) as exc:
        raise DataError(
            f"{path}: truncated or corrupted checkpoint ({exc}). Resume from another checkpoint "
            "or retrain."
        ) from None
    if bad is not None:
        raise DataError(
            f"{path}: corrupted checkpoint (member {bad} fails its CRC). Resume from another "
            "checkpoint or retrain."
        )
    return path


def load_checkpoint(path: str | Path, option: str = "checkpoint") -> dict:
    """``torch.load(path, weights_only=True)`` with one line for a missing, truncated, corrupted
    or unsafe file (never torch's advice to unpickle it with ``weights_only=False``)."""
    import torch

    path = check_checkpoint_file(Path(path), option)
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:
        raise DataError(
            f"{path}: the checkpoint holds objects other than tensors and plain values; it is "
            "refused rather than unpickled. Use a checkpoint written by `cli.py fit`."
        ) from None
    except (RuntimeError, EOFError, OSError, ValueError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise DataError(f"{path}: unreadable checkpoint ({first}). Use another one.") from None
