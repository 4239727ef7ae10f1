"""LiRA, the likelihood-ratio attack of Carlini et al. (IEEE S&P 2022), online and offline.

Signals (see ``docs/calibrated_attacks.md``), one row per sample, ``A`` augmented queries
(identity, flip, shifts) and ``K`` reference models:

``cal_phi``  f64 (N, A)     the target's logit-scaled confidence ``phi = log(p / (1 - p))``
``ref_phi``  f64 (N, K, A)  the same statistic under each reference model
``ref_in``   bool (N, K)    True where reference ``k`` trained on the row (IN), else OUT

Online: per row and augmentation, Gaussians fitted to the IN and the OUT reference values;
score = mean over augmentations of ``log N(phi; mu_in, s_in) - log N(phi; mu_out, s_out)``.
Offline: OUT references only, one-sided; score = mean over augmentations of
``log Phi((phi - mu_out) / s_out)`` (``Phi`` the standard normal CDF). Higher = member.

With few references the per-row variance is noisy: ``variance="global"`` pools one standard
deviation per side and augmentation over all rows (``auto``: global below 16 references of a
side). A row with no reference of a side borrows the global mean of that side shifted by the
mean IN - OUT gap of the rows that have both (or the side's global mean if none has both).
"""

from __future__ import annotations

import numpy as np
from scipy.special import logsumexp

from attacks.base import ThresholdAttack
from attacks.registry import register

#: below this many references of a side, ``variance="auto"`` pools the variance
AUTO_GLOBAL_BELOW = 16
_EPS = 1e-6


def logit_confidence(
    logits: np.ndarray, label: np.ndarray | None = None, chunk: int = 2048
) -> np.ndarray:
    """``phi = log(p_y / (1 - p_y))`` from logits (..., C), computed stably as
    ``z_y - logsumexp_{j != y} z_j``; ``label`` (...) int, or None for the predicted class
    (label-free, the max softmax). Returns (...) float64.

    Rows (the first axis) go ``chunk`` at a time: the float64 work arrays stay ``chunk x ... x
    C`` however many rows there are (at Happywhale scale the logits are rows x 5,000 classes)."""
    z_all = np.asarray(logits)
    if z_all.ndim < 2:
        return _confidence(z_all, label)
    lab = None if label is None else np.broadcast_to(np.asarray(label), z_all.shape[:-1])
    out = np.empty(z_all.shape[:-1], dtype=np.float64)
    step = max(int(chunk), 1)
    for s in range(0, len(z_all), step):
        part = slice(s, s + step)
        out[part] = _confidence(z_all[part], None if lab is None else lab[part])
    return out


def _confidence(logits: np.ndarray, label) -> np.ndarray:
    """:func:`logit_confidence` of one block of rows."""
    z = np.asarray(logits, dtype=np.float64)
    y = z.argmax(-1) if label is None else np.asarray(label, dtype=np.int64)
    y = np.broadcast_to(y, z.shape[:-1])
    zy = np.take_along_axis(z, y[..., None], -1)[..., 0]
    others = z.copy()
    np.put_along_axis(others, y[..., None], -np.inf, -1)
    return zy - logsumexp(others, axis=-1)


def _side_stats(ref_phi: np.ndarray, mask: np.ndarray) -> tuple[np.ndarray, np.ndarray, int]:
    """Per-row mean (N, A), per-row std (N, A) (NaN where < 2 values) and the largest count
    of references of the side, over references where ``mask`` (N, K) is True."""
    w = mask[:, :, None].astype(np.float64)
    n = w.sum(1)
    with np.errstate(invalid="ignore", divide="ignore"):
        mu = (ref_phi * w).sum(1) / n
        var = (((ref_phi - np.nan_to_num(mu)[:, None]) ** 2) * w).sum(1) / (n - 1)
    return mu, np.sqrt(np.where(n >= 2, var, np.nan)), int(mask.sum(1).max(initial=0))


def _global_std(ref_phi: np.ndarray, mask: np.ndarray, mu: np.ndarray) -> np.ndarray:
    """Pooled std (A,) of the side: residuals from each row's mean, ``sum r^2 / (n_obs - n_rows)``
    over rows with >= 2 values; the plain std of all values when no row has 2."""
    w = mask[:, :, None].astype(np.float64)
    n = mask.sum(1)
    rows = n >= 2
    if rows.any():
        r2 = (((ref_phi - np.nan_to_num(mu)[:, None]) ** 2) * w)[rows].sum((0, 1))
        return np.sqrt(r2 / (n[rows].sum() - rows.sum()))
    vals = ref_phi[mask]  # (n_obs, A)
    return vals.std(0) if len(vals) > 1 else np.ones(ref_phi.shape[2])


