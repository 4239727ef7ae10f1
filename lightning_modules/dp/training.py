"""DP-SGD training (Opacus) for the suite's LightningModules, through Opacus's public API only.

One :class:`~lightning_modules.dp.config.DPConfig` (``model.init_args.dp``) and one helper,
:class:`DPTraining`, that a LightningModule owns and calls from six of its own hooks:

=========================  =====================================================================
``__init__``               :meth:`DPTraining.prepare_module`: ``ModuleValidator.fix`` (BatchNorm
                           -> GroupNorm, each replacement logged), ``ModuleValidator.validate``,
                           then :class:`opacus.GradSampleModule` (per-sample gradients by hooks)
``setup("fit")``           :meth:`DPTraining.attach`: the datamodule's ``train_dataloader`` is
                           wrapped so that the loader Lightning asks for is the Poisson loader of
                           :func:`~lightning_modules.dp.sampling.poisson_loader`
``configure_optimizers``   :meth:`DPTraining.make_optimizer`: the module's optimizer wrapped in a
                           :class:`opacus.optimizers.DPOptimizer` (``DistributedDPOptimizer``
                           when ``trainer.world_size > 1``); the
                           :class:`~lightning_modules.dp.accounting.PrivacyAccountant` hooked to
                           its steps
``backward``               :meth:`DPTraining.ghost_backward` in ``ghost`` mode (the default): the
                           per-sample losses the training step handed to
                           :meth:`DPTraining.per_sample_loss` go through Opacus's two-pass fast
                           gradient clipping; in ``hooks`` mode Lightning's own backward
``on_train_epoch_end``     :meth:`DPTraining.log_epsilon`: ``dp/epsilon`` (and ``dp/epsilon_rdp``,
                           ``dp/epsilon_yu``, ``dp/noise_multiplier``, ``dp/steps``)
``on_save/load_checkpoint`` accountant history in the checkpoint under ``"dp_accountant"``, so a
                           resumed run continues epsilon instead of restarting it
=========================  =====================================================================

No trainer internals are touched: the helper only uses ``trainer.datamodule``,
``trainer.world_size``, ``trainer.max_epochs`` and ``trainer.current_epoch``.

DDP: Lightning wraps the LightningModule in torch DDP; the clipped, noised gradient is written by
Opacus's ``DistributedDPOptimizer`` (noise on rank 0 only, then an all-reduce and the mean), which
overwrites the gradients DDP has averaged. Every rank Poisson-samples its shard of the training set
with the same rate q, so the accountant sees the same (sigma, q, steps) as a single process. The
DP loader carries its own distributed sampler, so DDP fits need
``trainer.use_distributed_sampler: false``.

Accounting (epsilon, the Yu et al. bound) is :mod:`lightning_modules.dp.accounting`.
"""

from __future__ import annotations

import functools
import math
import warnings

import torch
from opacus import GradSampleModule
from opacus.accountants.utils import get_noise_multiplier
from opacus.grad_sample import GradSampleModuleFastGradientClipping
from opacus.grad_sample.gsm_base import AbstractGradSampleModule
from opacus.optimizers import (
    DistributedDPOptimizer,
    DPOptimizer,
    DPOptimizerFastGradientClipping,
)
from opacus.utils.fast_gradient_clipping_utils import DPTensorFastGradientClipping
from opacus.validators import ModuleValidator
from pytorch_lightning.utilities import rank_zero_info
from torch import nn

from lightning_modules.components import ghost_clipping  # noqa: F401 - registers the Conv2d rule
from lightning_modules.dp.accounting import PrivacyAccountant
from lightning_modules.dp.config import DPConfig
from lightning_modules.dp.sampling import poisson_loader

# torch warns on every step that the first layer's backward hook fires although the images need no
# gradient; that is how Opacus's hooks are meant to work, so the message is only noise here
warnings.filterwarnings(
    "ignore", message="Full backward hook is firing when gradients are computed"
)

CKPT_KEY = "dp_accountant"


