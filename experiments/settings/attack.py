"""Settings of ``cli.py attack`` (the YAML files ``configs/attack*.yaml``), validated by
jsonargparse. Each block switches one attack on or off and holds its arguments: the block of a
registered attack is the dataclass it declares (:func:`attacks.registry.register`, key = its
name, ``--yeom.enabled``); ``ensemble``, ``calibrated`` and ``reference`` drive the steps of
:mod:`experiments.attack_steps` that train or embed models.

Names with a fixed set of values (a signal, a rule, a level) and numbers with a range (seeds,
bootstrap replicates) are checked when :class:`AttackSettings` is built (:func:`check_settings`),
so a bad one is one line naming the key before any model is loaded. (They are ``str`` rather
than ``typing.Literal`` because ``cli.py attack``'s parser prints a Literal mismatch as a
multi-line usage message.)
"""

from __future__ import annotations

from dataclasses import dataclass, field, make_dataclass

# the registered attacks' blocks live next to their classes; imported here as before
from attacks.label_only import LabelOnlySettings  # noqa: F401
from attacks.salem import SalemSettings, ShadowSettings  # noqa: F401
from attacks.yeom import YeomSettings  # noqa: F401

#: the loss fields Yeom's threshold can read (``attacks.yeom``)
YEOM_SIGNALS = ("loss_pred", "loss_true")
SALEM_THRESHOLDS = ("argmax", "fit")
LABEL_ONLY_METHODS = ("ours", "art")
CALIBRATED_LEVELS = ("identity", "sample")
LIRA_VARIANCES = ("auto", "global", "per_example")
#: numpy's seed range (``np.random.seed``; torch and ``default_rng`` accept it too)
SEED_RANGE = (0, 2**32 - 1)
#: bootstrap replicates of a confidence interval (as ``cli.py discriminate --n_boot``)
N_BOOT_RANGE = (10, 100_000)


@dataclass
class EnsembleSettings:
    """Ensemble MIA over disjoint subsets of the known individuals.

    Args:
        enabled: run the ensemble.
        n_subsets: targets over disjoint ID1 subsets (clipped to two individuals per subset).
        max_subsets: train only the first this many subsets.
        rules: combination rules (``any``, ``majority``, ``mean_score``).
        base: the per-subset signal attack (a registry name).
        epochs: epochs per subset target (None: the run's own).
        match_steps: scale the epochs so each subset's target gets as many steps as the run's.
        batch_size: subset training batch size (None: the run's own).
        seed: subset and training seed.
        subsets: train only these subset indices' targets, save their signals and stop (one task
            of a job array: ``[$SLURM_ARRAY_TASK_ID]``).
        reuse: load saved subset signals instead of retraining (the job after the array).
    """

    enabled: bool = True
    n_subsets: int = 2
    max_subsets: int | None = None
    rules: list[str] = field(default_factory=lambda: ["any", "majority", "mean_score"])
    base: str = "yeom"
    epochs: int | None = None
    match_steps: bool = True
    batch_size: int | None = None
    seed: int = 0
    subsets: list[int] | None = None
    reuse: bool = False


@dataclass
class CalibratedSettings:
    """LiRA and RMIA with reference models (``docs/calibrated_attacks.md``).

    Args:
        enabled: train (or load) the references and run the calibrated attacks.
        levels: ``sample`` (training photos vs held-out photos of the same individuals) and/or
            ``identity`` (known vs never-seen individuals; references from attack-side
            individuals only).
        n_models: reference models per level.
        arch: reference architecture (None: the target's).
        epochs: reference training epochs (None: the run's max_epochs).
        batch_size: reference training batch size.
        seed: seed of the random halves and of the training.
        flip: query a horizontally flipped view too.
        shift: also query views shifted by this many pixels in x and y (0: none).
        variance: LiRA's Gaussian spread: ``auto``, ``global`` (pooled) or ``per_example``.
        a: RMIA's offline correction parameter.
        gamma: RMIA's pairwise likelihood-ratio threshold.
        rmia_refs: run RMIA with the first k references for each k listed.
        compare: also run Yeom (true-label loss) and Salem at the sample level.
        index: train only these reference indices (of every level), save them and stop (one
            task of a job array: ``[$SLURM_ARRAY_TASK_ID]``).
        n_boot: bootstrap replicates of the confidence intervals (resampled by individual).
        top: rows of the most-exposed individuals and photos tables.
    """

    enabled: bool = False
    levels: list[str] = field(default_factory=lambda: ["identity", "sample"])
    n_models: int = 4
    arch: str | None = None
    epochs: int | None = None
    batch_size: int = 32
    seed: int = 0
    flip: bool = True
    shift: int = 2
    variance: str = "auto"
    a: float = 0.3
    gamma: float = 1.0
    rmia_refs: list[int] = field(default_factory=lambda: [1, 4])
    compare: bool = True
    index: list[int] | None = None
    n_boot: int = 1000
    top: int = 10


