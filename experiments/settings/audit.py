"""Settings of the detector audit (``cli.py audit``): the ``audit:`` section of a detection
config, validated by jsonargparse like every other section."""

from __future__ import annotations

from dataclasses import dataclass, field

#: Table 1 rows: name -> (attack model, Aug, box style, SR); "xgb" is the XGBoost row.
TABLE1 = {
    "xgb": ("XGB", False, None, False),
    "shallow_o": ("shallow", False, "original", False),
    "alexnet_o": ("AlexNet", False, "original", False),
    "alexnet_aug_o": ("AlexNet", True, "original", False),
    "alexnet_aug_o_sr": ("AlexNet", True, "original", True),
    "alexnet_aug_u": ("AlexNet", True, "uniform", False),
    "alexnet_aug_u_sr": ("AlexNet", True, "uniform", True),
}


@dataclass
class TransferEntry:
    """One model of a transfer grid.

    Args:
        name: row/column label.
        config: detection config (a name in configs/ or a path).
        args: extra LightningCLI arguments for this entry.
    """

    name: str
    config: str
    args: list[str] = field(default_factory=list)


@dataclass
class DetCalibratedSettings:
    """The calibrated attacks of the detector audit (LiRA offline/online, RMIA), see
    ``docs/calibrated_attacks.md`` ("Detectors").

    Args:
        enabled: run them. The shadow detector is always one OUT reference (it never saw a target
            image); ``n_references`` more are trained.
        n_references: extra reference detectors, trained by the target's own config on halves of
            the target's in and out images (complementary pairs: with an even number every image
            is IN for exactly half of them). 0: offline LiRA and RMIA with the shadow alone.
        seed: seed of the halves.
        iou: IoU a predicted box needs to count for a ground-truth object.
        variance: LiRA's Gaussian spread: ``auto``, ``global`` (pooled) or ``per_example``.
        a: RMIA's offline correction parameter.
        gamma: RMIA's pairwise likelihood-ratio threshold.
    """

    enabled: bool = False
    n_references: int = 2
    seed: int = 0
    iou: float = 0.5
    variance: str = "auto"
    a: float = 0.3
    gamma: float = 1.0

    def __post_init__(self) -> None:
        if self.n_references < 0:
            raise ValueError(f"audit.calibrated.n_references={self.n_references}: give >= 0.")
        if self.variance not in ("auto", "global", "per_example"):
            raise ValueError(
                f"audit.calibrated.variance={self.variance!r}: auto|global|per_example"
            )


@dataclass
class AuditSettings:
    """What ``cli.py audit`` runs.

    Args:
        rows: Table 1 rows to run (keys of ``TABLE1``; None: all seven).
        xgb: extra ``det_xgb`` attack arguments (``max_depth``, ``n_estimators``, ...).
        canvas: extra ``det_canvas`` arguments shared by the CNN rows (``canvas_size``,
            ``epochs``, ``lr``, ``batch_size``, ...).
        shadow_config: config of the shadow model (None: the target's own); another
            architecture or dataset gives a transfer attack.
        shadow_args: extra LightningCLI arguments for the shadow fit only.
        transfer: Table 3 grids, ``{grid name: [entries]}``: every entry is trained as target and
            as shadow, and the ``transfer_row`` attack trained on each shadow is evaluated on each
            target.
        transfer_row: the attack row used for the grids (paper: the best row of Table 1).
        calibrated: LiRA and RMIA with reference detectors (:class:`DetCalibratedSettings`).
        n_boot: bootstrap replicates of every row's confidence intervals (resampled by image).
    """

    rows: list[str] | None = None
    xgb: dict = field(default_factory=dict)
    canvas: dict = field(default_factory=dict)
    shadow_config: str | None = None
    shadow_args: list[str] = field(default_factory=list)
    transfer: dict[str, list[TransferEntry]] = field(default_factory=dict)
    transfer_row: str = "alexnet_aug_u_sr"
    calibrated: DetCalibratedSettings = field(default_factory=DetCalibratedSettings)
    n_boot: int = 1000

    def __post_init__(self) -> None:
        unknown = [r for r in (self.rows or []) + [self.transfer_row] if r not in TABLE1]
        if unknown:
            raise ValueError(f"audit.rows {unknown}: choose from {list(TABLE1)}.")
        self.rows = list(self.rows or TABLE1)
