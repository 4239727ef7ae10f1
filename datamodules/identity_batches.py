"""Training batches that hold several photos of each individual, from different encounters.

Metric-learning losses (ArcFace and the like) learn most from batches with a few photos of each
of several individuals. :class:`IndividualEncounterSampler` yields training rows in runs of ``m``
photos of one individual; the ``m`` are taken round-robin over the individual's encounters (the
manifest's ``group``), so they come from ``m`` different encounters where the individual has
that many, and repeat photos only when it has fewer than ``m``. With a batch size that is a
multiple of ``m``, every batch holds ``batch_size / m`` individuals.

Why not pytorch-metric-learning's ``MPerClassSampler`` (checked against 2.9): it sees labels
only, so its ``m`` photos of an individual are a uniform draw from all of its photos and often
come from one encounter (near-duplicate frames) although the individual has others; and its
epoch is ``length_before_new_iter`` indices (100000 by default), not one pass over the training
rows. (Both draw from a global generator that ``seed_everything`` seeds: no difference there.)
``tests/test_individual_sampler.py`` shows the encounter difference.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterator

import numpy as np
import torch
from torch.utils.data import Sampler


class IndividualEncounterSampler(Sampler[int]):
    """Indices into ``rows`` in runs of ``m`` photos per individual, encounters spread.

    Args:
        rows: manifest rows (``identity``; ``group`` = encounter, ``""`` makes each photo its own).
        m: photos per individual in a run.
        seed: None draws each epoch's order from torch's global generator (seeded by
            ``seed_everything``); an int fixes it (tests).

    One epoch has ``len(rows)`` indices (rounded down to a multiple of ``m``, at least ``m``).
    """

    def __init__(self, rows: list[dict], m: int = 4, seed: int | None = None):
        if m < 1:
            raise ValueError(f"data.loader.m_per_individual={m}: give 1 or more.")
        self.m, self.seed = int(m), seed
        enc: dict[str, dict[str, list[int]]] = defaultdict(lambda: defaultdict(list))
        for i, r in enumerate(rows):
            enc[r["identity"]][r.get("group") or f"#{i}"].append(i)
        self.encounters = {k: [v[g] for g in sorted(v)] for k, v in sorted(enc.items())}
        self.n_runs = max(1, len(rows) // self.m)

    def __len__(self) -> int:
        return self.n_runs * self.m

    def _rng(self) -> np.random.Generator:
        if self.seed is not None:
            return np.random.default_rng(self.seed)
        return np.random.default_rng(int(torch.randint(0, 2**31 - 1, (1,)).item()))

    def run(self, identity: str, rng: np.random.Generator) -> list[int]:
        """``m`` row indices of ``identity``: one photo from each encounter in a shuffled order,
        cycling (with fresh photo choices) when it has fewer than ``m`` encounters."""
        groups = self.encounters[identity]
        order = rng.permutation(len(groups))
        out = []
        for k in range(self.m):
            photos = groups[order[k % len(groups)]]
            out.append(int(photos[rng.integers(len(photos))]))
        return out

    def __iter__(self) -> Iterator[int]:
        rng = self._rng()
        names = list(self.encounters)
        emitted = 0
        while emitted < self.n_runs:
            for k in rng.permutation(len(names)):
                if emitted == self.n_runs:
                    break
                yield from self.run(names[k], rng)
                emitted += 1
