"""Label-only boundary search (Choquette-Choo et al.): the L2 distance from each sample to the
target's decision boundary, estimated with HopSkipJump from predicted labels only.

Two estimators of the same quantity, both selectable (``method: ours | art``):

* :func:`hsj_distances`: our batched torch HopSkipJump. It follows ART's HopSkipJump step by
  step (uniform-noise start + binary search, per-iteration boundary binary search, Monte-Carlo
  gradient sign estimate with ``init_eval * sqrt(t+1)`` probes, geometric step search) but runs
  every sample at once on the model's device, and counts the queries each sample used.
* :func:`experiments.side_models.boundary_art.art_distances`: ART's ``LabelOnlyDecisionBoundary`` /
  ``HopSkipJump`` (the reference), in its own module.

Identity-level variant: non-member whales have no label in the target's label space, so the
reference label is the target's own prediction (ART's ``y`` = predicted label); a sample's
distance is its distance to the nearest point with another predicted label.

Distances are measured in the model's input space (normalised tensors, clip range
``[-2, 2]`` for the suite's mean 0.5 / std 0.25), in L2 units of that space. The pure attack
that thresholds them is :class:`attacks.label_only.LabelOnlyAttack`.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn

#: input range of the suite's normalised images: (0 - 0.5) / 0.25 .. (1 - 0.5) / 0.25
CLIP = (-2.0, 2.0)


class _Oracle:
    """Label oracle ``x -> argmax model(x)`` over chunks of ``chunk`` images.

    ``channels_last``: image batches (4-d) go to the model in channels-last memory order (the
    same values; convolutions run about 1.25x faster on CPU with it)."""

    def __init__(self, model: nn.Module, chunk: int, channels_last: bool = True):
        self.model, self.chunk = model, chunk
        self.fmt = torch.channels_last if channels_last else torch.contiguous_format

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        out = torch.empty(len(x), dtype=torch.long, device=x.device)
        for i in range(0, len(x), self.chunk):
            xb = x[i : i + self.chunk]
            if xb.dim() == 4:
                xb = xb.contiguous(memory_format=self.fmt)
            out[i : i + self.chunk] = self.model(xb).argmax(1)
        return out


class _LabelSearch:
    """What the HopSkipJump steps share: the inputs ``x`` (N, ...), their predicted labels ``y``
    (N,), the clip range and the per-sample query counts ``queries`` (N,) (one for ``y``)."""

    def __init__(
        self,
        model: nn.Module,
        x: torch.Tensor,
        chunk: int,
        clip: tuple[float, float],
        channels_last: bool = True,
    ):
        self.oracle = _Oracle(model, chunk, channels_last)
        self.x, self.chunk = x, chunk
        self.lo, self.hi = clip
        self.shape = x.shape[1:]
        self.bdims = [1] * len(self.shape)  # broadcast a (n,) vector over a sample's dims
        self.queries = torch.zeros(len(x), dtype=torch.long, device=x.device)
        self.y = self.oracle(x)
        self.queries += 1

    def is_adv(
        self, samples: torch.Tensor, idx: torch.Tensor, *, clip: bool = True, per: int = 1
    ) -> torch.Tensor:
        """(M,) bool: does clipped ``samples[m]`` change the label of sample ``idx[m // per]``?

        ``samples`` is a scratch tensor: it is clipped in place (``clip=False``: the caller
        already did). ``per``: consecutive samples that belong to one ``idx`` entry (probes)."""
        self.queries.index_add_(0, idx, torch.full_like(idx, per))
        if clip:
            samples.clamp_(self.lo, self.hi)
        y = self.y[idx] if per == 1 else self.y[idx].repeat_interleave(per)
        return self.oracle(samples) != y

    def binary_search(self, cur: torch.Tensor, idx: torch.Tensor, thr: float) -> torch.Tensor:
        """Move each ``cur`` (adversarial for ``x[idx]``) towards ``x[idx]`` along the segment
        until it is within ``thr`` (fraction of the segment) of the boundary.

        Every sample starts from the bracket [0, 1] and halves it each step, so all of them need
        the same number of steps, ``ceil(log2(1 / thr))``: the loop runs on the whole batch
        with no per-step test of which samples are done (no host sync, no gathers)."""
        x0 = self.x[idx]
        low = torch.zeros(len(idx), device=x0.device)
        up = torch.ones(len(idx), device=x0.device)
        width = 1.0
        while width > thr:
            mid = (up + low) / 2
            a = mid.view(-1, *self.bdims)
            sat = self.is_adv((1 - a) * x0 + a * cur, idx)
            up = torch.where(sat, mid, up)
            low = torch.where(sat, low, mid)
            width /= 2
        a = up.view(-1, *self.bdims)
        return (1 - a) * x0 + a * cur


def _random_start(
    s: _LabelSearch, init_size: int, gen: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """Uniform-noise images until the label changes (up to ``init_size`` tries per sample), then
    a binary search to the boundary. Returns the start points (N, ...) (``x`` where none was
    found) and ``found`` (N,) bool."""
    x = s.x
    cur = x.clone()
    found = torch.zeros(len(x), dtype=torch.bool, device=x.device)
    for _ in range(init_size):
        todo = (~found).nonzero().squeeze(1)
        if len(todo) == 0:
            break
        rnd = torch.rand((len(todo), *s.shape), generator=gen, device=x.device)
        rnd = rnd * (s.hi - s.lo) + s.lo
        ok = s.is_adv(rnd, todo)  # in range already: clipping is a no-op
        cur[todo[ok]] = rnd[ok]
        found[todo[ok]] = True
    ok_idx = found.nonzero().squeeze(1)
    if len(ok_idx):
        cur[ok_idx] = s.binary_search(cur[ok_idx], ok_idx, 0.001)
    return cur, found


def _gradient_direction(
    s: _LabelSearch,
    ca: torch.Tensor,
    idx: torch.Tensor,
    delta: torch.Tensor,
    num_eval: int,
    gen: torch.Generator,
) -> torch.Tensor:
    """Unit gradient-direction estimates (M, ...) at the boundary points ``ca`` of samples
    ``idx`` from ``num_eval`` probes each at radius ``delta`` (M,), in chunks of samples.

    The directions are uniform on the sphere, drawn once and shared by the samples: each
    sample's probes are still i.i.d. as HopSkipJump asks (samples never interact), and drawing
    (num_eval, d) normals instead of (n, num_eval, d) was a quarter of the time.

    HopSkipJump's estimate is the mean of ``w_k (p_k - c) / delta`` over the clipped probes
    ``p_k``; it is normalised afterwards, so the positive factor ``1 / (num_eval delta)`` drops
    out and the direction is ``sum_k w_k p_k - c sum_k w_k``: one batched matrix product over
    the probes instead of materialising the (M, num_eval, d) noise tensor."""
    bdims = s.bdims
    unit = torch.randn((num_eval, *s.shape), generator=gen, device=ca.device)
    unit = unit / unit.flatten(1).norm(dim=1).view(num_eval, *bdims)
    unit = unit.flatten(1)
    update = torch.empty_like(ca)
    per = max(1, s.chunk // num_eval)
    for start in range(0, len(idx), per):
        sl = slice(start, start + per)
        c, ii = ca[sl].flatten(1), idx[sl]
        probes = torch.addcmul(c[:, None], delta[sl].view(-1, 1, 1), unit[None])
        probes.clamp_(s.lo, s.hi)
        sat = s.is_adv(probes.view(-1, *s.shape), ii, clip=False, per=num_eval)
        f = (2 * sat.float() - 1).view(len(c), num_eval)
        fmean = f.mean(1, keepdim=True)
        # ART's rule: all-agree probes use the plain mean direction, else baseline-subtracted
        sign = torch.where(fmean == -1, -1.0, 1.0)
        w = torch.where(fmean.abs() == 1, sign.expand_as(f), f - fmean)
        grad = torch.bmm(w[:, None], probes).squeeze(1) - w.sum(1, keepdim=True) * c
        norm = grad.norm(dim=1, keepdim=True).clamp_min(1e-30)
        update[sl] = (grad / norm).view(-1, *s.shape)
    return update


def _step_search(
    s: _LabelSearch, ca: torch.Tensor, idx: torch.Tensor, update: torch.Tensor, t: int
) -> torch.Tensor:
    """Geometric step-size search along ``update`` from the boundary points ``ca`` (iteration
    ``t``): the step starts at ``2 |x - ca| / sqrt(t + 1)`` and halves until the label still
    differs (at most 60 halvings). Returns the new points (M, ...); a sample whose search never
    succeeded stays on its boundary point."""
    bdims = s.bdims
    dist = (s.x[idx] - ca).flatten(1).norm(dim=1)
    eps = 2.0 * dist / math.sqrt(t + 1)
    cand = ca.clone()
    pending = torch.ones(len(idx), dtype=torch.bool, device=ca.device)
    for _ in range(60):
        p = pending.nonzero().squeeze(1)
        if len(p) == 0:
            break
        eps[p] = eps[p] / 2
        trial = ca[p] + eps[p].view(-1, *bdims) * update[p]
        ok = s.is_adv(trial, idx[p])
        cand[p[ok]] = trial[ok]
        pending[p[ok]] = False
    return torch.where(pending.view(-1, *bdims), ca, cand.clamp(s.lo, s.hi))


def _hsj_iteration(
    s: _LabelSearch,
    cur: torch.Tensor,
    idx: torch.Tensor,
    t: int,
    theta: float,
    num_eval: int,
    gen: torch.Generator,
) -> None:
    """HopSkipJump iteration ``t`` for the samples ``idx``: boundary binary search, gradient
    estimate, step search; updates ``cur[idx]`` in place."""
    xa, ca = s.x[idx], cur[idx]
    if t == 0:
        delta = torch.full((len(idx),), 0.1 * (s.hi - s.lo), device=ca.device)
    else:
        delta = math.sqrt(math.prod(s.shape)) * theta * (xa - ca).flatten(1).norm(dim=1)
    ca = s.binary_search(ca, idx, theta)
    update = _gradient_direction(s, ca, idx, delta, num_eval, gen)
    cur[idx] = _step_search(s, ca, idx, update, t)


@torch.inference_mode()
def hsj_distances(
    model: nn.Module,
    x: torch.Tensor,
    *,
    max_iter: int = 50,
    init_eval: int = 100,
    max_eval: int = 10000,
    init_size: int = 100,
    max_queries: int | None = None,
    clip: tuple[float, float] = CLIP,
    chunk: int = 1024,
    seed: int = 0,
    channels_last: bool = True,
) -> dict[str, np.ndarray]:
    """Batched untargeted L2 HopSkipJump boundary distance for every sample of ``x``.

    Args:
        model: classifier returning logits (B, C); run on ``x.device``, eval mode.
        x: inputs (N, ...) float32, already normalised.
        max_iter, init_eval, max_eval, init_size: as in ART's ``HopSkipJump``.
        max_queries: per-sample cap; a sample stops iterating once it has used this many
            queries (checked before each iteration, so one iteration may overshoot).
        clip: valid input range.
        chunk: images per forward pass.
        seed: torch seed for the random start and probes.
        channels_last: feed image batches to the model in channels-last memory order.

    Returns:
        ``distance`` (N,) float64 (0 where no adversarial start was found, as in ART),
        ``queries`` (N,) int64 model queries per sample, ``pred`` (N,) predicted labels,
        ``success`` (N,) bool, ``iterations`` (N,) iterations run.
    """
    was_training = model.training
    model.eval()
    gen = torch.Generator(device=x.device).manual_seed(seed)
    s = _LabelSearch(model, x, chunk, clip, channels_last)
    theta = 0.01 / math.sqrt(math.prod(s.shape))
    cur, found = _random_start(s, init_size, gen)
    iters = torch.zeros(len(x), dtype=torch.long, device=x.device)
    for t in range(max_iter):
        active = found.clone()
        if max_queries is not None:
            active &= s.queries < max_queries
        idx = active.nonzero().squeeze(1)
        if len(idx) == 0:
            break
        num_eval = min(int(init_eval * math.sqrt(t + 1)), max_eval)
        _hsj_iteration(s, cur, idx, t, theta, num_eval, gen)
        iters[idx] += 1
    dist = (cur - x).flatten(1).norm(dim=1)
    dist[~found] = 0.0
    model.train(was_training)
    return {
        "distance": dist.double().cpu().numpy(),
        "queries": s.queries.cpu().numpy(),
        "pred": s.y.cpu().numpy(),
        "success": found.cpu().numpy(),
        "iterations": iters.cpu().numpy(),
    }
