"""DP-SGD (Opacus) for the suite's LightningModules, through Opacus's public API only.

One :class:`DPConfig` (a ``model.init_args.dp`` block in a config) and one helper,
:class:`DPTraining`, that a LightningModule owns and calls from six of its own hooks:

=========================  =====================================================================
``__init__``               :meth:`DPTraining.prepare_module`: ``ModuleValidator.fix`` (BatchNorm
                           -> GroupNorm, each replacement logged), ``ModuleValidator.validate``,
                           then :class:`opacus.GradSampleModule` (per-sample gradients by hooks)
``setup("fit")``           :meth:`DPTraining.attach`: the datamodule's ``train_dataloader`` is
                           wrapped so that the loader Lightning asks for is a Poisson
                           :class:`opacus.data_loader.DPDataLoader` (distributed under DDP), split
                           into physical batches by ``BatchMemoryManager``'s wrapper when
                           ``max_physical_batch_size`` is set
``configure_optimizers``   :meth:`DPTraining.make_optimizer`: the module's optimizer wrapped in a
                           :class:`opacus.optimizers.DPOptimizer` (``DistributedDPOptimizer``
                           when ``trainer.world_size > 1``); the accountant(s) hooked to its steps
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

Accounting: RDP by default (``accountant: rdp``); ``accountant: prv`` uses Opacus's PRV
accountant, and when it cannot compute (e.g. a tiny sigma makes its discretisation domain explode)
the warning says so and ``dp/epsilon`` falls back to the RDP value, which is always tracked.
``dp/epsilon_yu`` is the bound the detection paper reports (Yu et al. 2019, random reshuffling;
see :mod:`attacks.dp_bounds`), with k = epochs completed.
"""

from __future__ import annotations

import functools
import math
import os
import warnings
from dataclasses import dataclass

import torch
from opacus import GradSampleModule
from opacus.accountants import PRVAccountant, RDPAccountant
from opacus.accountants.utils import get_noise_multiplier
from opacus.data_loader import DPDataLoader
from opacus.grad_sample import GradSampleModuleFastGradientClipping
from opacus.grad_sample.gsm_base import AbstractGradSampleModule
from opacus.optimizers import (
    DistributedDPOptimizer,
    DPOptimizer,
    DPOptimizerFastGradientClipping,
)
from opacus.utils.batch_memory_manager import wrap_data_loader
from opacus.utils.fast_gradient_clipping_utils import DPTensorFastGradientClipping
from opacus.validators import ModuleValidator
from pytorch_lightning.utilities import rank_zero_info, rank_zero_warn
from torch import nn
from torch.utils.data import DataLoader, Sampler

from attacks.dp_bounds import yu_epsilon
from lightning_modules.components import ghost_clipping  # noqa: F401 - registers the Conv2d rule

# torch warns on every step that the first layer's backward hook fires although the images need no
# gradient; that is how Opacus's hooks are meant to work, so the message is only noise here
warnings.filterwarnings(
    "ignore", message="Full backward hook is firing when gradients are computed"
)