class CloneIdentity(nn.Module):
    """Identity that returns a copy, so later in-place ops never touch a hooked output."""

    def forward(self, x):
        return x.clone()


def fix_module(net: nn.Module, owner: str = "model") -> tuple[nn.Module, list[str]]:
    """``ModuleValidator.fix`` (BatchNorm -> GroupNorm) with each replacement logged.

    Returns the fixed module and the replaced modules as ``"name: Old -> New"`` strings.
    """
    before = {name: type(m).__name__ for name, m in net.named_modules()}
    fixed = ModuleValidator.fix(net)
    after = {name: type(m).__name__ for name, m in fixed.named_modules()}
    replaced = [
        f"{n}: {before[n]} -> {after[n]}"
        for n in before
        if n in after and before[n] != after[n] and "Norm" in before[n]
    ]
    if replaced:
        rank_zero_info(
            f"DP ({owner}): ModuleValidator.fix replaced {len(replaced)} normalisation layers "
            f"(BatchNorm mixes samples; GroupNorm does not): " + "; ".join(replaced)
        )
    for entry in replaced:  # the new norm's output feeds in-place adds (ResNet's ``out +=
        name = entry.split(":", 1)[0]  # identity``), forbidden on a hooked output: clone it
        parent = fixed.get_submodule(name.rsplit(".", 1)[0]) if "." in name else fixed
        child = name.rsplit(".", 1)[-1]
        setattr(parent, child, nn.Sequential(getattr(parent, child), CloneIdentity()))
    n_ident = 0
    for name, m in list(fixed.named_modules()):
        # Identity returns the hooked output of the layer before it as-is; blocks that then add in
        # place (ResNet's ``out += identity`` once BatchNorm is stripped) would break autograd
        if type(m) is nn.Identity and name:
            parent = fixed.get_submodule(name.rsplit(".", 1)[0]) if "." in name else fixed
            setattr(parent, name.rsplit(".", 1)[-1], CloneIdentity())
            n_ident += 1
    if n_ident:
        rank_zero_info(f"DP ({owner}): {n_ident} Identity layers replaced by CloneIdentity.")
    n_inplace = 0
    for m in fixed.modules():  # in-place ops on the outputs of Opacus's backward hooks are
        if getattr(m, "inplace", False) is True:  # forbidden by autograd (e.g. conv -> ReLU_)
            m.inplace = False
            n_inplace += 1
    if n_inplace:
        rank_zero_info(f"DP ({owner}): {n_inplace} in-place activations set to inplace=False.")
    errors = ModuleValidator.validate(fixed, strict=False)
    if errors:
        raise ValueError(f"DP ({owner}): Opacus cannot train this model: {errors}")
    return fixed, replaced


