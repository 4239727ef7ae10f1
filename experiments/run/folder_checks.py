"""Checks a run folder passes before a command trusts it, without torch.

* :func:`effective_config`: the run's settings as they are now: the latest
  ``config_resume_K.yaml`` a resume with ``--resume_changes true`` wrote, else ``config.yaml``;
  an empty, truncated or unparsable file is refused in one line naming it.
* :func:`checkpoint_header`: the ``hyper_parameters`` and the weights' shapes of a ``.ckpt``
  read from its pickle without torch (tensors are not loaded, nothing is imported or run);
  :func:`check_checkpoint_model` refuses a checkpoint of another architecture than the config's.
* :func:`read_json_file`: a JSON file of the run (timings, ...) or one line naming it.
"""

from __future__ import annotations

import collections
import json
import pickle
import re
import zipfile
from pathlib import Path

import yaml

from datamodules.errors import DataError

#: ``config_resume_K.yaml``: what a resume of the run saved (K = 1, 2, ...)
RESUME_CONFIG = re.compile(r"^config_resume_(\d+)\.yaml$")


def config_files(folder: Path) -> list[Path]:
    """``config.yaml`` then each ``config_resume_K.yaml`` of ``folder``, by K."""
    resumes = [(int(m.group(1)), p) for p in folder.iterdir() if (m := RESUME_CONFIG.match(p.name))]
    return [folder / "config.yaml", *(p for _, p in sorted(resumes))]


def read_run_config(path: Path) -> dict:
    """A saved run config (``config.yaml`` or ``config_resume_K.yaml``) as a dict; one line
    naming the file when it is empty, truncated, unparsable or lacks ``model``/``data``."""
    fix = "restore it from a copy or re-run the fit"
    try:
        cfg = yaml.safe_load(path.read_text())
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        first = " ".join(str(exc).split())[:120]
        raise DataError(f"{path}: unreadable run config ({first}); {fix}.") from None
    if not isinstance(cfg, dict):
        what = "empty" if cfg is None else f"a {type(cfg).__name__}, not a mapping"
        raise DataError(f"{path}: the run config is {what}; {fix}.")
    for key in ("model", "data"):
        block = cfg.get(key)
        if not isinstance(block, dict) or not isinstance(block.get("init_args"), dict):
            raise DataError(f"{path}: no {key}.init_args (truncated?); {fix}.")
    return cfg


def effective_config(folder: str | Path) -> tuple[dict, Path]:
    """``(config, file)``: the run's settings now. A resume that changed settings (allowed with
    ``--resume_changes true``) saved them in ``config_resume_K.yaml``; the latest one wins, since
    the checkpoint was trained on to its end with them. A plain resume's copy is the same."""
    path = config_files(Path(folder))[-1]
    return read_run_config(path), path


def read_json_file(path: Path, fix: str) -> dict:
    """A JSON object from ``path`` or one line naming it (truncated, empty or not an object)."""
    try:
        data = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise DataError(f"{path}: unreadable JSON ({exc}); {fix}.") from None
    if not isinstance(data, dict):
        raise DataError(f"{path}: not a JSON object; {fix}.")
    return data


class _Opaque:
    """Stands for any class a checkpoint's pickle names (tensors, storages, torch types):
    accepts any arguments and state, runs nothing."""

    def __new__(cls, *args, **kwargs):
        obj = super().__new__(cls)
        obj.args = args
        return obj

    def __init__(self, *args, **kwargs) -> None:
        pass

    def __setstate__(self, state) -> None:
        self.state = state

    def __setitem__(self, key, value) -> None:
        pass

    def append(self, value) -> None:
        pass

    def extend(self, values) -> None:
        pass


class _Tensor(_Opaque):
    """``torch._utils._rebuild_tensor_v2(storage, offset, size, ...)``: keeps the shape."""

    @property
    def shape(self) -> tuple:
        return tuple(self.args[2]) if len(self.args) > 2 else ()


