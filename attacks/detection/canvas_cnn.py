"""CNN attacks on canvases (paper, sections 3.3 and 5.2): ``shallow`` and AlexNet.

Each image's predictions are rendered with :func:`~attacks.detection.canvas.render_canvas` (on the
fly, per batch) and classified in/out by a CNN trained on the shadow model's canvases, with random
rotations by multiples of 90 degrees and horizontal/vertical flips as augmentation (the canvas has
no preferred orientation; the paper's "rotation and flipping"). Canvases are standardised with the
mean and standard deviation of the training canvases.
"""

from __future__ import annotations

import copy
from typing import TYPE_CHECKING

import numpy as np

from attacks.detection.common import DetectorAttack, shadow_split, validation_metrics
from attacks.registry import register
from attacks.signals import membership, select

if TYPE_CHECKING:  # torch loads when the attack is built, not when the registry is listed
    import torch
    from torch import nn

MODELS = ("shallow", "alexnet")


def shallow_cnn() -> nn.Module:
    """conv 64 -> conv 128 -> fc 128 -> fc 2 (paper, section 5.2), for (B, 1, S, S) canvases:
    ``features`` then ``classifier``."""
    from collections import OrderedDict

    from torch import nn

    features = nn.Sequential(
        nn.Conv2d(1, 64, 5, stride=2, padding=2),
        nn.ReLU(inplace=True),
        nn.MaxPool2d(2),
        nn.Conv2d(64, 128, 3, padding=1),
        nn.ReLU(inplace=True),
        nn.MaxPool2d(2),
        nn.AdaptiveAvgPool2d(8),
    )
    classifier = nn.Sequential(
        nn.Flatten(), nn.Linear(128 * 64, 128), nn.ReLU(inplace=True), nn.Linear(128, 2)
    )
    return nn.Sequential(OrderedDict(features=features, classifier=classifier))


def build_attack_cnn(name: str) -> nn.Module:
    """``shallow`` or ``alexnet`` (torchvision AlexNet, 1 input channel, 2 outputs, untrained)."""
    if name == "shallow":
        return shallow_cnn()
    if name == "alexnet":
        from torch import nn
        from torchvision.models import alexnet

        net = alexnet(weights=None, num_classes=2)
        net.features[0] = nn.Conv2d(1, 64, kernel_size=11, stride=4, padding=2)
        return net
    raise ValueError(f"attack model {name!r}: choose one of {list(MODELS)}.")


