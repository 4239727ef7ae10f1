"""DP-SGD wiring (lightning_modules.dp): accounting, clipping, resume, DDP, the Yu et al. bound."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch
from opacus.accountants import RDPAccountant
from opacus.optimizers import DPOptimizer, DPOptimizerFastGradientClipping
from torch import nn

import cli
from lightning_modules.dp.accounting import TABLE4, epochs_from_iterations, round_sig, yu_epsilon
from lightning_modules.dp.config import DPConfig
from lightning_modules.dp.training import CKPT_KEY, DPTraining

SIGMA, DELTA = 1.0, 1e-5


@pytest.fixture(scope="session")
def dp_args(tiny_args):
    """``dp_args(tmp, epochs, name, virtual)``: a tiny DP fit's arguments."""

    def dp_args(tmp: Path, epochs: int, name: str = "dp", virtual: bool = True) -> list[str]:
        args = tiny_args(tmp, epochs, name)
        args[args.index("demo.yaml")] = "demo_dp.yaml"
        return args + [
            "--data.init_args.loader.batch_size",
            "2",  # 3 Poisson steps per epoch (N = 6)
            "--model.init_args.dp.noise_multiplier",
            str(SIGMA),
            "--model.init_args.dp.max_physical_batch_size",
            "1" if virtual else "0",
            "--model.init_args.arch",
            "resnet18",
        ]

    return dp_args


def opacus_epsilon(sigma: float, q: float, steps: int, delta: float = DELTA) -> float:
    acc = RDPAccountant()
    acc.history = [(sigma, q, steps)]
    return acc.get_epsilon(delta)


@pytest.fixture(scope="module")
def dp_run(tmp_path_factory, dp_args):
    tmp = tmp_path_factory.mktemp("dp")
    torch.set_num_threads(1)
    cli.main(dp_args(tmp, epochs=2))
    return tmp, tmp / "logs" / "dp" / "version_0"


def test_epsilon_equals_opacus_accountant_and_grows(dp_run, scalars):
    _, run = dp_run
    ckpt = torch.load(run / "checkpoints" / "last.ckpt", weights_only=False)
    history = ckpt[CKPT_KEY]["rdp"]["history"]
    assert [(s, round(q, 6)) for s, q, _ in history] == [(SIGMA, round(1 / 3, 6))]
    eps = [v for _, v in scalars(run, "dp/epsilon")]
    steps = [v for _, v in scalars(run, "dp/steps")]
    assert steps == [3, 6]
    assert len(eps) == 2 and all(map(torch.isfinite, torch.tensor(eps)))
    assert eps[0] < eps[1]
    for e, n in zip(eps, steps):
        assert e == pytest.approx(opacus_epsilon(SIGMA, 1 / 3, int(n)), rel=1e-5)
    yu = [v for _, v in scalars(run, "dp/epsilon_yu")]
    assert yu == pytest.approx([yu_epsilon(SIGMA, k, DELTA) for k in (1, 2)], rel=1e-5)


def test_resumed_run_continues_the_accountant(dp_run, scalars, dp_args):
    tmp, run = dp_run
    cli.main(dp_args(tmp, epochs=3) + ["--ckpt_path", str(run / "checkpoints" / "last.ckpt")])
    assert not (tmp / "logs" / "dp" / "version_1").exists()
    steps = [v for _, v in scalars(run, "dp/steps")]
    eps = [v for _, v in scalars(run, "dp/epsilon")]
    assert steps == [3, 6, 9]  # a restart would log 3 again
    assert eps[2] > eps[1] > eps[0]
    assert eps[2] == pytest.approx(opacus_epsilon(SIGMA, 1 / 3, 9), rel=1e-5)