class _HeaderUnpickler(pickle.Unpickler):
    """Unpickles a torch checkpoint's ``data.pkl`` into plain containers and stand-ins: no
    module is imported and no function of the file is called."""

    SAFE = {("collections", "OrderedDict"): collections.OrderedDict}

    def find_class(self, module: str, name: str):
        if (module, name) in self.SAFE:
            return self.SAFE[(module, name)]
        if name.startswith("_rebuild_tensor") or name == "_rebuild_parameter":
            return _Tensor if name != "_rebuild_parameter" else _parameter
        return type(name, (_Opaque,), {})

    def persistent_load(self, pid):
        return None


def _parameter(data, *args) -> _Opaque:
    return data


def checkpoint_header(path: Path) -> dict:
    """``{"hyper_parameters": dict, "shapes": {key: shape}}`` of a ``.ckpt`` (a torch zip),
    read without torch; empty when the file is not a torch zip (its loader says why)."""
    try:
        with zipfile.ZipFile(path) as zf:
            name = next((n for n in zf.namelist() if n.endswith("data.pkl")), None)
            if name is None:
                return {}
            data = _HeaderUnpickler(zf.open(name)).load()
    except Exception:  # noqa: BLE001 - a damaged file: load_checkpoint names the problem
        return {}
    if not isinstance(data, dict):
        return {}
    weights = data.get("state_dict", data)
    shapes = {}
    if isinstance(weights, dict):
        shapes = {k: v.shape for k, v in weights.items() if isinstance(v, _Tensor)}
    hp = data.get("hyper_parameters")
    return {"hyper_parameters": dict(hp) if isinstance(hp, dict) else {}, "shapes": shapes}


#: ``model.init_args`` that decide the network's layers, and so a checkpoint's keys and shapes
LAYOUT_KEYS = ("arch", "preset", "batchnorm", "dropout", "head", "dropout_defense", "dp")


def check_checkpoint_model(ckpt: Path, config: dict, config_file: Path, n_classes: int) -> None:
    """Refuse (one line naming ``ckpt`` and the config's arch) a checkpoint whose recorded
    ``hyper_parameters`` describe another model than ``config``'s: another class, a layout key of
    :data:`LAYOUT_KEYS` that differs, or another number of classes than the manifest's
    ``n_classes``. A checkpoint without hyper-parameters is checked when its weights load."""
    hp = checkpoint_header(ckpt).get("hyper_parameters") or {}
    if not hp:
        return
    model = config.get("model") or {}
    args = model.get("init_args") or {}
    diffs = []
    if hp.get("_class_path") and model.get("class_path") not in (None, hp["_class_path"]):
        diffs.append(f"model {hp['_class_path']} (config: {model.get('class_path')})")
    for key in LAYOUT_KEYS:
        if key in hp and key in args and _plain(hp[key]) and not _same(hp[key], args[key]):
            diffs.append(f"{key} {hp[key]!r} (config: {args[key]!r})")
    if isinstance(hp.get("num_classes"), int) and hp["num_classes"] != n_classes:
        diffs.append(f"{hp['num_classes']} classes (manifest: {n_classes})")
    if diffs:
        raise DataError(
            f"{ckpt}: a checkpoint of another model than {config_file.name}'s "
            f"(model.init_args.arch {args.get('arch')!r}): {'; '.join(diffs)}. Put this run's "
            "own checkpoint back, or re-run the fit."
        )


def _plain(value) -> bool:
    """True for the values YAML and JSON hold (a stand-in for a class instance is not one)."""
    if isinstance(value, dict):
        return all(_plain(v) for v in value.values())
    if isinstance(value, (list, tuple)):
        return all(_plain(v) for v in value)
    return value is None or isinstance(value, (str, int, float, bool))


def _same(a, b) -> bool:
    """``a`` equals ``b`` as JSON values; of two mappings only their common keys count (a config
    lists every default, the recorded hyper-parameters what the model was given)."""
    if isinstance(a, dict) and isinstance(b, dict):
        return all(_same(a[k], b[k]) for k in a.keys() & b.keys())
    return json.loads(json.dumps(a, default=str)) == json.loads(json.dumps(b, default=str))
