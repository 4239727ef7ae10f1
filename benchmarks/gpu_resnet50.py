"""ResNet50 training throughput with bf16 autocast and channels_last, against fp32 / contiguous.

    python benchmarks/gpu_resnet50.py --device cuda [--compile]       # real size: 224 px, batch 256
    python benchmarks/gpu_resnet50.py [--image-size 64] [--batch-size 8] [--steps 3]   # CPU check

The target's ResNet50 (``build_classifier("resnet50", 1000)``, batch-norm kept, i.e. the standard
torchvision network) trained with SGD (lr 0.1, momentum 0.9) and cross-entropy on random images
already on the device (the figure is the model's, not the loader's). Two settings in one run, each
with its own fresh model, ``--warmup`` untimed steps and ``--steps`` timed ones:

* fast: ``torch.autocast(dtype=bfloat16)``, model and batches in ``channels_last``
  (plus ``torch.compile`` with ``--compile``);
* baseline: fp32, contiguous (NCHW), eager.

Prints img/s of both and their ratio; the JSON's ``value`` is the fast setting's img/s. Goal:
>= 3,000 img/s on one data-centre GPU (H100, H200) at 224 px (``--full`` or ``--device cuda``: 224 px, batch 256, 10
warm-up and 30 timed steps). On a CPU the default is a small smoke run (64 px, batch 8, 1 + 3
steps) that only checks the script: the goal applies to the GPU run. Writes
``benchmarks/results/resnet50_train_throughput.json`` (the GPU's name in ``machine`` on CUDA).
"""

from __future__ import annotations

import argparse
import contextlib
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # run as a script: the repository root is importable

from benchmarks.common import add_common_args, apply_threads, sync, write_result  # noqa: E402
from lightning_modules.components.classifier import build_classifier  # noqa: E402

GOAL = ">= 3000 img/s on one GPU (H100/H200 class; 224 px, bf16, channels_last)"
FULL = {"image_size": 224, "batch_size": 256, "warmup": 10, "steps": 30}
SMALL = {"image_size": 64, "batch_size": 8, "warmup": 1, "steps": 3}


def train_throughput(
    device: str,
    image_size: int,
    batch_size: int,
    steps: int,
    warmup: int,
    *,
    bf16: bool,
    channels_last: bool,
    compile: bool = False,
    classes: int = 1000,
    seed: int = 0,
) -> dict:
    """img/s of ``steps`` timed SGD steps of ResNet50 (after ``warmup`` untimed ones)."""
    torch.manual_seed(seed)
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    net = build_classifier("resnet50", classes, batchnorm=True).to(device, memory_format=fmt)
    net.train()
    step_net = torch.compile(net) if compile else net
    opt = torch.optim.SGD(net.parameters(), lr=0.1, momentum=0.9)
    g = torch.Generator(device="cpu").manual_seed(seed)
    x = torch.randn(batch_size, 3, image_size, image_size, generator=g).to(device)
    x = x.contiguous(memory_format=fmt)
    y = torch.randint(0, classes, (batch_size,), generator=g).to(device)
    dev_type = torch.device(device).type

    def step() -> None:
        ctx = torch.autocast(dev_type, dtype=torch.bfloat16) if bf16 else contextlib.nullcontext()
        with ctx:
            loss = F.cross_entropy(step_net(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    t0 = time.perf_counter()
    for _ in range(warmup):
        step()
    sync(device)
    t_warm = time.perf_counter() - t0
    t0 = time.perf_counter()
    for _ in range(steps):
        step()
    sync(device)
    dt = time.perf_counter() - t0
    out = {
        "bf16": bf16,
        "channels_last": channels_last,
        "compile": compile,
        "img_per_s": batch_size * steps / dt,
        "step_ms": dt / steps * 1e3,
        "warmup_s": t_warm,
    }
    if dev_type == "cuda":
        out["max_memory_gib"] = torch.cuda.max_memory_allocated() / 2**30
        torch.cuda.reset_peak_memory_stats()
    return out


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--image-size", type=int, default=None, help="64 on CPU; 224 full / cuda")
    ap.add_argument("--batch-size", type=int, default=None, help="8 on CPU; 256 full / cuda")
    ap.add_argument("--steps", type=int, default=None, help="timed steps (3; 30 full / cuda)")
    ap.add_argument("--warmup", type=int, default=None, help="untimed steps (1; 10 full / cuda)")
    ap.add_argument("--compile", action="store_true", help="torch.compile the fast setting")
    ap.add_argument("--classes", type=int, default=1000)
    add_common_args(ap)
    a = ap.parse_args(argv)
    threads = apply_threads(a.threads)
    device = a.device
    cuda = device.startswith("cuda")
    if cuda:
        if not torch.cuda.is_available():
            raise SystemExit("--device cuda: no CUDA device here")
        torch.backends.cudnn.benchmark = True
    base = FULL if (a.full or cuda) else SMALL
    size = {k: getattr(a, k) if getattr(a, k) is not None else v for k, v in base.items()}
    common = dict(size, classes=a.classes)
    fast = train_throughput(device, **common, bf16=True, channels_last=True, compile=a.compile)
    if cuda:
        torch.cuda.empty_cache()
    plain = train_throughput(device, **common, bf16=False, channels_last=False)
    ratio = fast["img_per_s"] / plain["img_per_s"]
    print(
        f"ResNet50 train, {size['image_size']} px, batch {size['batch_size']}, {device}: bf16 + "
        f"channels_last{' + compile' if a.compile else ''} {fast['img_per_s']:.1f} img/s, fp32 "
        f"contiguous {plain['img_per_s']:.1f} img/s, ratio {ratio:.2f}x (goal {GOAL})"
    )
    details = {
        "value_is": "img/s of the bf16 + channels_last setting",
        "fast": fast,
        "baseline_fp32_contiguous": plain,
        "ratio_fast_over_fp32": ratio,
        **size,
        "classes": a.classes,
        "cudnn_benchmark": cuda,
        "full": a.full or cuda,
    }
    if not cuda:
        details["note"] = (
            "CPU run: the goal applies to one H100/H200-class GPU at 224 px, batch 256 "
            "(python benchmarks/gpu_resnet50.py --device cuda); this run only checks the script"
        )
    result = write_result(
        "resnet50_train_throughput",
        fast["img_per_s"],
        "img/s (ResNet50 training steps, bf16 autocast + channels_last)",
        GOAL,
        details,
        argv,
        a.out,
        threads=threads,
        device=device,
    )
    return result


if __name__ == "__main__":
    main()
