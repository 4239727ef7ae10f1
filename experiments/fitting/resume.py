"""What ``cli.py fit|validate|test|predict --ckpt_path <run>/checkpoints/last.ckpt`` may do to
the run folder the checkpoint came from.

* **A resume is the same run.** :func:`check_resume` compares the settings that decide what the
  run is (:data:`RUN_SETTINGS`: the data module, its root, reader and catalogs, the split, the
  image size, the seed; every ``model.init_args`` but the optimizer and scheduler) with the run's
  effective config (:func:`experiments.run.folder_checks.effective_config`) and refuses a change in one
  line (the setting, its old and new value), before anything is trained or written.
  ``--resume_changes true`` accepts data and seed changes: the resumed fit saves them in
  ``config_resume_K.yaml``, which every later command then reads. A model change is refused even
  then: the checkpoint holds the run's model, and its hyper-parameters replace the config's.
  Settings that do not change the run (epochs, logging, progress bar, workers, devices, batch
  size, the optimizer) are free.
* **An evaluation writes beside the run, never into it or the current folder.**
  :func:`place_evaluation` sends ``validate``, ``test`` and ``predict`` to a fresh
  ``evaluations/<subcommand>_N/`` (its TensorBoard events and the split manifest it evaluated):
  inside the run folder of ``--ckpt_path``, else under the logger's ``save_dir/name`` (or
  ``default_root_dir``, default ``lightning_logs``). No ``config.yaml``, ``environment.json`` or
  ``config_resume_K.yaml`` is written for them.
"""

from __future__ import annotations

import json
from pathlib import Path

from datamodules.errors import DataError
from datamodules.manifest import verified_manifest_text
from experiments.run.folder_checks import effective_config

#: subcommands that evaluate a model and must not touch a run folder as a fit does
EVALUATIONS = ("validate", "test", "predict")

#: dotted keys of the settings that decide what a run is; True: ``--resume_changes`` may change
#: it (recorded in ``config_resume_K.yaml``), False: never (the checkpoint holds it)
RUN_SETTINGS: dict[str, bool] = {
    "seed_everything": True,
    "data.class_path": True,
    **{
        f"data.init_args.{k}": True
        for k in (
            "root",
            "reader",
            "catalogs",
            "nonmember_reader",
            "nonmember_root",
            "split",
            "num_classes",
            "role",
            "reference_index",
            "reference_seed",
            "views",
            "min_photos",
            "min_encounters",
            "holdout_individuals",
            "seed",
            "image_size",
            "loader.image_size",
            "loader.resize",
            "loader.pad_value",
        )
    },
    "model.class_path": False,
}

#: ``model.init_args`` a resume may change: the checkpoint does not hold them
MODEL_FREE = ("optimizer", "lr_scheduler")


def run_of_checkpoint(ckpt_path: str | None) -> Path | None:
    """The run folder ``ckpt_path`` lies in (``<run>/checkpoints/<name>.ckpt`` next to a
    ``config.yaml``), else None (no checkpoint, ``last``/``best``, or a loose file)."""
    if not ckpt_path or ckpt_path in ("last", "best", "hpc", "registry"):
        return None
    ckpt = Path(ckpt_path).resolve()
    run = ckpt.parent.parent
    if ckpt.parent.name == "checkpoints" and (run / "config.yaml").is_file():
        return run
    return None


def _get(cfg: dict, dotted: str):
    """``cfg[a][b]...`` for ``a.b...``; a :data:`_MISSING` marker when any part is absent."""
    node = cfg
    for part in dotted.split("."):
        if not isinstance(node, dict) or part not in node:
            return _MISSING
        node = node[part]
    return node


_MISSING = object()


def _norm(value):
    return json.loads(json.dumps(value, default=str, sort_keys=True))