@dataclass
class ReferenceSettings:
    """Known/new score calibrated against reference whales (``docs/calibrated_attacks.md``).

    Args:
        enabled: embed the reference whales with the target and run ``reference_calibrated``.
        root: a Where's Whale-do catalog folder (``metadata.csv``) of reference whales: whales
            neither in the target's catalog nor queried.
        embedding_run: instead of ``root``, an embedding run folder: the rows of its
            ``population_manifest.csv`` with role ``reference``, under its data root.
        max_photos: embed at most this many reference photos (seeded subsample).
        statistic: how the best catalog similarity is judged against the references (one of
            ``attacks.reference_calibrated.STATISTICS``).
        seed: seed of the subsample.
    """

    enabled: bool = False
    root: str | None = None
    embedding_run: str | None = None
    max_photos: int = 2000
    statistic: str = "zscore"
    seed: int = 0

    def __post_init__(self) -> None:
        from attacks.reference_calibrated import STATISTICS
        from datamodules.errors import DataError

        if self.statistic not in STATISTICS:
            raise DataError(
                f"reference.statistic={self.statistic!r}: choose one of {', '.join(STATISTICS)}."
            )
        if self.max_photos < 1:
            raise DataError(f"reference.max_photos={self.max_photos}: give 1 or more.")
        if self.enabled and (self.root is None) == (self.embedding_run is None):
            got = "neither" if self.root is None else "both"
            raise DataError(
                "reference.enabled needs exactly one of reference.root (a catalog of reference "
                f"whales) and reference.embedding_run, got {got}; set one of them."
            )


#: ``AttackSettings``' docstring; ``{blocks}``: one line per registered attack's settings block
SETTINGS_DOC = """Every attack of ``cli.py attack``.

    Args:
{blocks}
        ensemble: ensemble MIA over subset targets.
        calibrated: LiRA and RMIA with reference models, at the sample and identity levels.
        reference: the known/new score calibrated against reference whales outside the catalog.
        reference_runs: reference folders (``<run>/references/<key>``) trained elsewhere to
            use instead of training references here.
        baselines: also score the open-set baselines (max softmax, nearest-neighbour cosine).
        balanced: evaluate on as many members as non-members (seeded subsample).
        seed: seed of the balancing and of the attack models.
        device: ``cpu``, ``cuda`` or None (CUDA when available).
        compare: other run folders whose ``summary.json`` joins the Figure-6 table.
        output: results folder inside the run. None: ``attacks``, or ``attacks-1``,
            ``attacks-2``, ... when it exists (nothing is overwritten). A named folder that exists
            is refused unless ``overwrite`` (ensemble job-array tasks and ``ensemble.reuse`` add
            to it by design).
        overwrite: let a named ``output`` that exists be written into.
        cached_signals: score ``signals/final.npz`` even when the checkpoint it came from is gone
            (otherwise such a run is refused; label-only always needs the checkpoint).
    """

#: the settings after the registered attacks' blocks: (key, type, default)
RUN_FIELDS = (
    ("ensemble", EnsembleSettings, field(default_factory=EnsembleSettings)),
    ("calibrated", CalibratedSettings, field(default_factory=CalibratedSettings)),
    ("reference", ReferenceSettings, field(default_factory=ReferenceSettings)),
    ("reference_runs", list[str], field(default_factory=list)),
    ("baselines", bool, True),
    ("balanced", bool, True),
    ("seed", int, 0),
    ("device", str | None, None),
    ("compare", list[str], field(default_factory=list)),
    ("output", str | None, None),
    ("overwrite", bool, False),
    ("cached_signals", bool, False),
)
_CLASSES: dict[tuple, type] = {}


