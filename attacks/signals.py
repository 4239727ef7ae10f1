"""Signal files: the one seam between models and attacks.

A signal file holds one row per sample, written once by rank 0, as an uncompressed ``.npz``
(``allow_pickle=False``). Per-epoch files of the leakage monitor live at
``<run>/signals/epoch=NNN.npz``; the final extraction of ``cli.py attack`` at
``<run>/signals/final.npz``.

Classifier signal fields (N samples, C classes):

=================  ===========  =========================================================
``index``          int64 (N,)   row position in the manifest order the file was made from
``sample_id``      str (N,)     manifest ``sample_id``
``file``           str (N,)     image path relative to its catalog root
``identity``       str (N,)     individual id
``split``          str (N,)     train | val | test | attack | eval
``role``           str (N,)     member | nonmember
``set``            str (N,)     train | attack | eval
``label``          int64 (N,)   true class, -1 for non-member individuals
``logits``         f32 (N, C)   full logits (or ``topk_logits`` f32 (N, k) + ``topk_index``)
``loss_true``      f32 (N,)     cross-entropy w.r.t. the true label, NaN when label == -1
``loss_pred``      f32 (N,)     cross-entropy w.r.t. the predicted label (label-free)
``pred``           int64 (N,)   predicted class
``max_prob``       f32 (N,)     max softmax probability
``entropy``        f32 (N,)     softmax entropy, nats
``embedding``      f32 (N, D)   optional penultimate features
=================  ===========  =========================================================

Losses are in nats. The detector pipeline writes its own fields (boxes, scores) with the same
``index``/``sample_id``/``role``/``set`` columns.
"""

from __future__ import annotations

import os
import zipfile
from pathlib import Path

import numpy as np

from attacks.metrics import balance

META_FIELDS = ("sample_id", "file", "identity", "split", "role", "set")


def save_signals(path: str | Path, arrays: dict[str, np.ndarray]) -> Path:
    """Write ``arrays`` atomically to ``path`` (``.npz``). Every array must have N rows."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    lengths = {k: len(v) for k, v in arrays.items()}
    if len(set(lengths.values())) > 1:
        raise ValueError(f"signal arrays have different lengths: {lengths}")
    clean = {
        k: (np.asarray(v, dtype=str) if k in META_FIELDS else np.asarray(v))
        for k, v in arrays.items()
    }
    tmp = path.with_name(path.name + ".tmp")
    # np.savez reserves the keyword ``file``, which is also a signal field: write the zip directly
    with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_STORED, allowZip64=True) as zf:
        for key, value in clean.items():
            with zf.open(f"{key}.npy", "w", force_zip64=True) as fh:
                np.lib.format.write_array(fh, value, allow_pickle=False)
    os.replace(tmp, path)
    return path


def load_signals(path: str | Path) -> dict[str, np.ndarray]:
    """Read a signal file into a dict of arrays (no pickles)."""
    with np.load(Path(path), allow_pickle=False) as z:
        return {k: z[k] for k in z.files}


def select(signals: dict[str, np.ndarray], rows: np.ndarray) -> dict[str, np.ndarray]:
    """The rows of ``signals`` picked by ``rows``: a boolean mask (N,) or an index array."""
    return {k: v[rows] for k, v in signals.items()}


#: values of the whale signals' ``set`` column
SETS = ("train", "attack", "eval")


def subset(signals: dict[str, np.ndarray], set_name: str) -> dict[str, np.ndarray]:
    """The rows of one set of classifier signals: ``train``, ``attack`` or ``eval``.

    Detector signals have no sets (their ``side`` is target or shadow): asking them for one
    raises instead of silently returning no rows.
    """
    if set_name not in SETS or "set" not in signals:
        raise ValueError(
            f"subset({set_name!r}): classifier signals have sets {SETS}; detector signals have "
            "none (one file per side, target or shadow)."
        )
    return select(signals, signals["set"] == set_name)


def balanced(signals: dict[str, np.ndarray], seed: int = 0) -> dict[str, np.ndarray]:
    """As many members as non-members: the larger class subsampled (seeded, order kept)."""
    return select(signals, balance(membership(signals), seed))


def accuracy(signals: dict[str, np.ndarray], split: str, mask: np.ndarray | None = None) -> float:
    """Top-1 accuracy (``pred == label``) over the rows of ``split`` (and ``mask``); NaN if none."""
    m = signals["split"] == split
    if mask is not None:
        m = m & mask
    if not m.any():
        return float("nan")
    return float((signals["pred"][m] == signals["label"][m]).mean())


def membership(signals: dict[str, np.ndarray]) -> np.ndarray:
    """1 for members, 0 for non-members (int64, (N,))."""
    return (signals["role"] == "member").astype(np.int64)


def epoch_path(run: str | Path, epoch: int) -> Path:
    return Path(run) / "signals" / f"epoch={epoch:03d}.npz"


def list_epochs(run: str | Path) -> list[int]:
    """Epochs with a signal file, sorted."""
    folder = Path(run) / "signals"
    return sorted(int(p.stem.split("=")[1]) for p in folder.glob("epoch=*.npz"))