def gaussian_fits(ref_phi, ref_in, variance: str = "auto") -> dict[str, np.ndarray]:
    """Means and stds (N, A) of the IN and OUT reference values of every row.

    Rows lacking a side get that side's fallback (module docstring); the std is per row, or
    pooled per augmentation (``variance`` = ``per_example`` | ``global`` | ``auto``)."""
    ref_phi = np.asarray(ref_phi, dtype=np.float64)
    ref_in = np.asarray(ref_in, dtype=bool)
    fits, mus = {}, {}
    for side, mask in (("in", ref_in), ("out", ~ref_in)):
        mu, sd, kmax = _side_stats(ref_phi, mask)
        pooled = _global_std(ref_phi, mask, mu) if mask.any() else np.ones(ref_phi.shape[2])
        use_global = variance == "global" or (variance == "auto" and kmax < AUTO_GLOBAL_BELOW)
        sd = np.broadcast_to(pooled, mu.shape).copy() if use_global else sd
        sd = np.where(np.isfinite(sd), sd, pooled[None, :])
        mus[side], fits[f"sd_{side}"] = mu, np.maximum(sd, _EPS)
    both = np.isfinite(mus["in"]).all(1) & np.isfinite(mus["out"]).all(1)
    gap = (mus["in"][both] - mus["out"][both]).mean(0) if both.any() else np.zeros(mu.shape[1])
    for side, sign in (("in", 1.0), ("out", -1.0)):
        other = mus["out" if side == "in" else "in"]
        own_mean = np.nanmean(mus[side], 0) if np.isfinite(mus[side]).any() else np.zeros_like(gap)
        borrowed = np.where(np.isfinite(other), other + sign * gap, own_mean[None, :])
        if not both.any():
            borrowed = np.broadcast_to(own_mean, mus[side].shape)
        fits[f"mu_{side}"] = np.where(np.isfinite(mus[side]), mus[side], borrowed)
    return fits


def lira_online(cal_phi, ref_phi, ref_in, variance: str = "auto") -> np.ndarray:
    """Online LiRA score (N,): mean over augmentations of the Gaussian log-likelihood ratio
    ``log N(phi; mu_in, sd_in) - log N(phi; mu_out, sd_out)``."""
    from scipy.stats import norm  # slow to import: only when scoring

    phi = np.asarray(cal_phi, dtype=np.float64)
    f = gaussian_fits(ref_phi, ref_in, variance)
    ll_in = norm.logpdf(phi, f["mu_in"], f["sd_in"])
    ll_out = norm.logpdf(phi, f["mu_out"], f["sd_out"])
    return (ll_in - ll_out).mean(1)


def lira_offline(cal_phi, ref_phi, ref_in, variance: str = "auto") -> np.ndarray:
    """Offline LiRA score (N,): mean over augmentations of ``log Phi((phi - mu_out) / sd_out)``,
    the one-sided test that the target's confidence exceeds the OUT references'."""
    from scipy.stats import norm  # slow to import: only when scoring

    phi = np.asarray(cal_phi, dtype=np.float64)
    f = gaussian_fits(ref_phi, np.asarray(ref_in, dtype=bool), variance)
    return norm.logcdf(phi, f["mu_out"], f["sd_out"]).mean(1)


class _LiRA(ThresholdAttack):
    requires = ("cal_phi", "ref_phi", "ref_in")

    def __init__(self, variance: str = "auto", max_refs: int | None = None):
        if variance not in ("auto", "global", "per_example"):
            raise ValueError(f"variance={variance!r}: use auto, global or per_example")
        self.variance, self.max_refs = variance, max_refs

    def _refs(self, signals: dict) -> tuple[np.ndarray, np.ndarray]:
        k = self.max_refs
        return signals["ref_phi"][:, :k], signals["ref_in"][:, :k]


@register("lira_online", steps=("calibrated",))
class LiRAOnline(_LiRA):
    """Online LiRA (IN and OUT references). Args: variance: auto | global | per_example;
    max_refs: use only the first this many references (None: all)."""

    def raw_score(self, signals: dict) -> np.ndarray:
        return lira_online(signals["cal_phi"], *self._refs(signals), self.variance)


@register("lira_offline", steps=("calibrated",))
class LiRAOffline(_LiRA):
    """Offline LiRA (OUT references only, one-sided). Args as :class:`LiRAOnline`."""

    def raw_score(self, signals: dict) -> np.ndarray:
        return lira_offline(signals["cal_phi"], *self._refs(signals), self.variance)
