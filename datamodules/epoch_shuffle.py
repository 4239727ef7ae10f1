"""The training shuffle: a permutation per epoch from ``(seed, epoch)`` alone, that a resumed run
can enter in the middle of an epoch.

Lightning calls ``set_epoch`` at the start of every epoch. The permutation draws from a generator
of its own, never from torch's global one, so the order does not depend on how much randomness
the model, the monitor or an interruption consumed. ``skip_batches`` (set by the fit's resume
callback) says how many batches of the current epoch a resumed run already trained; those are
skipped, so the rest of the epoch sees exactly the batches an uninterrupted run would.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch.utils.data import Sampler


class EpochShuffle(Sampler[int]):
    """Indices ``0..n-1`` in the seeded order of the current epoch.

    Args:
        n: dataset length.
        seed: the run's seed.
        batch_size: the loader's batch size (to turn skipped batches into skipped indices).
        generator: the loader's generator, reseeded per epoch so worker seeds are per-epoch too.
    """

    def __init__(
        self, n: int, seed: int, batch_size: int, generator: torch.Generator | None = None
    ):
        self.n, self.seed, self.batch_size = n, seed, batch_size
        self.epoch = 0
        self.generator = generator
        #: batches of the next epoch's order already trained (a resume mid-epoch); used once
        self.skip_batches = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch
        if self.generator is not None:
            self.generator.manual_seed(self._key())

    def _key(self) -> int:
        return (self.seed * 1_000_003 + self.epoch) % (2**63)

    def order(self) -> list[int]:
        """The full permutation of the current epoch."""
        gen = torch.Generator().manual_seed(self._key())
        return torch.randperm(self.n, generator=gen).tolist()

    def __iter__(self) -> Iterator[int]:
        skip, self.skip_batches = self.skip_batches * self.batch_size, 0
        yield from self.order()[skip:]

    def __len__(self) -> int:
        return self.n