def test_per_sample_gradients_are_clipped_to_c():
    torch.manual_seed(0)
    c = 0.05
    net = nn.Sequential(
        nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 6 * 6, 3)
    )
    dp = DPTraining(DPConfig(noise_multiplier=0.0, max_grad_norm=c, grad_sample_mode="hooks"))
    gsm = dp.prepare_module(net)
    assert any("BatchNorm2d -> GroupNorm" in r for r in dp.replaced)
    opt = DPOptimizer(
        torch.optim.SGD(gsm.parameters(), lr=0.0),
        noise_multiplier=0.0,
        max_grad_norm=c,
        expected_batch_size=5,
        loss_reduction="mean",
    )
    x, y = torch.randn(5, 3, 8, 8) * 10, torch.tensor([0, 1, 2, 0, 1])
    nn.functional.cross_entropy(gsm(x), y).backward()
    params = [p for p in gsm.parameters() if p.requires_grad]
    per_sample = torch.cat([p.grad_sample.reshape(5, -1) for p in params], dim=1)
    norms = per_sample.norm(dim=1)
    assert (norms > c).all()  # every sample needs clipping
    # Opacus's grad_sample agrees with a per-sample autograd loop
    for i in range(5):
        gsm.zero_grad(set_to_none=True)
        g = torch.autograd.grad(
            nn.functional.cross_entropy(gsm(x[i : i + 1]), y[i : i + 1]), params
        )
        assert torch.allclose(torch.cat([t.reshape(-1) for t in g]), per_sample[i], atol=1e-5)
    gsm.zero_grad(set_to_none=True)
    nn.functional.cross_entropy(gsm(x), y).backward()
    opt.pre_step()
    summed = torch.cat([p.summed_grad.reshape(-1) for p in params])
    clipped = per_sample * (c / (norms + 1e-6)).clamp(max=1.0)[:, None]
    assert clipped.norm(dim=1).max() <= c * (1 + 1e-5)
    assert torch.allclose(summed, clipped.sum(0), atol=1e-6)
    # one sample alone: the clipped gradient has norm exactly C
    opt.zero_grad(set_to_none=True)
    nn.functional.cross_entropy(gsm(x[:1]), y[:1]).backward()
    opt.pre_step()
    one = torch.cat([p.summed_grad.reshape(-1) for p in params])
    assert one.norm().item() == pytest.approx(c, rel=1e-4)


def ghost_net() -> nn.Module:
    """Conv layers that take each branch of the Conv2d norm rule: direct (large map), ghost
    (small map), dilated, grouped (Opacus fallback), no bias; then GroupNorm and Linear."""
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1),  # 16x16 map: direct
        nn.ReLU(),
        nn.Conv2d(8, 16, 3, stride=2, dilation=2, padding=2, bias=False),
        nn.GroupNorm(4, 16),
        nn.ReLU(),
        nn.Conv2d(16, 32, 3, stride=2, padding=1),  # 4x4 map, D=144, C_out=32: ghost
        nn.Conv2d(32, 32, 3, padding=1, groups=4),  # grouped: Opacus's per-sample gradient
        nn.ReLU(),
        nn.Flatten(),
        nn.Linear(32 * 4 * 4, 5),
    )


def test_ghost_clipping_equals_per_sample_clipping():
    """Ghost clipping (the default) gives the clipped gradient sum of explicit per-sample
    gradients: norms within 1e-4 relative, summed clipped gradients within 1e-5."""
    from lightning_modules.components.ghost_clipping import conv2d_norm_sample

    torch.manual_seed(0)
    c, n = 0.5, 6
    x, y = torch.randn(n, 3, 16, 16) * 3, torch.tensor([0, 1, 2, 3, 4, 0])
    base = ghost_net()
    sums, norms = {}, {}
    for mode in ("hooks", "ghost"):
        dp = DPTraining(DPConfig(noise_multiplier=0.0, max_grad_norm=c, grad_sample_mode=mode))
        gsm = dp.prepare_module(copy.deepcopy(base))
        dp.optimizer = opt = (DPOptimizerFastGradientClipping if mode == "ghost" else DPOptimizer)(
            torch.optim.SGD(gsm.parameters(), lr=0.0),
            noise_multiplier=0.0,
            max_grad_norm=c,
            expected_batch_size=n,
        )
        opt.zero_grad(set_to_none=True)
        loss = dp.per_sample_loss(nn.functional.cross_entropy(gsm(x), y, reduction="none"))
        if mode == "ghost":
            dp.ghost_backward()
            norms[mode] = gsm.per_sample_gradient_norms
        else:
            loss.backward()
            params = [p for p in gsm.parameters() if p.requires_grad]
            norms[mode] = torch.stack([p.grad_sample.reshape(n, -1).norm(dim=1) for p in params])
            norms[mode] = norms[mode].norm(dim=0)
        opt.pre_step()
        sums[mode] = torch.cat([p.grad.reshape(-1) for p in gsm.parameters()])
    assert (norms["hooks"] > c).sum() >= 3  # clipping is exercised
    assert torch.allclose(norms["ghost"], norms["hooks"], rtol=1e-4)
    assert torch.allclose(sums["ghost"], sums["hooks"], atol=1e-5, rtol=1e-4)
    # the Conv2d rule itself, both branches, against autograd one sample at a time
    for conv, size in ((nn.Conv2d(4, 6, 3, padding=1), 12), (nn.Conv2d(16, 24, 3, padding=1), 3)):
        a = torch.randn(3, conv.in_channels, size, size)
        out = conv(a)
        g = torch.randn_like(out)
        got = conv2d_norm_sample(conv, [a], g)
        for i in range(3):
            gw, gb = torch.autograd.grad(
                (conv(a[i : i + 1]) * g[i : i + 1]).sum(), [conv.weight, conv.bias]
            )
            assert got[conv.weight][i] == pytest.approx(gw.norm().item(), rel=1e-4)
            assert got[conv.bias][i] == pytest.approx(gb.norm().item(), rel=1e-4)


