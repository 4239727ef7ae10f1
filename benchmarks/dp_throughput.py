"""DP-SGD (Opacus, through lightning_modules.dp) against plain SGD: training throughput.

    python benchmarks/dp_throughput.py [--arch resnet18] [--image-size 48] [--n 256]
        [--batch-size 32] [--epochs 2] [--device cpu] [--threads 2]

Same model (``build_classifier(arch, overfit preset)``), same data (a fixed random tensor set of
``--n`` images, 36 classes), same optimizer (SGD lr 0.01), same batch size. The DP side is what
``model.init_args.dp`` builds: ``ModuleValidator.fix`` + ``GradSampleModule`` (per-sample
gradients by hooks), Poisson sampling (``DPDataLoader``), ``DPOptimizer`` (clip C=1, sigma=1) and
the RDP accountant. One warm-up epoch each, then ``--epochs`` timed epochs. Prints samples/s of
both and the ratio DP / non-DP (goal >= 0.3); writes ``benchmarks/results/dp_throughput.json``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import sys
import time
from pathlib import Path

import torch
from torch.utils.data import DataLoader, TensorDataset

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from opacus.data_loader import DPDataLoader  # noqa: E402
from opacus.optimizers import DPOptimizer  # noqa: E402

from lightning_modules.components.classifier import build_classifier  # noqa: E402
from lightning_modules.dp import DPConfig, DPTraining  # noqa: E402


def run_epochs(net, opt, loader, epochs, device) -> tuple[float, int]:
    net.train()
    n, t0 = 0, time.perf_counter()
    for _ in range(epochs):
        for x, y in loader:
            x, y = x.to(device), y.to(device)
            opt.zero_grad(set_to_none=True)
            torch.nn.functional.cross_entropy(net(x), y).backward()
            opt.step()
            n += len(y)
    if device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - t0, n


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--arch", default="resnet18")
    ap.add_argument("--image-size", type=int, default=48)
    ap.add_argument("--n", type=int, default=256)
    ap.add_argument("--classes", type=int, default=36)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "dp_throughput.json"))
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    g = torch.Generator().manual_seed(0)
    data = TensorDataset(
        torch.rand(args.n, 3, args.image_size, args.image_size, generator=g),
        torch.randint(0, args.classes, (args.n,), generator=g),
    )
    loader = DataLoader(data, batch_size=args.batch_size, shuffle=True)

    torch.manual_seed(0)
    plain = build_classifier(args.arch, args.classes, batchnorm=False).to(device)
    opt = torch.optim.SGD(plain.parameters(), lr=0.01)
    run_epochs(plain, opt, loader, 1, device)  # warm-up
    t_plain, n_plain = run_epochs(plain, opt, loader, args.epochs, device)

    torch.manual_seed(0)
    dp = DPTraining(DPConfig(noise_multiplier=1.0, max_grad_norm=1.0))
    net = dp.prepare_module(build_classifier(args.arch, args.classes, batchnorm=False)).to(device)
    dp_loader = DPDataLoader.from_data_loader(loader)
    q = 1 / len(loader)
    dp_opt = DPOptimizer(
        torch.optim.SGD(net.parameters(), lr=0.01),
        noise_multiplier=1.0,
        max_grad_norm=1.0,
        expected_batch_size=int(args.n * q),
    )
    dp_opt.attach_step_hook(dp.rdp.get_optimizer_hook_fn(q))
    run_epochs(net, dp_opt, dp_loader, 1, device)
    t_dp, n_dp = run_epochs(net, dp_opt, dp_loader, args.epochs, device)

    plain_sps, dp_sps = n_plain / t_plain, n_dp / t_dp
    ratio = dp_sps / plain_sps
    print(
        f"non-DP: {plain_sps:.1f} samples/s   DP-SGD: {dp_sps:.1f} samples/s   "
        f"ratio DP/non-DP = {ratio:.3f} (goal >= 0.3)   epsilon after "
        f"{dp.steps} steps = {dp.epsilon()['epsilon']:.3g}"
    )
    gpu = torch.cuda.get_device_name(0) if device.type == "cuda" else None
    result = {
        "name": "dp_sgd_throughput_ratio",
        "value": ratio,
        "unit": "x (DP-SGD samples/s / non-DP samples/s)",
        "goal": ">= 0.3",
        "machine": f"{platform.machine()} {os.cpu_count()} cpus, {args.threads} threads"
        + (f", {gpu}" if gpu else ""),
        "device": args.device,
        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "command": "python benchmarks/dp_throughput.py " + " ".join(argv or sys.argv[1:]),
        "details": {
            "arch": args.arch,
            "image_size": args.image_size,
            "n": args.n,
            "batch_size": args.batch_size,
            "epochs": args.epochs,
            "non_dp_samples_per_s": plain_sps,
            "dp_samples_per_s": dp_sps,
            "torch": torch.__version__,
        },
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2))
    print(f"wrote {out}")
    return result


if __name__ == "__main__":
    main()
