"""Run a classifier over manifest rows and produce per-sample signal arrays (attacks/signals.py).

Under DDP (an initialised ``torch.distributed`` group) each rank scores a disjoint shard
``rows[rank::world]``, without the padding of a ``DistributedSampler``; the shards are gathered on
every rank and put back in manifest order by ``index``, so each sample appears exactly once.
:func:`extract_rows` does all of it; writing the result is left to rank 0 (:func:`is_rank_zero`).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch.utils.data import DataLoader

from attacks.signals import META_FIELDS


@torch.no_grad()
def extract_arrays(
    model: torch.nn.Module,
    loader: DataLoader,
    device: torch.device | str,
    *,
    topk: int | None = None,
    embed: Callable | None = None,
    max_batches: int | None = None,
) -> dict[str, np.ndarray]:
    """Model outputs for every sample of ``loader`` (batches of ``(x, label, index)``).

    Returns arrays keyed as in :mod:`attacks.signals` (without the manifest metadata):
    ``index``, ``label``, ``logits`` (N, C) or ``topk_logits``/``topk_index`` (N, k), ``loss_true``
    (NaN where label == -1), ``loss_pred``, ``pred``, ``max_prob``, ``entropy`` and, when
    ``embed`` is given, ``embedding`` (N, D). Losses are cross-entropies in nats computed on the
    full logit vector, before any top-k truncation.
    """
    was_training = model.training
    model.eval()
    out: dict[str, list] = {
        k: [] for k in ("index", "label", "loss_true", "loss_pred", "pred", "max_prob", "entropy")
    }
    logit_key = []
    emb = []
    # one pass for logits and embedding when the model offers it (else a second trunk pass)
    both = getattr(model, "logits_and_embedding", None) if embed is not None else None
    try:
        for b, (x, y, idx) in enumerate(loader):
            if max_batches is not None and b >= max_batches:
                break
            x, y = x.to(device, non_blocking=True), y.to(device)
            if both is not None:
                logits, e = both(x)
                emb.append(e.float().cpu())
            else:
                logits = model(x)
                if embed is not None:
                    emb.append(embed(x).float().cpu())
            logits = logits.float()
            logp = F.log_softmax(logits, dim=1)
            pred = logits.argmax(1)
            has = y >= 0
            loss_true = torch.full_like(pred, float("nan"), dtype=torch.float32)
            if has.any():
                loss_true[has] = -logp[has].gather(1, y[has, None]).squeeze(1)
            out["index"].append(idx.cpu())
            out["label"].append(y.cpu())
            out["loss_true"].append(loss_true.cpu())
            out["loss_pred"].append((-logp.gather(1, pred[:, None]).squeeze(1)).cpu())
            out["pred"].append(pred.cpu())
            out["max_prob"].append(logp.max(1).values.exp().cpu())
            out["entropy"].append((-(logp.exp() * logp).sum(1)).cpu())
            if topk is not None and topk < logits.shape[1]:
                v, i = logits.topk(topk, dim=1)
                logit_key.append((v.cpu(), i.cpu()))
            else:
                logit_key.append(logits.cpu())
    finally:
        model.train(was_training)
    arrays = {k: torch.cat(v).numpy() if v else np.zeros(0) for k, v in out.items()}
    if logit_key and isinstance(logit_key[0], tuple):
        arrays["topk_logits"] = torch.cat([v for v, _ in logit_key]).numpy()
        arrays["topk_index"] = torch.cat([i for _, i in logit_key]).numpy()
    elif logit_key:
        arrays["logits"] = torch.cat(logit_key).numpy()
    if emb:
        arrays["embedding"] = torch.cat(emb).numpy()
    return arrays


def gather_shards(
    local: dict[str, np.ndarray], n_total: int | None = None
) -> dict[str, np.ndarray]:
    """All-gather per-rank arrays and return them sorted by ``index`` (identity when not DDP).

    Raises if an index appears twice, or (when ``n_total`` is given) if any is missing.
    """
    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        parts: list = [None] * dist.get_world_size()
        dist.all_gather_object(parts, local)
        parts = [p for p in parts if p and len(p.get("index", [])) > 0]
        merged = {k: np.concatenate([p[k] for p in parts]) for k in parts[0]} if parts else local
    else:
        merged = local
    order = np.argsort(merged["index"], kind="stable")
    merged = {k: v[order] for k, v in merged.items()}
    idx = merged["index"]
    if len(np.unique(idx)) != len(idx):
        raise RuntimeError("signal extraction produced a sample twice")
    if n_total is not None and len(idx) != n_total:
        raise RuntimeError(f"signal extraction produced {len(idx)} of {n_total} samples")
    return merged


def attach_metadata(arrays: dict[str, np.ndarray], rows: list[dict]) -> dict[str, np.ndarray]:
    """Add the manifest columns of :data:`attacks.signals.META_FIELDS` for each ``index``."""
    sel = [rows[i] for i in arrays["index"]]
    meta = {f: np.array([r[f] for r in sel], dtype=str) for f in META_FIELDS}
    return {**meta, **arrays}


def shard(n: int, rank: int, world: int) -> list[int]:
    """Indices ``rank, rank+world, ...`` below ``n``: a disjoint cover of range(n)."""
    return list(range(rank, n, world))


def rank_world() -> tuple[int, int]:
    """``(rank, world size)`` of the initialised ``torch.distributed`` group, else ``(0, 1)``."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def is_rank_zero() -> bool:
    """True in a single process and on global rank 0 of a group: the one that writes files."""
    return rank_world()[0] == 0


def extract_rows(
    model: torch.nn.Module,
    rows: list[dict],
    make_loader: Callable[[list[dict]], DataLoader],
    device: torch.device | str,
    *,
    topk: int | None = None,
    embed: Callable | None = None,
    max_batches: int | None = None,
) -> dict[str, np.ndarray]:
    """Signals of ``model`` over every row of ``rows``, with the manifest metadata, in row order.

    ``make_loader(subset)`` must return a non-shuffling loader of ``(x, label, position in
    subset)`` batches. In a single process that is all of ``rows``; under an initialised
    ``torch.distributed`` group rank ``r`` scores only ``rows[r::world]`` and the shards are
    all-gathered, so every rank returns the same full arrays (a collective: every rank must call
    it). ``index`` is the position in ``rows``. Other arguments as in :func:`extract_arrays`;
    with ``max_batches`` the completeness check is skipped.
    """
    rank, world = rank_world()
    mine = shard(len(rows), rank, world)
    local = extract_arrays(
        model,
        make_loader([rows[i] for i in mine]),
        device,
        topk=topk,
        embed=embed,
        max_batches=max_batches,
    )
    local["index"] = np.asarray(mine, dtype=np.int64)[local["index"].astype(np.int64)]
    arrays = gather_shards(local, None if max_batches is not None else len(rows))
    return attach_metadata(arrays, rows)