@pytest.mark.parametrize("mode", ["ghost", "hooks"])
def test_batchnorm_resnet_trains_after_groupnorm_replacement(mode):
    """The regularized preset's ResNet (BatchNorm) under DP: BatchNorm -> GroupNorm, whose hooked
    output ResNet adds to in place (``out += identity``), so the fix clones it."""
    from lightning_modules.components.classifier import build_classifier

    torch.manual_seed(0)
    dp = DPTraining(DPConfig(noise_multiplier=1.0, grad_sample_mode=mode))
    net = dp.prepare_module(build_classifier("resnet18", 3, batchnorm=True))
    assert len(dp.replaced) == 20
    x, y = torch.rand(4, 3, 32, 32), torch.tensor([0, 1, 2, 0])
    cls = DPOptimizerFastGradientClipping if mode == "ghost" else DPOptimizer
    dp.optimizer = opt = cls(
        torch.optim.SGD(net.parameters(), lr=0.1),
        noise_multiplier=1.0,
        max_grad_norm=1.0,
        expected_batch_size=4,
    )
    before = [p.detach().clone() for p in net.parameters()]
    loss = dp.per_sample_loss(nn.functional.cross_entropy(net(x), y, reduction="none"))
    dp.ghost_backward() if mode == "ghost" else loss.backward()
    opt.step()
    assert all(torch.isfinite(p).all() for p in net.parameters())
    assert any(not torch.equal(a, b) for a, b in zip(before, net.parameters()))


@pytest.mark.parametrize("row", TABLE4, ids=["sigma1e-3", "sigma1e-4"])
def test_yu_bound_reproduces_table4(row):
    sigma, iters, batch, delta, printed = row
    k = epochs_from_iterations(iters, batch, 2066)  # N implied by both figures
    assert round_sig(yu_epsilon(sigma, k, delta), 3) == printed


def test_config_needs_sigma_or_target_and_prv_message():
    with pytest.raises(ValueError, match="exactly one"):
        DPConfig()
    with pytest.raises(ValueError, match="exactly one"):
        DPConfig(noise_multiplier=1.0, target_epsilon=3.0)
    dp = DPTraining(DPConfig(noise_multiplier=1e-3, accountant="prv"))
    dp.noise_multiplier, dp.sample_rate = 1e-3, 0.5
    dp.accounting.rdp.history = [(1e-3, 0.5, 10)]
    dp.accounting.prv.history = [(1e-3, 0.5, 10)]
    with pytest.warns(UserWarning, match="PRV accountant cannot compute epsilon"):
        eps = dp.epsilon()
    assert eps["epsilon"] == eps["epsilon_rdp"] and "epsilon_prv" not in eps
    ok = DPTraining(DPConfig(noise_multiplier=1.0, accountant="prv"))
    ok.accounting.rdp.history = ok.accounting.prv.history = [(1.0, 0.5, 10)]
    e = ok.epsilon()
    assert e["epsilon"] == e["epsilon_prv"] <= e["epsilon_rdp"]


@pytest.mark.ddp
@pytest.mark.slow
def test_ddp_two_processes_same_epsilon_as_one(tmp_path, run_cli, scalars, dp_args):
    """2 processes (with and without virtual batches) take the steps and epsilon of one process:
    the accountant's epsilon after 3 and 6 steps at rate 1/3 (a one-process run gives exactly
    these, see test_epsilon_equals_opacus_accountant_and_grows)."""
    one_process = [opacus_epsilon(SIGMA, 1 / 3, steps) for steps in (3, 6)]
    for virtual in (False, True):
        name = f"ddp2{'_virtual' if virtual else ''}"
        # 6 training photos, rate 1/3: one photo per process and step on average, so processes
        # often draw empty batches (Opacus's own sampler skips those and DDP hangs); with
        # virtual batches of 1 the processes split their batches into the same number of parts
        args = dp_args(tmp_path, epochs=2, name=name, virtual=virtual) + [
            "--trainer.devices",
            "2",
            "--trainer.strategy",
            "ddp",
            "--trainer.num_nodes",
            "1",
        ]
        run_cli(args)
        run = tmp_path / "logs" / name / "version_0"
        eps2 = [v for _, v in scalars(run, "dp/epsilon")]
        assert eps2 == pytest.approx(one_process, rel=1e-5), name
        assert [v for _, v in scalars(run, "dp/steps")] == [3, 6], name


