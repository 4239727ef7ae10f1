"""``python cli.py attack --run <run folder> [--config attack.yaml]``: every attack on a finished
run, each into ``<run>/attacks/<name>/``, a summary in ``<run>/attacks/report.md``.

Steps: (1) rebuild the target from ``checkpoints/last.ckpt`` (``weights_only=True``) and write
``<run>/signals/final.npz`` (all manifest rows, with penultimate embeddings); (2) for each enabled
attack of the settings, in :data:`STEPS` order, gather its fit and evaluation signals (the
target's attack set, a shadow's, or boundary distances from model queries), fit it, freeze its
threshold and score the evaluation set (ID1-test + ID3); (3) the ensemble trains one target per
subset; (4) the reports; figures and final numbers (``log_hyperparams``) to the run's loggers.

``torchrun --nproc_per_node N cli.py attack ...`` shards step (1) over N processes (rank 0 writes
the file), then rank 0 alone runs the rest.
"""

from __future__ import annotations

from experiments.attack_steps import pipeline


def parser():
    """The ``cli.py attack`` argument parser."""
    return pipeline.parser(__doc__)


def main(argv: list[str]) -> dict:
    """Entry point of ``python cli.py attack``."""
    return pipeline.attack_main(argv, __doc__)
