"""Poisson sampling for DP-SGD: the training loader the accountant assumes.

:func:`poisson_loader` rebuilds a datamodule's training loader as Opacus's Poisson
``DPDataLoader`` (one process) or over :class:`EvenDistributedPoissonSampler` (DDP), split into
physical batches when ``max_physical_batch_size`` is set.
"""

from __future__ import annotations

import math
import os

import torch
from opacus.data_loader import DPDataLoader
from opacus.optimizers import DPOptimizer
from opacus.utils.batch_memory_manager import wrap_data_loader
from torch.utils.data import DataLoader, Sampler

from lightning_modules.dp.config import DPConfig


class EvenDistributedPoissonSampler(Sampler[list[int]]):
    """Poisson sampling of the whole training set, sharded over the DDP processes, with every
    process yielding the same number of batches.

    Every process draws the same inclusion mask over the whole (shuffled) training set, each
    sample independently with probability ``sample_rate``, from a generator seeded by ``seed``
    and the epoch, and keeps its shard ``perm[rank::world]``. So the union over processes is one
    Poisson sample of the dataset (what the accountant assumes), and every process knows every
    process's batch size without communicating.

    * Opacus's ``DistributedUniformWithReplacementSampler`` skips a process's empty batch, so
      processes can take different numbers of steps (a DDP hang, and an accountant that counts
      fewer steps than were taken); here every process yields every batch, an empty one being a
      noise-only step. Its per-process masks also came from each process's global RNG, which
      seeding makes identical across processes (coupled inclusions).
    * With ``max_physical_batch_size`` m (virtual batches), each logical batch is split into
      ``ceil(max over processes of the local size / m)`` physical batches on every process
      (empty ones where a process has fewer samples), so DDP's per-backward all-reduces pair
      up; ``optimizer`` is told to skip its step on all but the last, as Opacus's
      ``BatchSplittingSampler`` does in one process.

    No ``__len__``: with virtual batches the number of batches varies, and Lightning then runs
    the loader to its end. ``set_epoch`` (called by Lightning) makes a resumed run draw what the
    uninterrupted one drew.
    """

    def __init__(
        self,
        *,
        total_size: int,
        sample_rate: float,
        rank: int,
        world: int,
        seed: int = 0,
        max_physical_batch_size: int | None = None,
        optimizer: DPOptimizer | None = None,
    ):
        if max_physical_batch_size and optimizer is None:
            raise ValueError("virtual batches need the DP optimizer (to signal skipped steps).")
        self.total_size, self.sample_rate = total_size, sample_rate
        self.rank, self.world, self.seed = rank, world, seed
        self.max_physical = max_physical_batch_size or None
        self.optimizer = optimizer
        self.num_batches = int(1 / sample_rate)
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self):
        g = torch.Generator()
        g.manual_seed(self.seed * 1_000_003 + self.epoch)
        self.epoch += 1  # the next pass draws anew even if nobody calls set_epoch
        perm = torch.randperm(self.total_size, generator=g)
        owner = torch.arange(self.total_size) % self.world  # position -> process
        for _ in range(self.num_batches):
            mask = torch.rand(self.total_size, generator=g) < self.sample_rate
            mine = perm[mask & (owner == self.rank)].tolist()
            if not self.max_physical:
                yield mine
                continue
            largest = int(torch.bincount(owner[mask], minlength=self.world).max())
            parts = max(1, math.ceil(largest / self.max_physical))
            for k in range(parts):
                self.optimizer.signal_skip_step(do_skip=k < parts - 1)
                yield mine[k * self.max_physical : (k + 1) * self.max_physical]


class UnsizedBatches:
    """A batch sampler without ``__len__`` (see :func:`poisson_loader`)."""

    def __init__(self, batches):
        self.batches = batches

    def __iter__(self):
        return iter(self.batches)


def poisson_loader(
    loader: DataLoader, cfg: DPConfig, optimizer: DPOptimizer, world_size: int = 1
) -> DataLoader:
    """``loader`` rebuilt for DP-SGD: Poisson batches (rate 1 / ``len(loader)``) when
    ``cfg.poisson_sampling``, over all ``world_size`` processes, then split into physical batches
    of at most ``cfg.max_physical_batch_size`` (``optimizer`` is told which steps to skip)."""
    if cfg.poisson_sampling:
        dpl = DPDataLoader.from_data_loader(loader, distributed=world_size > 1)
        if getattr(loader.collate_fn, "handles_empty_batches", False):
            dpl.collate_fn = loader.collate_fn  # e.g. detection lists: [] stays []
        if world_size > 1:
            return _even_distributed_loader(dpl, loader, cfg, optimizer, world_size)
        loader = dpl
    elif world_size > 1:
        raise ValueError("dp.poisson_sampling=false is supported in one process only.")
    if cfg.max_physical_batch_size:
        split = wrap_data_loader(
            data_loader=loader,
            max_batch_size=cfg.max_physical_batch_size,
            optimizer=optimizer,
        )
        # the number of physical batches varies with the Poisson draws, but the splitter
        # reports an expected length, and Lightning stops an epoch after len(loader) batches:
        # the epoch's last logical batches (or the rest of one, leaving a half-accumulated
        # step for the next epoch) were dropped. Without a length, Lightning runs the loader
        # to its end.
        loader = DataLoader(
            split.dataset,
            batch_sampler=UnsizedBatches(split.batch_sampler),
            collate_fn=split.collate_fn,
            num_workers=split.num_workers,
            pin_memory=split.pin_memory,
            worker_init_fn=split.worker_init_fn,
            persistent_workers=split.persistent_workers,
        )
    return loader


def _even_distributed_loader(
    dpl: DPDataLoader, loader: DataLoader, cfg: DPConfig, optimizer: DPOptimizer, world_size: int
) -> DataLoader:
    """Every process yields every Poisson batch (empty ones too) and, with virtual batches, the
    same number of physical batches (:class:`EvenDistributedPoissonSampler`)."""
    sampler = EvenDistributedPoissonSampler(
        total_size=len(dpl.dataset),
        sample_rate=dpl.sample_rate,
        rank=torch.distributed.get_rank(),
        world=world_size,
        seed=int(os.environ.get("PL_GLOBAL_SEED", 0)),
        max_physical_batch_size=cfg.max_physical_batch_size,
        optimizer=optimizer,
    )
    return DataLoader(
        dpl.dataset,
        batch_sampler=sampler,
        collate_fn=dpl.collate_fn,
        num_workers=loader.num_workers,
        pin_memory=loader.pin_memory,
        worker_init_fn=loader.worker_init_fn,
        persistent_workers=loader.persistent_workers,
    )