def test_target_epsilon_solves_sigma_for_the_run():
    from types import SimpleNamespace

    from torch.utils.data import DataLoader, TensorDataset

    ds = TensorDataset(torch.rand(20, 3), torch.zeros(20, dtype=torch.long))
    dm = SimpleNamespace(train_dataloader=lambda: DataLoader(ds, batch_size=5))
    trainer = SimpleNamespace(datamodule=dm, world_size=1, max_epochs=3)
    dp = DPTraining(DPConfig(target_epsilon=4.0, delta=DELTA))
    net = dp.prepare_module(nn.Linear(3, 2))
    opt = dp.make_optimizer(torch.optim.SGD(net.parameters(), lr=0.1), trainer)
    assert isinstance(opt, DPOptimizer) and dp.sample_rate == 0.25
    assert opacus_epsilon(dp.noise_multiplier, 0.25, 12) == pytest.approx(4.0, rel=0.02)
    loader = dm.train_dataloader()  # now the Poisson loader
    assert type(loader).__name__ == "DPDataLoader"


def test_virtual_batches_end_every_logical_batch_with_a_step():
    """Poisson draws vary the number of physical batches; the DP loader has no length, so
    Lightning runs it to the end and every logical batch ends in exactly one optimizer step."""
    from types import SimpleNamespace

    from torch.utils.data import DataLoader, TensorDataset

    ds = TensorDataset(torch.rand(40, 3), torch.zeros(40, dtype=torch.long))
    dm = SimpleNamespace(train_dataloader=lambda: DataLoader(ds, batch_size=8))
    trainer = SimpleNamespace(datamodule=dm, world_size=1, max_epochs=1)
    dp = DPTraining(DPConfig(noise_multiplier=1.0, max_physical_batch_size=1))
    net = dp.prepare_module(nn.Linear(3, 2))
    dp.make_optimizer(torch.optim.SGD(net.parameters(), lr=0.1), trainer)
    loader = dm.train_dataloader()
    with pytest.raises(TypeError):
        len(loader)
    torch.manual_seed(3)
    for _ in range(3):  # epochs
        steps = samples = 0
        for x, _ in loader:
            samples += len(x)
            steps += not dp.optimizer._check_skip_next_step()
        assert steps == 5  # one per logical batch (q = 1/5), whatever the draws
        assert samples > 0


def test_distributed_poisson_sampler_shards_one_poisson_draw_evenly():
    """Both processes' batches of a step are one Poisson draw of the whole set (disjoint, union =
    the mask), every process yields the same number of (physical) batches, every logical batch
    ends in exactly one optimizer step, and set_epoch replays an epoch."""
    from lightning_modules.dp.sampling import EvenDistributedPoissonSampler

    class Signals:
        def __init__(self):
            self.skips = []

        def signal_skip_step(self, do_skip):
            self.skips.append(do_skip)

    def ranks(max_phys=None, epoch=0):
        out = []
        for rank in (0, 1):
            opt = Signals()
            smp = EvenDistributedPoissonSampler(
                total_size=41,
                sample_rate=0.25,
                rank=rank,
                world=2,
                seed=7,
                max_physical_batch_size=max_phys,
                optimizer=opt,
            )
            smp.set_epoch(epoch)
            out.append((list(smp), opt.skips))
        return out

    (b0, _), (b1, _) = ranks()
    assert len(b0) == len(b1) == 4  # 1 / q steps on every process, empty batches included
    for x, y in zip(b0, b1):
        assert not set(x) & set(y)
    # fixed disjoint shards: over the epoch no sample is drawn by both processes
    assert not {i for x in b0 for i in x} & {i for y in b1 for i in y}
    # a Poisson draw at q = 1/4 over 4 steps of 41 samples: about 41 inclusions (sd 5.5)
    assert 15 < sum(map(len, b0 + b1)) < 70
    (v0, s0), (v1, s1) = ranks(max_phys=2)
    assert len(v0) == len(v1)  # the same number of physical batches: DDP's all-reduces pair up
    assert s0 == s1 and s0.count(False) == 4  # one real step per logical batch
    assert all(len(x) <= 2 for x in v0 + v1)
    # the physical batches of a logical batch, joined, are that logical batch
    ends = [i for i, skip in enumerate(s0) if not skip]
    starts = [0] + [e + 1 for e in ends[:-1]]
    for (st, en), logical in zip(zip(starts, ends), b0):
        assert sum((v0[i] for i in range(st, en + 1)), []) == logical
    assert ranks(epoch=3) == ranks(epoch=3) and ranks(epoch=3) != ranks(epoch=4)