def setting_changes(requested: dict, saved: dict) -> list[tuple[str, object, object, bool]]:
    """``(key, saved value, requested value, overridable)`` of each run setting that differs,
    down to the leaf (``data.init_args.split.seed``); a key absent on either side (a config
    saved before it existed) is not compared."""
    keys = dict(RUN_SETTINGS)
    model_args = _get(requested, "model.init_args")
    if isinstance(model_args, dict):
        keys |= {f"model.init_args.{k}": False for k in model_args if k not in MODEL_FREE}
    out = []
    for key, overridable in keys.items():
        old, new = _get(saved, key), _get(requested, key)
        if old is not _MISSING and new is not _MISSING:
            out += [(k, a, b, overridable) for k, a, b in _leaf_diffs(key, old, new)]
    return out


def _leaf_diffs(key: str, old, new) -> list[tuple[str, object, object]]:
    """``(dotted key, old, new)`` where ``old`` and ``new`` differ, into nested mappings."""
    if (
        isinstance(old, dict)
        and isinstance(new, dict)
        and old.get("class_path") == new.get("class_path")
    ):
        out = []
        for k in old.keys() & new.keys():
            out += _leaf_diffs(f"{key}.{k}", old[k], new[k])
        return sorted(out, key=lambda d: d[0])
    return [] if _norm(old) == _norm(new) else [(key, old, new)]


def _short(value) -> str:
    text = json.dumps(_norm(value), sort_keys=True)
    return text if len(text) <= 80 else text[:77] + "..."


def check_resume(requested: dict, ckpt_path: str, allow_changes: bool) -> Path | None:
    """Refuse (:class:`DataError`, one line) a resume from a run's checkpoint whose config
    changes what the run is (:data:`RUN_SETTINGS`); with ``allow_changes`` only model changes
    are refused. ``requested``: this fit's config as a plain dict (as ``config.yaml`` saves it).
    Returns the run folder (None when ``ckpt_path`` is not inside one)."""
    run = run_of_checkpoint(ckpt_path)
    if run is None:
        return None
    saved, saved_file = effective_config(run)
    if (run / "split_manifest.csv").is_file():
        verified_manifest_text(run)  # an edited manifest, before the fit writes anything
    changes = setting_changes(requested, saved)
    fixed = [c for c in changes if not c[3]]
    shown = fixed or ([] if allow_changes else changes)
    if not shown:
        return run
    key, old, new, overridable = shown[0]
    more = (
        f" (and {len(shown) - 1} more: {', '.join(c[0] for c in shown[1:])})" if shown[1:] else ""
    )
    what = f"{key} from {_short(old)} ({saved_file.name}) to {_short(new)}{more}"
    if overridable:
        fix = (
            "drop the change, start a new run (no --ckpt_path), or pass --resume_changes true to "
            "continue with it and record it in the run folder"
        )
    else:
        fix = (
            "the checkpoint holds the run's model, so not even --resume_changes can change it; "
            "start a new run (no --ckpt_path)"
        )
    raise DataError(
        f"--ckpt_path {ckpt_path}: this resume changes {what}; a resume continues the same run: "
        f"{fix}."
    )


def place_evaluation(cfg, subcommand: str, root: str) -> Path:
    """Point ``validate``/``test``/``predict`` (``cfg``: the subcommand's parsed config) at a
    fresh ``evaluations/<subcommand>_N/`` (see the module doc); returns that folder."""
    trainer = cfg["trainer"]
    logger = trainer.get("logger")
    loggers = [] if not logger or isinstance(logger, bool) else logger
    loggers = loggers if isinstance(loggers, list) else [loggers]
    tb = [lg for lg in loggers if "TensorBoardLogger" in str(lg.get("class_path", ""))]
    run = run_of_checkpoint(cfg.get("ckpt_path"))
    if run is not None:
        base = run
    elif tb:
        base = Path(tb[0].init_args.get("save_dir") or root) / (tb[0].init_args.get("name") or "")
    else:
        base = Path(trainer.get("default_root_dir") or root)
    n = 0
    while (base / "evaluations" / f"{subcommand}_{n}").exists():
        n += 1
    folder = base / "evaluations" / f"{subcommand}_{n}"
    for lg in tb:
        lg.init_args["save_dir"], lg.init_args["name"] = str(base), "evaluations"
        lg.init_args["version"] = folder.name
    trainer["default_root_dir"] = str(folder)  # where a run without a logger writes
    return folder