def dihedral(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Random rotation by k * 90 degrees and random flips, per canvas. (B, 1, S, S)."""
    import torch

    ks = torch.randint(0, 4, (len(x),), generator=gen).tolist()
    hf = torch.rand(len(x), generator=gen).lt(0.5).tolist()
    vf = torch.rand(len(x), generator=gen).lt(0.5).tolist()
    out = []
    for xi, k, h, v in zip(x, ks, hf, vf):
        xi = torch.rot90(xi, k, (1, 2))
        if h:
            xi = xi.flip(2)
        if v:
            xi = xi.flip(1)
        out.append(xi)
    return torch.stack(out)


@register("det_canvas")
class CanvasAttack(DetectorAttack):
    """Canvas method + CNN attack.

    Args:
        model: ``shallow`` or ``alexnet``.
        box_style: ``original`` (O) or ``uniform`` (U).
        rescale: draw ``-log(1 - s)`` instead of ``s`` (SR).
        augment: rotation/flip augmentation while training (Aug).
        canvas_size: S in pixels (paper: 300).
        uniform_frac: uniform box side as a fraction of S (paper: 0.1).
        max_boxes: boxes drawn per image (highest scores; None: all in the signal file).
        epochs, batch_size, lr, weight_decay: Adam training of the CNN.
        val_fraction: share of the shadow signals held out; the epoch with the best held-out
            accuracy is kept and its accuracy is the "Val Acc".
        seed: split, initialisation and augmentation seed.
        device: ``auto`` (CUDA when available), ``cpu`` or ``cuda``.
    """

    def __init__(
        self,
        model: str = "alexnet",
        box_style: str = "uniform",
        rescale: bool = True,
        augment: bool = True,
        canvas_size: int = 300,
        uniform_frac: float = 0.1,
        max_boxes: int | None = None,
        epochs: int = 30,
        batch_size: int = 32,
        lr: float = 1e-4,
        weight_decay: float = 0.0,
        val_fraction: float = 0.2,
        seed: int = 0,
        device: str = "auto",
    ):
        if model not in MODELS:
            raise ValueError(f"attack model {model!r}: choose one of {list(MODELS)}.")
        if model == "alexnet" and canvas_size < 63:
            raise ValueError(f"canvas_size={canvas_size}: AlexNet needs canvases of 63 px or more.")
        self.model_name, self.box_style, self.rescale, self.augment = (
            model,
            box_style,
            rescale,
            augment,
        )
        self.canvas_size, self.uniform_frac, self.max_boxes = canvas_size, uniform_frac, max_boxes
        self.epochs, self.batch_size, self.lr, self.weight_decay = (
            epochs,
            batch_size,
            lr,
            weight_decay,
        )
        self.val_fraction, self.seed = val_fraction, seed
        import torch

        self.device = torch.device(
            ("cuda" if torch.cuda.is_available() else "cpu") if device == "auto" else device
        )
        self.net: nn.Module | None = None
        self.mean, self.std = 0.0, 1.0
        self.val_metrics: dict = {}
        self.history: list[dict] = []

    def canvases(self, signals: dict, idx: np.ndarray | None = None) -> torch.Tensor:
        """Standardised canvases (B, 1, S, S) on the attack's device for rows ``idx``."""
        import torch

        from attacks.detection.canvas import render_canvas

        sel = slice(None) if idx is None else idx
        k = self.max_boxes or signals["scores"].shape[1]
        boxes = torch.as_tensor(signals["boxes"][sel][:, :k], device=self.device)
        scores = torch.as_tensor(signals["scores"][sel][:, :k], device=self.device)
        n = signals.get("n_boxes")
        n = None if n is None else torch.as_tensor(np.minimum(n[sel], k), device=self.device)
        c = render_canvas(
            boxes, scores, n, self.canvas_size, self.box_style, self.rescale, self.uniform_frac
        )
        return (c - self.mean) / self.std

    def fit(self, shadow_signals: dict) -> CanvasAttack:
        import torch
        from torch import nn

        torch.manual_seed(self.seed)
        gen = torch.Generator().manual_seed(self.seed)
        tr, va = shadow_split(shadow_signals, self.val_fraction, self.seed)
        train, val = select(shadow_signals, tr), select(shadow_signals, va)
        y_tr = torch.as_tensor(membership(train), device=self.device)
        # standardisation from the training canvases (in chunks)
        self.mean, self.std = 0.0, 1.0
        stats = [
            self.canvases(train, np.arange(a, min(len(tr), a + 64))) for a in range(0, len(tr), 64)
        ]
        allc = torch.cat(stats)
        self.mean, self.std = float(allc.mean()), float(allc.std().clamp_min(1e-6))
        del stats, allc
        self.net = build_attack_cnn(self.model_name).to(self.device)
        opt = torch.optim.Adam(self.net.parameters(), lr=self.lr, weight_decay=self.weight_decay)
        loss_fn = nn.CrossEntropyLoss()
        best, best_state = -1.0, None
        for epoch in range(self.epochs):
            self.net.train()
            perm = torch.randperm(len(tr), generator=gen).numpy()
            total = 0.0
            for a in range(0, len(perm), self.batch_size):
                b = perm[a : a + self.batch_size]
                x = self.canvases(train, b)
                if self.augment:
                    x = dihedral(x, gen)
                loss = loss_fn(self.net(x), y_tr[b])
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                total += float(loss.detach()) * len(b)
            rec = {"epoch": epoch, "loss": total / max(1, len(tr))}
            if len(va):
                m = validation_metrics(self, val)
                rec["val_acc"] = m["acc"]
                if m["acc"] > best:
                    best, best_state, self.val_metrics = (
                        m["acc"],
                        copy.deepcopy(self.net.state_dict()),
                        m,
                    )
            self.history.append(rec)
        if best_state is not None:
            self.net.load_state_dict(best_state)
        return self

    def score(self, signals: dict) -> np.ndarray:
        """P(member) per image (N,)."""
        import torch

        if self.net is None:
            raise RuntimeError("fit the attack first")
        self.net.eval()
        n = len(signals["scores"])
        out = []
        with torch.no_grad():
            for a in range(0, n, 128):
                x = self.canvases(signals, np.arange(a, min(n, a + 128)))
                out.append(torch.softmax(self.net(x), 1)[:, 1].float().cpu())
        return torch.cat(out).numpy() if out else np.zeros(0)