def settings_class() -> type:
    """The ``AttackSettings`` dataclass of the attacks registered now: one block per attack
    with a settings block (:func:`attacks.registry.register`), keyed by its name, in registry
    order, then :data:`RUN_FIELDS`; built once per set of blocks. Its ``__post_init__`` runs
    :func:`check_settings`."""
    from attacks.registry import entries

    blocks = tuple((e.name, e.settings) for e in entries() if e.settings is not None)
    if blocks not in _CLASSES:
        lines = [f"        {key}: {block.__doc__.strip().splitlines()[0]}" for key, block in blocks]
        fields = [(key, block, field(default_factory=block)) for key, block in blocks]
        _CLASSES[blocks] = make_dataclass(
            "AttackSettings",
            fields + [(k, t, f) for k, t, f in RUN_FIELDS],
            namespace={
                "__doc__": SETTINGS_DOC.format(blocks="\n".join(lines)),
                "__post_init__": check_settings,
                "__module__": __name__,
            },
        )
    return _CLASSES[blocks]


def _choose(key: str, value, known) -> None:
    """DataError unless ``value`` (or each item of a list ``value``) is one of ``known``."""
    from datamodules.errors import DataError

    values = value if isinstance(value, list | tuple) else [value]
    bad = [v for v in values if v not in known]
    if bad:
        raise DataError(
            f"{key}={value!r}: unknown value {bad[0]!r}; choose from {', '.join(map(str, known))}."
        )


def _within(key: str, value, low: int, high: int) -> None:
    """DataError unless ``value`` is an integer in ``[low, high]``."""
    from datamodules.errors import DataError

    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise DataError(f"{key}={value!r}: give an integer from {low} to {high}.")


def check_settings(s) -> None:
    """Every named choice, seed and count of ``s``; DataError (one line naming the key and what
    it accepts) for the first bad one."""
    _choose("yeom.signal", s.yeom.signal, YEOM_SIGNALS)
    _choose("salem.threshold", s.salem.threshold, SALEM_THRESHOLDS)
    _choose("label_only.method", s.label_only.method, LABEL_ONLY_METHODS)
    _choose("calibrated.levels", list(s.calibrated.levels), CALIBRATED_LEVELS)
    _choose("calibrated.variance", s.calibrated.variance, LIRA_VARIANCES)
    from attacks.ensemble import RULES

    _choose("ensemble.rules", list(s.ensemble.rules), RULES)
    if s.ensemble.enabled and s.ensemble.base != "yeom":
        from attacks.registry import available

        _choose("ensemble.base", s.ensemble.base, available("classifier"))
    _within("calibrated.n_boot", s.calibrated.n_boot, *N_BOOT_RANGE)
    seeds = {
        "seed": s.seed,
        "salem.shadow.seed": s.salem.shadow.seed,
        "label_only.seed": s.label_only.seed,
        "ensemble.seed": s.ensemble.seed,
        "calibrated.seed": s.calibrated.seed,
        "reference.seed": s.reference.seed,
    }
    for key, value in seeds.items():
        _within(key, value, *SEED_RANGE)
    for key, value in (
        ("salem.topk", s.salem.topk),
        ("salem.epochs", s.salem.epochs),
        ("salem.shadow.epochs", s.salem.shadow.epochs),
        ("calibrated.n_models", s.calibrated.n_models),
    ):
        _within(key, value, 1, 10**9)
    _check_device(s.device)


def _check_device(device: str | None) -> None:
    """``device`` is None, ``cpu``, or ``cuda[:N]`` on a machine with that GPU."""
    from datamodules.errors import DataError

    if device is None or device == "cpu":
        return
    if not str(device).startswith("cuda"):
        raise DataError(f"device={device!r}: use cpu, cuda (or cuda:N), or leave it unset.")
    import torch

    index = str(device).partition(":")[2]
    count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if count == 0 or (index.isdigit() and int(index) >= count) or (index and not index.isdigit()):
        raise DataError(
            f"device={device!r}: this machine has {count} CUDA GPU(s) (no such device here); "
            "use cpu, or leave device unset (a GPU when there is one)."
        )


#: the settings of the attacks registered when this module is imported (an attack registered
#: later joins :func:`settings_class`, which ``cli.py attack`` parses with)
AttackSettings = settings_class()
