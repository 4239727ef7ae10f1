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
    """

    rows: list[str] | None = None
    xgb: dict = field(default_factory=dict)
    canvas: dict = field(default_factory=dict)
    shadow_config: str | None = None
    shadow_args: list[str] = field(default_factory=list)
    transfer: dict[str, list[TransferEntry]] = field(default_factory=dict)
    transfer_row: str = "alexnet_aug_u_sr"

    def __post_init__(self) -> None:
        unknown = [r for r in (self.rows or []) + [self.transfer_row] if r not in TABLE1]
        if unknown:
            raise ValueError(f"audit.rows {unknown}: choose from {list(TABLE1)}.")
        self.rows = list(self.rows or TABLE1)
