"""Shadow models (ML-Leaks, whale paper Figure 8): a second classifier trained by the same
pipeline on *other* identities, whose member/non-member signals train an attack.

Two sources:

* :func:`train_shadow` trains one in-process on the target run's ID2 individuals (the adversary's
  own non-member pool, never ID1 or ID3): half of them become the shadow's known individuals
  (photos split into shadow-train and held-out shadow members), the other half its non-members.
  ``arch`` may differ from the target's (the transfer setting of Figure 8).
* :func:`shadow_run_signals` reuses a whole second run folder (for example the same data config
  with another split seed or another catalog): its attack set (its ID1-val + its ID2) is used.
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np

from attacks.signals import accuracy, load_signals, save_signals, subset
from experiments.run.folder import RunContext
from experiments.side_models.training import extract_signals, relabel, train_classifier


def shadow_rows(rows: list[dict], seed: int = 0, train_fraction: float = 0.5) -> list[dict]:
    """Manifest-like rows for a shadow built from the ID2 rows of ``rows``.

    Returns rows with ``split`` in shadow_train | shadow_val | shadow_out, ``role`` member for the
    first two and nonmember for shadow_out, and ``set`` train | attack | attack. Deterministic in
    ``seed``; individuals are split by identity, photos of known ones by ``train_fraction``.
    """
    id2 = [r for r in rows if r["split"] == "attack"]
    names = sorted({r["identity"] for r in id2})
    if len(names) < 3:
        raise ValueError(
            f"a shadow needs at least 3 ID2 individuals (2 known + 1 out), found {len(names)}"
        )
    rng = np.random.default_rng(seed)
    names = list(rng.permutation(names))
    known = set(names[: max(2, len(names) // 2)])
    out = []
    for ident in sorted(known):
        photos = [r for r in id2 if r["identity"] == ident]
        order = rng.permutation(len(photos))
        n_train = max(1, int(round(train_fraction * len(photos))))
        if n_train >= len(photos):
            n_train = len(photos) - 1
        for j, i in enumerate(order):
            split = "shadow_train" if j < n_train else "shadow_val"
            out.append(
                {
                    **photos[i],
                    "split": split,
                    "role": "member",
                    "set": "train" if split == "shadow_train" else "attack",
                }
            )
    for r in id2:
        if r["identity"] not in known:
            out.append({**r, "split": "shadow_out", "role": "nonmember", "set": "attack"})
    return out


def train_shadow(
    ctx: RunContext,
    out_dir: Path,
    *,
    arch: str | None = None,
    epochs: int = 10,
    seed: int = 0,
    batch_size: int = 32,
) -> tuple[dict, dict]:
    """Train a shadow on ID2 and return ``(signals, info)``; signals have ``set`` train|attack.

    Saves ``out_dir/shadow_signals.npz`` and ``out_dir/shadow_manifest.csv``.
    """
    rows = shadow_rows(ctx.rows, seed)
    known = sorted({r["identity"] for r in rows if r["role"] == "member"})
    margs = ctx.model_args
    if arch:
        margs["arch"] = arch
    model, secs = train_classifier(
        [r for r in rows if r["split"] == "shadow_train"],
        ctx.roots,
        known,
        margs,
        image_size=ctx.image_size,
        epochs=epochs,
        batch_size=batch_size,
        seed=seed,
        device=ctx.device,
        resize=ctx.resize,
        pad_value=ctx.pad_value,
    )
    rows = relabel(rows, known)
    out_dir.mkdir(parents=True, exist_ok=True)
    sig = extract_signals(
        model,
        rows,
        ctx.roots,
        ctx.image_size,
        device=ctx.device,
        path=out_dir / "shadow_signals.npz",
        resize=ctx.resize,
        pad_value=ctx.pad_value,
    )
    with (out_dir / "shadow_manifest.csv").open("w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    info = {
        "source": "trained on ID2",
        "arch": margs["arch"],
        "epochs": epochs,
        "seed": seed,
        "n_known": len(known),
        "n_out": len({r["identity"] for r in rows if r["role"] == "nonmember"}),
        "train_acc": accuracy(sig, "shadow_train"),
        "heldout_acc": accuracy(sig, "shadow_val"),
        "train_seconds": secs,
    }
    return sig, info


def shadow_run_signals(shadow_run: str | Path, out_dir: Path, device: str | None = None):
    """Attack-set signals of a second finished run (its own ID1-val members + ID2)."""
    ctx = RunContext.open(shadow_run, device)
    path = Path(out_dir) / "shadow_run_signals.npz"
    if path.is_file():
        sig = load_signals(path)
    else:
        sig = extract_signals(
            ctx.model(),
            ctx.rows,
            ctx.roots,
            ctx.image_size,
            device=ctx.device,
            resize=ctx.resize,
            pad_value=ctx.pad_value,
        )
        save_signals(path, sig)
    info = {"source": f"run {Path(shadow_run).resolve()}", "arch": ctx.model_args.get("arch")}
    return subset(sig, "attack"), info