class DPTraining:
    """DP-SGD state of one LightningModule (see the module docstring for the hook wiring)."""

    def __init__(self, cfg: DPConfig, owner: str = "model"):
        self.cfg = cfg
        self.owner = owner
        self.accounting = PrivacyAccountant(cfg.accountant)
        self.noise_multiplier: float | None = cfg.noise_multiplier
        self.sample_rate: float | None = None
        self.optimizer: DPOptimizer | None = None
        self.module: AbstractGradSampleModule | None = None
        self.ghost = cfg.grad_sample_mode == "ghost"
        self.replaced: list[str] = []
        self._losses: torch.Tensor | None = None
        self._orig_loader_fn = None

    # ---- model ---------------------------------------------------------------------------
    def prepare_module(self, net: nn.Module) -> AbstractGradSampleModule:
        """Fix ``net`` for DP and wrap it for per-sample norms (ghost) or gradients (hooks)."""
        fixed, self.replaced = fix_module(net, self.owner)
        if self.ghost:
            self.module = GradSampleModuleFastGradientClipping(
                fixed, loss_reduction="mean", max_grad_norm=self.cfg.max_grad_norm
            )
        else:
            self.module = GradSampleModule(fixed, loss_reduction="mean")
        return self.module

    def module_for(self, world_size: int) -> AbstractGradSampleModule:
        """The wrapped module to train with ``world_size`` processes: ghost clipping falls back
        to per-sample gradients by hooks under DDP (same parameters, same state-dict keys)."""
        if self.ghost and world_size > 1:
            rank_zero_info(
                f"DP ({self.owner}): {world_size} processes: dp.grad_sample_mode 'ghost' -> "
                "'hooks' (ghost clipping's two backward passes would each all-reduce under DDP)."
            )
            inner = self.module._module
            self.module._close()
            self.module = GradSampleModule(inner, loss_reduction="mean")
            self.ghost = False
        return self.module

    def per_sample_loss(self, losses: torch.Tensor) -> torch.Tensor:
        """Keep the (B,) per-sample losses for :meth:`backward`; returns their mean (a scalar
        for logging and for Lightning's closure)."""
        self._losses = losses
        return per_sample_loss_mean(losses)

    def ghost_backward(self) -> None:
        """Ghost clipping's two backward passes over the per-sample losses last given to
        :meth:`per_sample_loss` (norms, then the loss reweighted by the clipping factors)."""
        if self._losses is None:
            raise RuntimeError("DP ghost clipping: the training step gave no per-sample losses.")
        losses, self._losses = self._losses, None
        DPTensorFastGradientClipping(self.module, self.optimizer, losses, "mean").backward()

    # ---- data ----------------------------------------------------------------------------
    def attach(self, trainer) -> None:
        """Wrap ``trainer.datamodule.train_dataloader`` with the DP loader (once)."""
        dm = trainer.datamodule
        if dm is None:
            raise ValueError(
                f"DP ({self.owner}): needs a datamodule (trainer.fit(model, datamodule=...)); the "
                "training loader is rebuilt with Poisson sampling from it."
            )
        if getattr(dm.train_dataloader, "_dp_wrapped", False):
            self._orig_loader_fn = dm.train_dataloader._dp_original
            return
        orig = dm.train_dataloader
        self._orig_loader_fn = orig

        @functools.wraps(orig)
        def train_dataloader():
            return self.dp_loader(orig(), trainer.world_size)

        train_dataloader._dp_wrapped = True
        train_dataloader._dp_original = orig
        dm.train_dataloader = train_dataloader

    def dp_loader(self, loader, world_size: int = 1):
        """``loader`` as the DP training loader (:func:`~lightning_modules.dp.sampling.
        poisson_loader`); the optimizer must exist (virtual batches signal its skipped steps)."""
        if self.optimizer is None:
            raise RuntimeError("DP: the optimizer must exist before the training loader.")
        return poisson_loader(loader, self.cfg, self.optimizer, world_size)

    # ---- optimizer -----------------------------------------------------------------------
    def make_optimizer(self, optimizer: torch.optim.Optimizer, trainer) -> DPOptimizer:
        if self._orig_loader_fn is None:
            self.attach(trainer)
        base = self._orig_loader_fn()
        n_batches = len(base)
        n = len(base.dataset)
        world = max(1, int(trainer.world_size))
        self.sample_rate = 1.0 / n_batches
        expected = n * self.sample_rate / world  # per process, as PrivacyEngine.make_private
        if self.cfg.noise_multiplier is None:
            epochs = self.cfg.epochs or trainer.max_epochs
            if not epochs or epochs < 0:
                raise ValueError("dp.target_epsilon needs dp.epochs or trainer.max_epochs.")
            self.noise_multiplier = get_noise_multiplier(
                target_epsilon=self.cfg.target_epsilon,
                target_delta=self.cfg.delta,
                sample_rate=self.sample_rate,
                epochs=epochs,
                accountant=self.cfg.accountant,
            )
        generator = None
        if self.cfg.secure_mode:
            from opacus import PrivacyEngine

            generator = PrivacyEngine(secure_mode=True).secure_rng
        if self.ghost:
            cls = DPOptimizerFastGradientClipping
        else:
            cls = DistributedDPOptimizer if world > 1 else DPOptimizer
        opt = cls(
            optimizer,
            noise_multiplier=self.noise_multiplier,
            max_grad_norm=self.cfg.max_grad_norm,
            expected_batch_size=expected,
            loss_reduction="mean",
            generator=generator,
            secure_mode=self.cfg.secure_mode,
        )
        self.accounting.attach(opt, self.sample_rate)
        self.optimizer = opt
        rank_zero_info(
            f"DP ({self.owner}): sigma={self.noise_multiplier:.4g} C={self.cfg.max_grad_norm} "
            f"q={self.sample_rate:.4g} (N={n}, {n_batches} steps/epoch) delta={self.cfg.delta} "
            f"accountant={self.cfg.accountant} poisson={self.cfg.poisson_sampling} "
            f"processes={world} clipping={'ghost' if self.ghost else 'hooks'}"
        )
        return opt

    # ---- accounting ----------------------------------------------------------------------
    @property
    def steps(self) -> int:
        return self.accounting.steps

    def epsilon(self, epochs_done: int | None = None) -> dict[str, float]:
        """``epsilon`` (chosen accountant), ``epsilon_rdp``, ``epsilon_yu`` (if epochs given)."""
        return self.accounting.epsilon(
            self.cfg.delta, self.noise_multiplier, self.sample_rate, epochs_done
        )

    def log_epsilon(self, module) -> dict[str, float]:
        eps = self.epsilon(module.current_epoch + 1)
        for key, value in eps.items():
            if math.isfinite(value):
                module.log(
                    f"dp/{key}", float(value), on_step=False, on_epoch=True, rank_zero_only=True
                )
        module.log(
            "dp/noise_multiplier",
            float(self.noise_multiplier or 0.0),
            on_step=False,
            on_epoch=True,
            rank_zero_only=True,
        )
        module.log("dp/steps", float(self.steps), on_step=False, on_epoch=True, rank_zero_only=True)
        rank_zero_info(
            f"DP epoch {module.current_epoch}: epsilon={eps['epsilon']:.4g} "
            f"(delta={self.cfg.delta}, {self.steps} steps)"
        )
        return eps

    def state_dict(self) -> dict:
        return {
            **self.accounting.state_dict(),
            "noise_multiplier": self.noise_multiplier,
            "sample_rate": self.sample_rate,
        }

    def load_state_dict(self, state: dict) -> None:
        self.accounting.load_state_dict(state)
        rank_zero_info(f"DP: accountant restored from the checkpoint ({self.steps} steps).")


