"""DP-SGD settings: :class:`DPConfig` (a ``model.init_args.dp`` block in a config)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class DPConfig:
    """DP-SGD settings (``model.init_args.dp``).

    Attributes:
        noise_multiplier: sigma (noise std / clipping bound). Give this or ``target_epsilon``.
        target_epsilon: aim for this epsilon after ``epochs`` epochs at ``delta`` (sigma is solved
            with Opacus's ``get_noise_multiplier`` for the chosen accountant).
        epochs: epochs the target epsilon is spent over (None: ``trainer.max_epochs``).
        max_grad_norm: per-sample clipping bound C.
        delta: the delta of (epsilon, delta)-DP.
        poisson_sampling: Poisson-sample each batch (rate q = 1 / len(train loader)); the
            accountants assume it. ``False`` keeps the datamodule's shuffled fixed-size batches
            (single process only; epsilon is then the Poisson figure, an approximation).
        max_physical_batch_size: split logical batches into physical ones of at most this size
            (virtual batches, Opacus's ``BatchMemoryManager``); None or 0: no split. Under DDP
            every process splits into the same number of physical batches
            (:class:`~lightning_modules.dp.sampling.EvenDistributedPoissonSampler`).
        accountant: ``rdp`` (default) or ``prv``.
        secure_mode: Opacus secure RNG for the noise (needs ``torchcsprng``).
        grad_sample_mode: how per-sample gradients are clipped. ``ghost`` (default): Opacus's
            fast gradient clipping: a first backward pass computes only each sample's gradient
            norm (Linear, Embedding and, through :mod:`~lightning_modules.components.
            ghost_clipping`, Conv2d without materialising per-sample gradients), a second
            backward pass of the loss reweighted by the clipping factors gives the clipped sum.
            ``hooks``: per-sample gradients stored for every parameter, then clipped (Opacus's
            classic ``GradSampleModule``; more memory, slower). Both are exact. Under DDP the
            ``hooks`` mode is used (the two backward passes of ``ghost`` would each trigger
            DDP's gradient all-reduce); the switch is logged.
    """

    noise_multiplier: float | None = None
    target_epsilon: float | None = None
    epochs: int | None = None
    max_grad_norm: float = 1.0
    delta: float = 1e-5
    poisson_sampling: bool = True
    max_physical_batch_size: int | None = None
    accountant: str = "rdp"
    secure_mode: bool = False
    grad_sample_mode: str = "ghost"

    def __post_init__(self) -> None:
        if self.grad_sample_mode not in ("ghost", "hooks"):
            raise ValueError(
                f"dp.grad_sample_mode={self.grad_sample_mode!r}: choose 'ghost' or 'hooks'."
            )
        if (self.noise_multiplier is None) == (self.target_epsilon is None):
            raise ValueError("dp: give exactly one of noise_multiplier and target_epsilon.")
        if self.noise_multiplier is not None and self.noise_multiplier < 0:
            raise ValueError("dp.noise_multiplier must be >= 0.")
        if self.max_grad_norm <= 0:
            raise ValueError("dp.max_grad_norm (C) must be > 0.")
        if not 0 < self.delta < 1:
            raise ValueError("dp.delta must be in (0, 1).")
        if self.accountant not in ("rdp", "prv"):
            raise ValueError(f"dp.accountant={self.accountant!r}: choose 'rdp' or 'prv'.")
        if self.max_physical_batch_size is not None and self.max_physical_batch_size < 0:
            raise ValueError("dp.max_physical_batch_size must be >= 0 (0 or null: no split).")


def as_config(dp) -> DPConfig | None:
    """Accept a :class:`DPConfig`, a dict of its fields, or None."""
    if dp is None or isinstance(dp, DPConfig):
        return dp
    return DPConfig(**dict(dp))
