"""The run's target exported to ONNX (``cli.py export``) and run by ONNX Runtime, without torch:
the fast engine of ``cli.py discriminate``.

The bundle is ``<run>/export/``:

* ``target.onnx``: one graph, input ``image`` (B, 3, S, S) float32 (the run's evaluation
  transform, :func:`datamodules.decode.eval_array`), outputs ``logits`` (B, C) and
  ``embedding`` (B, D);
* ``export.json``: the checkpoint it came from (size, mtime, sha256), the input transform, the
  versions that wrote it and the check of its outputs against torch.

A bundle is used only while ``checkpoints/last.ckpt`` is the checkpoint it came from, and only
with final signals (``signals/final.npz``) extracted from that same checkpoint.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from pathlib import Path

import numpy as np

from datamodules.decode import eval_array, load_rgb
from datamodules.hashing import sha256_file
from experiments.run.folder import RunContext, cached_final_signals

BUNDLE = "export"
MODEL_FILE = "target.onnx"
INFO_FILE = "export.json"
#: export.json's format; a bundle of another format is written again
FORMAT = 1
BATCH = 32


def bundle_dir(run_folder: str | Path) -> Path:
    return Path(run_folder) / BUNDLE


def checkpoint_identity(path: Path) -> dict:
    """``{"file", "size", "mtime_ns", "sha256"}`` of a checkpoint file."""
    st = path.stat()
    return {
        "file": path.name,
        "size": st.st_size,
        "mtime_ns": st.st_mtime_ns,
        "sha256": sha256_file(path),
    }


def same_checkpoint(path: Path, recorded: dict) -> bool:
    """Whether ``path`` is the checkpoint ``recorded`` (:func:`checkpoint_identity`): the same
    size and mtime, else the same sha256 (a copied run folder keeps its bytes, not its times)."""
    if not path.is_file():
        return False
    st = path.stat()
    if st.st_size != recorded.get("size"):
        return False
    if st.st_mtime_ns == recorded.get("mtime_ns"):
        return True
    return sha256_file(path) == recorded.get("sha256")


def bundle_info(ctx: RunContext) -> tuple[dict | None, str]:
    """``(export.json, "")`` when the run's bundle is usable for its current checkpoint and
    transform, else ``(None, why not)``."""
    folder = bundle_dir(ctx.folder)
    info_path, model_path = folder / INFO_FILE, folder / MODEL_FILE
    if not (info_path.is_file() and model_path.is_file()):
        return None, f"no exported target in {folder} (python cli.py export --run {ctx.folder})"
    try:
        info = json.loads(info_path.read_text())
    except (OSError, ValueError):
        return None, f"{info_path} is unreadable; export again"
    if info.get("format") != FORMAT:
        return None, f"{info_path} has format {info.get('format')}, not {FORMAT}; export again"
    if not same_checkpoint(ctx.checkpoint, info.get("checkpoint") or {}):
        return None, f"{model_path} was exported from another checkpoint; export again"
    want = transform_settings(ctx)
    if info.get("input") != want or info.get("classes") != len(ctx.class_names):
        return None, f"{info_path} does not match the run's config.yaml; export again"
    return info, ""


def transform_settings(ctx: RunContext) -> dict:
    """The run's evaluation transform, as :func:`datamodules.decode.eval_array` takes it."""
    return {"size": ctx.image_size, "resize": ctx.resize, "pad_value": ctx.pad_value}


def signals_from_outputs(logits: np.ndarray, embedding: np.ndarray) -> dict[str, np.ndarray]:
    """The signal arrays of :func:`lightning_modules.extraction.extract_arrays` for unlabelled
    rows, from logits (N, C) and embeddings (N, D): ``index``, ``label`` (-1), ``loss_true``
    (NaN), ``loss_pred`` (nats), ``pred``, ``max_prob``, ``entropy`` (nats), ``logits``,
    ``embedding``; float32 as there."""
    z = np.asarray(logits, dtype=np.float32)
    shifted = z - z.max(1, keepdims=True)
    logp = shifted - np.log(np.exp(shifted).sum(1, keepdims=True))
    pred = z.argmax(1)
    n = len(z)
    return {
        "index": np.arange(n, dtype=np.int64),
        "label": np.full(n, -1, dtype=np.int64),
        "loss_true": np.full(n, np.nan, dtype=np.float32),
        "loss_pred": -logp[np.arange(n), pred],
        "pred": pred.astype(np.int64),
        "max_prob": np.exp(logp.max(1)),
        "entropy": -(np.exp(logp) * logp).sum(1),
        "logits": z,
        "embedding": np.asarray(embedding, dtype=np.float32),
    }


def session(model_path: Path, threads: int = 0):
    """An ONNX Runtime CPU session of ``model_path`` (``threads`` 0: the runtime's default)."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.log_severity_level = 3  # errors only
    return ort.InferenceSession(str(model_path), opts, providers=["CPUExecutionProvider"])


def run_batches(sess, batches: Iterable[tuple[np.ndarray]]) -> dict[str, np.ndarray]:
    """Concatenated ``logits`` and ``embedding`` of ``sess`` over batches ``(images,)``, images
    (B, 3, S, S) float32."""
    logits, emb = [], []
    for (x,) in batches:
        lo, em = sess.run(["logits", "embedding"], {"image": np.ascontiguousarray(x)})
        logits.append(lo)
        emb.append(em)
    if not logits:
        return {"logits": np.zeros((0, 0), np.float32), "embedding": np.zeros((0, 0), np.float32)}
    return {"logits": np.concatenate(logits), "embedding": np.concatenate(emb)}


class OnnxTarget:
    """The exported target of a run: scores photo files with ONNX Runtime (no torch)."""

    engine = "onnxruntime"

    def __init__(self, ctx: RunContext, info: dict, final: dict[str, np.ndarray]):
        self.ctx, self.info, self.final = ctx, info, final
        self.sess = session(bundle_dir(ctx.folder) / MODEL_FILE)

    @classmethod
    def open(cls, ctx: RunContext) -> tuple[OnnxTarget | None, str]:
        """``(target, "")``, or ``(None, why not)`` when the bundle or the runtime is missing."""
        info, why = bundle_info(ctx)
        if info is None:
            return None, why
        try:
            import onnxruntime  # noqa: F401
        except ImportError:
            return None, "onnxruntime is not installed (pip install onnxruntime)"
        found = cached_final_signals(ctx, info["checkpoint"]["sha256"])
        if found is None:
            return None, f"{ctx.folder}/signals/final.npz is missing or from another checkpoint"
        return cls(ctx, info, found[0]), ""

    def final_signals(self) -> dict[str, np.ndarray]:
        """The run's final signals (extracted by torch from the bundle's checkpoint)."""
        return self.final

    def images(self, paths: list[Path]) -> Iterable[tuple[np.ndarray]]:
        """Batches ``(images,)``, images (B, 3, S, S) float32: the photo files transformed as
        the run's evaluation transform."""
        t = transform_settings(self.ctx)
        for i in range(0, len(paths), BATCH):
            yield (np.stack([eval_array(load_rgb(p), **t) for p in paths[i : i + BATCH]]),)

    def signals(
        self, paths: list[Path], wrap: Callable[[Iterable, int], Iterable] | None = None
    ) -> dict[str, np.ndarray]:
        """Signal arrays (:func:`signals_from_outputs`) of the photo files ``paths``, in order.
        ``wrap(batches, total)`` may wrap the batches, e.g. in a progress bar."""
        batches = self.images(paths)
        out = run_batches(self.sess, wrap(batches, len(paths)) if wrap else batches)
        return signals_from_outputs(out["logits"], out["embedding"])
