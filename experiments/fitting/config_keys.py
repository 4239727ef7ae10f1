"""One line for a config key jsonargparse refused: the key as the user spelled it, the closest
valid key, or the type a value must have."""

from __future__ import annotations

import difflib
import re

from datamodules.errors import DataError


def candidate_keys() -> list[str]:
    """Option names of the fit config (leaf names), for suggestions."""
    import dataclasses
    import inspect

    import pytorch_lightning as pl

    from datamodules.whale import LoaderSettings, SplitSettings, WhaleDataModule
    from experiments.callbacks.checkpoints import RunCheckpoint
    from experiments.callbacks.leakage_monitor import LeakageMonitor
    from lightning_modules.classifier import ImageClassifier

    names: set[str] = {"seed_everything", "ckpt_path", "attack_after_fit", "init_args"}
    for fn in (pl.Trainer, RunCheckpoint, LeakageMonitor, WhaleDataModule):
        names |= set(inspect.signature(fn).parameters)
    names |= set(inspect.signature(ImageClassifier).parameters)
    for dc in (LoaderSettings, SplitSettings):
        names |= {f.name for f in dataclasses.fields(dc)}
    names |= {"trainer", "model", "data", "checkpoint", "leakage", "audit", "optimizer"}
    return sorted(n for n in names if not n.startswith("_") and n not in ("args", "kwargs"))


#: jsonargparse's type names, as a user reads them
TYPE_WORDS = {
    "int": "an integer (a whole number)",
    "float": "a number",
    "bool": "true or false",
    "str": "text",
}


def config_key_error(message: str, argv: list[str] = ()) -> DataError:
    """One line for a jsonargparse parse error: an unknown key (the key it names, in full when
    ``argv`` spells it out, and the closest valid key) or a value of the wrong type (the key, the
    value and the type it must have)."""
    text = " ".join(message.split())
    unknown = (r"does not accept option '([^']+)'", r"unrecognized arguments: --?([^\s=]+)")
    key = next((m.group(1) for p in unknown if (m := re.search(p, text))), None)
    if key is None:
        wrong = _wrong_value(text, argv)
        if wrong is not None:
            return wrong
    patterns = (*unknown, r"Key \"([^\"]+)\"", r"NestedArg\(key='([^']+)'")
    key = key or next((m.group(1) for p in patterns if (m := re.search(p, text))), None)
    group = re.search(r"Group '([^']+)'", text)
    if key is None:
        return DataError(f"config: {text[:300]}")
    full = _spelled(f"{group.group(1)}.{key}" if group else key, argv)
    leaf = key.rsplit(".", 1)[-1]
    close = difflib.get_close_matches(leaf, candidate_keys(), n=1)
    hint = f" Did you mean {full[: len(full) - len(leaf)]}{close[0]}?" if close else ""
    return DataError(f"config key {full!r} is not an option.{hint} (cli.py fit --help lists them)")


def _spelled(key: str, argv) -> str:
    """``key`` as ``argv`` spells it in full (``--data.init_args.loader.image_size`` for
    ``loader.image_size``), else ``key``."""
    spelled = [a[2:].split("=", 1)[0] for a in argv if a.startswith("--")]
    return next((a for a in spelled if a == key or a.endswith("." + key)), key)


def _wrong_value(text: str, argv) -> DataError | None:
    """The one line for a known key given a value of the wrong type (``image_size: 3.5``), or
    None when ``text`` is not such an error."""
    types = [
        t
        for t in re.findall(r"Expected a (<class '[\w.]+'>|typing\.Literal\[[^\]]*\])", text)
        if "NoneType" not in t
    ]
    keys = re.findall(r"Parser key \"([^\"]+)\"", text)
    if not types or not keys:
        return None
    key = keys[-1]  # the innermost: a nested class's own key
    if len(keys) > 1 and _spelled(key, argv) == key:
        sep = ".init_args." if "class_path" in text else "."
        key = f"{keys[0]}{sep}{key}"
    key = _spelled(key, argv)
    got = re.search(r"Got value: (\S+)", text) or re.search(r"val='([^']*)'", text)
    got = got or re.search(r"Given value: (\S+)", text)
    value = got.group(1) if got else "?"
    name = re.sub(r"^<class '([\w.]+)'>$", r"\1", types[0])
    want = TYPE_WORDS.get(name.rsplit(".", 1)[-1], name)
    if name.startswith("typing.Literal"):
        want = "one of " + name[len("typing.Literal[") : -1]
    return DataError(f"{key}={value}: must be {want}. Fix the value (cli.py fit --help lists it).")