def unwrap(net: nn.Module) -> nn.Module:
    """The module inside an Opacus wrapper (which forwards calls, not attributes), else ``net``."""
    return net._module if isinstance(net, AbstractGradSampleModule) else net


def per_sample_loss_mean(losses: torch.Tensor) -> torch.Tensor:
    """Mean of per-sample losses that is also well defined on an empty Poisson batch."""
    if losses.numel() == 0:
        return losses.sum()
    return losses.mean()


class DPHooks:
    """LightningModule mixin for modules with a ``dp`` attribute (``DPTraining`` or None).

    Attaches DP-SGD when fitting starts, logs epsilon after every training epoch, and keeps the
    accountant's history in checkpoints so a resumed run continues it. With ``dp=None`` every
    hook does nothing.
    """

    dp: DPTraining | None
    net: nn.Module

    def setup(self, stage: str) -> None:
        if self.dp is not None and stage == "fit":
            self.dp.attach(self.trainer)
            self.net = self.dp.module_for(self.trainer.world_size)

    def backward(self, loss: torch.Tensor, *args, **kwargs) -> None:
        if self.dp is not None and self.dp.ghost:
            self.dp.ghost_backward()
        else:
            super().backward(loss, *args, **kwargs)

    def on_train_epoch_end(self) -> None:
        if self.dp is not None:
            self.dp.log_epsilon(self)

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        if self.dp is not None:
            checkpoint[CKPT_KEY] = self.dp.state_dict()

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        if self.dp is not None and CKPT_KEY in checkpoint:
            self.dp.load_state_dict(checkpoint[CKPT_KEY])