CKPT_KEY = "dp_accountant"
#: below this noise multiplier the PRV accountant is not attempted (memory blows up)
PRV_MIN_SIGMA = 0.2


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
            (:class:`EvenDistributedPoissonSampler`).
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
    """A batch sampler without ``__len__`` (see :meth:`DPTraining.dp_loader`)."""

    def __init__(self, batches):
        self.batches = batches

    def __iter__(self):
        return iter(self.batches)


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
        self.rdp = RDPAccountant()
        self.prv = PRVAccountant() if cfg.accountant == "prv" else None
        self.noise_multiplier: float | None = cfg.noise_multiplier
        self.sample_rate: float | None = None
        self.optimizer: DPOptimizer | None = None
        self.module: AbstractGradSampleModule | None = None
        self.ghost = cfg.grad_sample_mode == "ghost"
        self.replaced: list[str] = []
        self._losses: torch.Tensor | None = None
        self._orig_loader_fn = None
        self._prv_warned = False

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
        if self.optimizer is None:
            raise RuntimeError("DP: the optimizer must exist before the training loader.")
        if self.cfg.poisson_sampling:
            dpl = DPDataLoader.from_data_loader(loader, distributed=world_size > 1)
            if getattr(loader.collate_fn, "handles_empty_batches", False):
                dpl.collate_fn = loader.collate_fn  # e.g. detection lists: [] stays []
            if world_size > 1:
                # every process yields every Poisson batch (empty ones too) and, with virtual
                # batches, the same number of physical batches
                sampler = EvenDistributedPoissonSampler(
                    total_size=len(dpl.dataset),
                    sample_rate=dpl.sample_rate,
                    rank=torch.distributed.get_rank(),
                    world=world_size,
                    seed=int(os.environ.get("PL_GLOBAL_SEED", 0)),
                    max_physical_batch_size=self.cfg.max_physical_batch_size,
                    optimizer=self.optimizer,
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
            loader = dpl
        elif world_size > 1:
            raise ValueError("dp.poisson_sampling=false is supported in one process only.")
        if self.cfg.max_physical_batch_size:
            split = wrap_data_loader(
                data_loader=loader,
                max_batch_size=self.cfg.max_physical_batch_size,
                optimizer=self.optimizer,
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
        opt.attach_step_hook(self.rdp.get_optimizer_hook_fn(self.sample_rate))
        if self.prv is not None:
            opt.attach_step_hook(self.prv.get_optimizer_hook_fn(self.sample_rate))
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
        return sum(n for _, _, n in self.rdp.history)

    def epsilon(self, epochs_done: int | None = None) -> dict[str, float]:
        """``epsilon`` (chosen accountant), ``epsilon_rdp``, ``epsilon_yu`` (if epochs given)."""
        delta = self.cfg.delta
        out = {"epsilon_rdp": self.rdp.get_epsilon(delta) if self.rdp.history else 0.0}
        out["epsilon"] = out["epsilon_rdp"]
        if self.prv is not None and self.prv.history:
            try:
                if min(s for s, _, _ in self.prv.history) < PRV_MIN_SIGMA:
                    raise ValueError(
                        f"sigma < {PRV_MIN_SIGMA}: PRV's discretisation domain grows like "
                        "exp(1/sigma^2) (sigma=1e-3 asks for ~84 GiB), so it is not attempted"
                    )
                out["epsilon_prv"] = out["epsilon"] = float(self.prv.get_epsilon(delta))
            except Exception as exc:  # noqa: BLE001 - Opacus raises several types here
                if not self._prv_warned:
                    rank_zero_warn(
                        f"DP: the PRV accountant cannot compute epsilon for sigma="
                        f"{self.noise_multiplier}, q={self.sample_rate}, {self.steps} steps, "
                        f"delta={delta} ({type(exc).__name__}: {exc}). dp/epsilon reports the "
                        "RDP accountant's epsilon instead (an upper bound, looser than PRV's)."
                    )
                    self._prv_warned = True
        if epochs_done and self.noise_multiplier:
            out["epsilon_yu"] = yu_epsilon(self.noise_multiplier, epochs_done, delta)
        return out

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
        state = {
            "rdp": self.rdp.state_dict(),
            "noise_multiplier": self.noise_multiplier,
            "sample_rate": self.sample_rate,
        }
        if self.prv is not None:
            state["prv"] = self.prv.state_dict()
        return state

    def load_state_dict(self, state: dict) -> None:
        self.rdp.load_state_dict(state["rdp"])
        if self.prv is not None and "prv" in state:
            self.prv.load_state_dict(state["prv"])
        rank_zero_info(f"DP: accountant restored from the checkpoint ({self.steps} steps).")


def unwrap(net: nn.Module) -> nn.Module:
    """The module inside an Opacus wrapper (which forwards calls, not attributes), else ``net``."""
    return net._module if isinstance(net, AbstractGradSampleModule) else net


def per_sample_loss_mean(losses: torch.Tensor) -> torch.Tensor:
    """Mean of per-sample losses that is also well defined on an empty Poisson batch."""
    if losses.numel() == 0:
        return losses.sum()
    return losses.mean()


# ---- detectors -----------------------------------------------------------------------------
#: detectors that DP-SGD supports, and why the others are not
DP_DETECTORS = ("ssd300_vgg16", "ssd512_vgg16", "ssd300_resnet50", "tiny_ssd")
DP_UNSUPPORTED_WHY = (
    "two-stage detectors (Faster R-CNN) cannot be trained with per-sample DP-SGD here: the RoI "
    "heads pool the proposals of every image of the batch into one tensor, so the box head's "
    "batch dimension counts RoIs, not images, and Opacus's per-sample gradients (computed by "
    "hooks along each layer's batch dimension) would clip per RoI; the RPN and RoI sampling also "
    "mix images. Choose an SSD: " + ", ".join(DP_DETECTORS) + "."
)


def check_dp_detector(arch: str) -> None:
    if arch not in DP_DETECTORS:
        raise ValueError(f"model.dp with model.arch={arch!r}: {DP_UNSUPPORTED_WHY}")


def prepare_ssd_for_dp(net: nn.Module) -> list[str]:
    """Freeze the parameters Opacus has no per-sample rule for (SSD-VGG's L2Norm scale).

    Returns the frozen parameter names (logged). Frozen parameters keep their initial value
    (20, as in the SSD paper) and take no gradient, so they cost no privacy.
    """
    frozen = []
    for name, p in net.named_parameters():
        if name.endswith("scale_weight"):
            p.requires_grad_(False)
            frozen.append(name)
    if frozen:
        rank_zero_info(f"DP (detector): frozen (no per-sample rule in Opacus): {frozen}")
    return frozen


def ssd_per_image_losses(
    net: nn.Module, images: list[torch.Tensor], targets: list[dict[str, torch.Tensor]]
) -> torch.Tensor:
    """Per-image SSD losses (B,), each normalised by that image's own matched anchors.

    torchvision's ``SSD.forward`` divides the summed losses of the batch by the batch's total
    number of foreground anchors, which couples the images; here the same forward is run
    (transform, backbone, head, anchors, matching) and ``SSD.compute_loss`` is called per image,
    whose hard-negative mining is already per image. No layer mixes images (BatchNorm is replaced
    by GroupNorm under DP), so Opacus's per-sample gradient of image i is the gradient of loss i.
    ``net`` may be wrapped in a ``GradSampleModule`` (attributes are forwarded).
    """
    from collections import OrderedDict

    from torchvision.ops import boxes as box_ops

    net = unwrap(net)  # the hooks stay on the layers
    images_t, targets_t = net.transform(images, targets)
    features = net.backbone(images_t.tensors)
    if isinstance(features, torch.Tensor):
        features = OrderedDict([("0", features)])
    features = list(features.values())
    head_outputs = net.head(features)
    anchors = net.anchor_generator(images_t, features)
    losses = []
    for i, (anc, tgt) in enumerate(zip(anchors, targets_t)):
        if tgt["boxes"].numel() == 0:
            matched = torch.full((anc.size(0),), -1, dtype=torch.int64, device=anc.device)
        else:
            matched = net.proposal_matcher(box_ops.box_iou(tgt["boxes"], anc))
        part = net.compute_loss(
            [tgt], {k: v[i : i + 1] for k, v in head_outputs.items()}, [anc], [matched]
        )
        losses.append(part["bbox_regression"] + part["classification"])
    return torch.stack(losses)


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
