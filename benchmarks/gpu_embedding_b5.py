"""The population embedding's GPU recipe: EfficientNet-B5 at 512 x 192 px in bf16, training
throughput against its own forward floor.

    python benchmarks/gpu_embedding_b5.py --device cuda       # real size: 512 x 192 px, batch 32
    python benchmarks/gpu_embedding_b5.py [--height 64] [--width 32] [--batch-size 4]  # CPU check

The network is ``configs/fit/beluga_reid_gpu.yaml``'s: :class:`EmbeddingNet` over
``build_backbone("tf_efficientnet_b5")`` (random weights: the figure is the architecture's),
every stage trained, a 512-d embedding, AdamW, bf16 autocast and ``channels_last``. The loss is
a cosine-softmax over 1,000 classes (the ArcFace head's cost without its margin bookkeeping).
Two figures in one run, each after ``--warmup`` untimed steps, over ``--steps`` timed ones:

* train: forward, loss, backward and the optimizer step (img/s);
* floor: the same forward alone under ``torch.no_grad`` (img/s): no training step is faster.

Prints both and train/floor; a ratio near 1/3 is the usual cost of a backward pass (about twice
the forward). Writes ``benchmarks/results/b5_embedding_train_throughput.json`` (the GPU's name in
``machine`` on CUDA). On a CPU the defaults are a smoke run at tiny size that only checks the
script.
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
from lightning_modules.components.backbones import build_backbone  # noqa: E402
from lightning_modules.components.reid import EmbeddingNet  # noqa: E402

ARCH = "tf_efficientnet_b5"
FULL = {"height": 512, "width": 192, "batch_size": 32, "warmup": 5, "steps": 20}
SMALL = {"height": 64, "width": 32, "batch_size": 4, "warmup": 1, "steps": 2}
GOAL = "train >= 0.25 of the forward floor (bf16, 512 x 192 px, one H100/H200-class GPU)"


def build(device: str, classes: int, seed: int) -> tuple[EmbeddingNet, torch.Tensor]:
    """The embedding net in ``channels_last`` on ``device`` and a class-weight matrix (C, 512)."""
    torch.manual_seed(seed)
    net = EmbeddingNet(build_backbone(ARCH, "none"), embedding_dim=512)
    net = net.to(device, memory_format=torch.channels_last)
    centers = torch.randn(classes, 512, device=device, requires_grad=True)
    return net, centers


def timed(fn, warmup: int, steps: int, device: str) -> float:
    """Seconds of ``steps`` calls of ``fn`` after ``warmup`` untimed ones."""
    for _ in range(warmup):
        fn()
    sync(device)
    t0 = time.perf_counter()
    for _ in range(steps):
        fn()
    sync(device)
    return time.perf_counter() - t0


def measure(device: str, size: dict, classes: int = 1000, seed: int = 0) -> dict:
    """img/s of training steps and of the forward floor at ``size``."""
    net, centers = build(device, classes, seed)
    g = torch.Generator(device="cpu").manual_seed(seed)
    b, h, w = size["batch_size"], size["height"], size["width"]
    x = (
        torch.randn(b, 3, h, w, generator=g)
        .to(device)
        .contiguous(memory_format=torch.channels_last)
    )
    y = torch.randint(0, classes, (b,), generator=g).to(device)
    opt = torch.optim.AdamW([*net.parameters(), centers], lr=2e-4, weight_decay=1e-4)
    dev_type = torch.device(device).type

    def autocast():
        return torch.autocast(dev_type, dtype=torch.bfloat16)

    def train_step() -> None:
        with autocast():
            logits = 30.0 * net(x) @ F.normalize(centers, dim=1).T
            loss = F.cross_entropy(logits.float(), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    def forward_only() -> None:
        with torch.no_grad(), autocast():
            net(x)

    net.train()
    t_train = timed(train_step, size["warmup"], size["steps"], device)
    net.eval()
    t_floor = timed(forward_only, size["warmup"], size["steps"], device)
    out = {
        "train_img_per_s": b * size["steps"] / t_train,
        "floor_img_per_s": b * size["steps"] / t_floor,
    }
    out["train_over_floor"] = out["train_img_per_s"] / out["floor_img_per_s"]
    if dev_type == "cuda":
        out["max_memory_gib"] = torch.cuda.max_memory_allocated() / 2**30
    return out


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    for key in FULL:
        ap.add_argument(f"--{key.replace('_', '-')}", type=int, default=None)
    add_common_args(ap)
    a = ap.parse_args(argv)
    threads = apply_threads(a.threads)
    cuda = a.device.startswith("cuda")
    if cuda and not torch.cuda.is_available():
        raise SystemExit("--device cuda: no CUDA device here")
    if cuda:
        torch.backends.cudnn.benchmark = True
    base = FULL if (a.full or cuda) else SMALL
    size = {k: getattr(a, k) if getattr(a, k) is not None else v for k, v in base.items()}
    with contextlib.suppress(AttributeError):
        torch.backends.cuda.matmul.allow_tf32 = True
    res = measure(a.device, size)
    print(
        f"{ARCH} embedding, {size['height']}x{size['width']} px, batch {size['batch_size']}, "
        f"{a.device}, bf16: train {res['train_img_per_s']:.1f} img/s, forward floor "
        f"{res['floor_img_per_s']:.1f} img/s, train/floor {res['train_over_floor']:.2f}"
    )
    details = {"value_is": "train img/s / forward-floor img/s", **res, **size, "arch": ARCH}
    if not cuda:
        details["note"] = "CPU run at tiny size: checks the script; the figure is the GPU run's"
    return write_result(
        "b5_embedding_train_throughput",
        res["train_over_floor"],
        "training img/s over forward-only img/s (EfficientNet-B5 embedding, bf16)",
        GOAL,
        details,
        argv,
        a.out,
        threads=threads,
        device=a.device,
    )


if __name__ == "__main__":
    main()
