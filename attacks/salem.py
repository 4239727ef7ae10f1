"""Salem et al. (ML-Leaks): an MLP 64-32-2 over the sorted top-k posteriors.

The MLP is trained on signals labelled member/non-member, either the target's own attack set
(ID1-val members + ID2 non-members) or a shadow model's (see :func:`train_shadow`), and then
scores the target's evaluation set. Pure over signal arrays: ``logits`` (N, C), or
``topk_logits`` (N, k) when only the top-k were saved (the softmax is then over those k).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from attacks.base import RegisteredAttack
from attacks.metrics import best_threshold
from attacks.registry import register
from attacks.signals import membership


@dataclass
class ShadowSettings:
    """Train the attack on a shadow model's signals instead of the target's (Figure 8).

    Args:
        enabled: fit Salem's MLP on a shadow's signals as well.
        arch: shadow architecture (None: the target's); another one gives the transfer setting.
        epochs: shadow training epochs.
        batch_size: shadow training batch size.
        seed: shadow split and training seed.
        run: a second finished run folder whose attack set is used instead of training a
            shadow here on ID2.
    """

    enabled: bool = False
    arch: str | None = None
    epochs: int = 20
    batch_size: int = 32
    seed: int = 1
    run: str | None = None


@dataclass
class SalemSettings:
    """Salem et al. (ML-Leaks) MLP, on the target and/or a shadow.

    Args:
        enabled: run the attack.
        topk: sorted posteriors fed to the MLP.
        epochs: full-batch Adam epochs of the MLP.
        lr: Adam learning rate.
        threshold: ``argmax`` (the MLP's decision) or ``fit`` (swept on its training signals).
        on_target: fit on the target's own attack set.
        shadow: fit on a shadow model's signals too.
    """

    enabled: bool = True
    topk: int = 3
    epochs: int = 300
    lr: float = 0.01
    threshold: str = "argmax"
    on_target: bool = True
    shadow: ShadowSettings = field(default_factory=ShadowSettings)

    def attack_args(self, seed: int) -> dict:
        """:class:`SalemAttack`'s keyword arguments, its MLP seeded with ``seed``."""
        return dict(
            topk=self.topk, epochs=self.epochs, lr=self.lr, threshold=self.threshold, seed=seed
        )

    def target_args(self, seed: int) -> dict | None:
        """The target step's keyword arguments; None when it is off."""
        return self.attack_args(seed) if self.enabled and self.on_target else None


def topk_posteriors(signals: dict, k: int) -> np.ndarray:
    """Sorted (descending) top-``k`` softmax probabilities (N, k), zero-padded if C < k."""
    import torch

    logits = signals["logits"] if "logits" in signals else signals["topk_logits"]
    p = torch.softmax(torch.as_tensor(np.asarray(logits, dtype=np.float32)), dim=1)
    p = torch.topk(p, min(k, p.shape[1]), dim=1).values  # sorted, descending: O(N C)
    if p.shape[1] < k:
        p = torch.cat([p, torch.zeros(p.shape[0], k - p.shape[1])], dim=1)
    return p.numpy()


def mlp(k: int, hidden: tuple[int, ...] = (64, 32)):
    """``k -> 64 -> 32 -> 2`` with ReLU (the paper's 3-layer attack MLP): a ``torch.nn.Sequential``."""
    from torch import nn

    layers: list[nn.Module] = []
    d = k
    for h in hidden:
        layers += [nn.Linear(d, h), nn.ReLU()]
        d = h
    layers.append(nn.Linear(d, 2))
    return nn.Sequential(*layers)


@register("salem", settings=SalemSettings, discriminate=True, steps=("target", "shadow"))
class SalemAttack(RegisteredAttack):
    """ML-Leaks attack model (reads ``logits`` (N, C), or ``topk_logits`` when only those were
    saved).

    Args:
        topk: number of sorted posteriors fed to the MLP (ML-Leaks uses 3).
        hidden: hidden widths (paper: 64, 32; output 2).
        epochs: full-batch Adam epochs.
        lr: Adam learning rate.
        weight_decay: Adam weight decay (0: the paper trains it in the overfit setting).
        seed: torch seed for the MLP's initialisation.
        threshold: ``argmax`` (member iff P(member) >= 0.5, the MLP's own decision) or ``fit``
            (threshold on P(member) swept on the training signals for best accuracy).
    """

    requires = ("logits",)

    def __init__(
        self,
        topk: int = 3,
        hidden: tuple[int, ...] = (64, 32),
        epochs: int = 300,
        lr: float = 1e-2,
        weight_decay: float = 0.0,
        seed: int = 0,
        threshold: str = "argmax",
    ):
        if threshold not in ("argmax", "fit"):
            raise ValueError(f"salem threshold={threshold!r}: choose 'argmax' or 'fit'")
        self.topk, self.hidden, self.epochs, self.lr = topk, tuple(hidden), epochs, lr
        self.weight_decay, self.seed, self.threshold_mode = weight_decay, seed, threshold
        self.net = None  # the attack MLP (torch.nn.Sequential) once fitted
        self._tau = 0.5

    def _features(self, signals: dict):
        import torch

        # raw posteriors in [0, 1], as in ML-Leaks: standardising with a shadow's statistics
        # blows up when the shadow is unsure (tiny spread) and saturates the MLP on the target
        return torch.as_tensor(topk_posteriors(signals, self.topk), dtype=torch.float32)

    def fit(self, attack_signals: dict) -> SalemAttack:
        """Train the MLP on member/non-member signals (attack set of the target or a shadow)."""
        import torch
        from torch import nn

        y = torch.as_tensor(membership(attack_signals))
        if len(torch.unique(y)) < 2:
            raise ValueError("salem: the attack-training signals need members and non-members")
        x = self._features(attack_signals)
        g = torch.Generator().manual_seed(self.seed)
        with torch.random.fork_rng():
            torch.manual_seed(int(torch.randint(0, 2**31, (1,), generator=g)))
            self.net = mlp(self.topk, self.hidden)
        # class weights keep an unbalanced attack set from collapsing to the majority class
        w = len(y) / (2.0 * torch.bincount(y, minlength=2).float())
        loss_fn = nn.CrossEntropyLoss(weight=w)
        opt = torch.optim.Adam(self.net.parameters(), lr=self.lr, weight_decay=self.weight_decay)
        self.net.train()
        threads = torch.get_num_threads()
        torch.set_num_threads(1)  # a tiny MLP: extra threads only spin (10x slower under load)
        try:
            for _ in range(self.epochs):
                opt.zero_grad()
                loss_fn(self.net(x), y).backward()
                opt.step()
        finally:
            torch.set_num_threads(threads)
        self.net.eval()
        if self.threshold_mode == "fit":
            self._tau, _ = best_threshold(self.score(attack_signals), y.numpy())
        return self

    def score(self, signals: dict) -> np.ndarray:
        """P(member) per sample (N,), from the MLP's softmax."""
        import torch

        if self.net is None:
            raise RuntimeError("fit the attack first")
        with torch.no_grad():
            return torch.softmax(self.net(self._features(signals)), 1)[:, 1].double().numpy()

    @property
    def score_threshold(self) -> float:
        return self._tau
