"""Privacy accounting of DP-SGD: epsilon from Opacus's accountants, and the Yu et al. bound.

:class:`PrivacyAccountant`: RDP by default (``accountant: rdp``); ``accountant: prv`` uses Opacus's
PRV accountant, and when it cannot compute (e.g. a tiny sigma makes its discretisation domain
explode) the warning says so and ``dp/epsilon`` falls back to the RDP value, which is always
tracked. ``dp/epsilon_yu`` is the bound the detection paper reports, with k = epochs completed.

The Yu et al. bound (Park & Kang, section 4.2 and Table 4). Yu et al. (2019), DP-SGD with random
reshuffling: after k epochs at noise scale sigma the model is (rho + sqrt(rho * log(1/delta)),
delta)-DP with rho = k / (2 sigma^2).

Table 4 (SSD300, batch 2, delta = 1e-5): sigma = 1e-3 for 800k iterations gives 3.87e8 and
sigma = 1e-4 for 500k iterations gives 2.42e10. With k = iterations * batch / N both figures imply
the same training-set size, N ~= 2066 images (:func:`implied_training_size`; the interval allowed
by the 3-significant-digit rounding of each figure is printed by
``python -m lightning_modules.dp.accounting``; the two intervals overlap in [2065, 2070]). That is
about 774 and 484 epochs respectively. For comparison, VOC2007 trainval has 5011 images, so the
paper's target set is smaller than half of VOC07+12 (the figure only pins N, not which images).

This bound grows linearly in k / sigma^2 and is far looser than the RDP/PRV accounting of
Poisson-sampled DP-SGD (Opacus), which the suite logs as ``dp/epsilon``; ``dp/epsilon_yu`` is logged
beside it only for comparison with the paper.
"""

from __future__ import annotations

import math

from opacus.accountants import PRVAccountant, RDPAccountant
from opacus.optimizers import DPOptimizer
from pytorch_lightning.utilities import rank_zero_warn

#: below this noise multiplier the PRV accountant is not attempted (memory blows up)
PRV_MIN_SIGMA = 0.2


class PrivacyAccountant:
    """The accountants of one DP-SGD run: RDP always, PRV when ``kind == "prv"``.

    Attributes:
        rdp: Opacus's ``RDPAccountant``; its ``history`` is [(sigma, q, steps)].
        prv: Opacus's ``PRVAccountant`` or None.
    """

    def __init__(self, kind: str = "rdp"):
        self.rdp = RDPAccountant()
        self.prv = PRVAccountant() if kind == "prv" else None
        self._prv_warned = False

    def attach(self, optimizer: DPOptimizer, sample_rate: float) -> None:
        """Count every step of ``optimizer`` at Poisson rate ``sample_rate``."""
        optimizer.attach_step_hook(self.rdp.get_optimizer_hook_fn(sample_rate))
        if self.prv is not None:
            optimizer.attach_step_hook(self.prv.get_optimizer_hook_fn(sample_rate))

    @property
    def steps(self) -> int:
        return sum(n for _, _, n in self.rdp.history)

    def epsilon(
        self,
        delta: float,
        noise_multiplier: float | None = None,
        sample_rate: float | None = None,
        epochs_done: int | None = None,
    ) -> dict[str, float]:
        """``epsilon`` (the chosen accountant's, else RDP's), ``epsilon_rdp``, ``epsilon_prv`` (when
        PRV computes) and ``epsilon_yu`` (when ``epochs_done`` and ``noise_multiplier`` are given).
        ``noise_multiplier`` and ``sample_rate`` also go into the PRV warning."""
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
                        f"{noise_multiplier}, q={sample_rate}, {self.steps} steps, "
                        f"delta={delta} ({type(exc).__name__}: {exc}). dp/epsilon reports the "
                        "RDP accountant's epsilon instead (an upper bound, looser than PRV's)."
                    )
                    self._prv_warned = True
        if epochs_done and noise_multiplier:
            out["epsilon_yu"] = yu_epsilon(noise_multiplier, epochs_done, delta)
        return out

    def state_dict(self) -> dict:
        """``rdp`` and (with PRV) ``prv`` accountant states."""
        state = {"rdp": self.rdp.state_dict()}
        if self.prv is not None:
            state["prv"] = self.prv.state_dict()
        return state

    def load_state_dict(self, state: dict) -> None:
        self.rdp.load_state_dict(state["rdp"])
        if self.prv is not None and "prv" in state:
            self.prv.load_state_dict(state["prv"])


# ---- the Yu et al. bound -----------------------------------------------------------------------
TABLE4 = (
    # (sigma, iterations, batch, delta, epsilon as printed)
    (1e-3, 800_000, 2, 1e-5, 3.87e8),
    (1e-4, 500_000, 2, 1e-5, 2.42e10),
)


def yu_rho(sigma: float, epochs: float) -> float:
    """rho = k / (2 sigma^2)."""
    if sigma <= 0:
        raise ValueError("sigma must be > 0")
    return epochs / (2.0 * sigma**2)


def yu_epsilon(sigma: float, epochs: float, delta: float) -> float:
    """epsilon = rho + sqrt(rho log(1/delta)), rho = k / (2 sigma^2) (k epochs)."""
    rho = yu_rho(sigma, epochs)
    return rho + math.sqrt(rho * math.log(1.0 / delta))


def epochs_from_iterations(iterations: int, batch: int, n: float) -> float:
    """k = iterations * batch / N."""
    return iterations * batch / n


def epochs_for_epsilon(epsilon: float, sigma: float, delta: float) -> float:
    """Invert :func:`yu_epsilon` in k: with s = sqrt(rho), s^2 + sqrt(L) s - eps = 0."""
    lg = math.log(1.0 / delta)
    s = (-math.sqrt(lg) + math.sqrt(lg + 4.0 * epsilon)) / 2.0
    return 2.0 * sigma**2 * s * s


def implied_training_size(
    epsilon: float, sigma: float, iterations: int, batch: int, delta: float
) -> float:
    """N such that ``yu_epsilon(sigma, iterations * batch / N, delta) == epsilon``."""
    return iterations * batch / epochs_for_epsilon(epsilon, sigma, delta)


def implied_size_interval(
    epsilon_printed: float, sigma: float, iterations: int, batch: int, delta: float, digits: int = 3
) -> tuple[float, float]:
    """N range consistent with ``epsilon_printed`` rounded to ``digits`` significant digits."""
    half = 0.5 * 10 ** (math.floor(math.log10(epsilon_printed)) - digits + 1)
    lo = implied_training_size(epsilon_printed + half, sigma, iterations, batch, delta)
    hi = implied_training_size(epsilon_printed - half, sigma, iterations, batch, delta)
    return lo, hi


def round_sig(x: float, digits: int = 3) -> float:
    return float(f"{x:.{digits - 1}e}")


if __name__ == "__main__":
    ranges = []
    for sigma, iters, batch, delta, eps in TABLE4:
        n = implied_training_size(eps, sigma, iters, batch, delta)
        lo, hi = implied_size_interval(eps, sigma, iters, batch, delta)
        ranges.append((lo, hi))
        k = epochs_from_iterations(iters, batch, n)
        print(
            f"sigma={sigma:g} iters={iters} batch={batch}: eps={eps:.3g} -> N={n:.1f} "
            f"(rounding interval {lo:.1f}..{hi:.1f}), k={k:.1f} epochs"
        )
    lo, hi = max(r[0] for r in ranges), min(r[1] for r in ranges)
    print(f"both figures: N in [{lo:.1f}, {hi:.1f}]")
    for sigma, iters, batch, delta, eps in TABLE4:
        got = yu_epsilon(sigma, epochs_from_iterations(iters, batch, 2066), delta)
        print(f"N=2066: sigma={sigma:g} -> {got:.4g} (paper {eps:.3g})")
