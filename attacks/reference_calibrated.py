"""Known/new scores of a query photo calibrated against a reference population of unrelated
whales: the idea of LiRA/RMIA (compare the target's signal with what references give) applied to
the query instead of the model.

A photo of a catalogued whale is much more similar to its best catalog identity than to whales
it has never been; a photo that is merely "easy" (sharp, typical) is similar to everyone. So the
best catalog similarity is judged against the photo's similarities to ``R`` reference identities
(whales outside the catalog): :func:`calibrated_scores` with one of :data:`STATISTICS`.

Shapes: queries (N, D), gallery (M, D) with ``K`` identities, reference (M', D) with ``R``
identities; similarities are cosines in [-1, 1]; every score is (N,) float64, higher = known.
"""

from __future__ import annotations

import numpy as np
from scipy.special import log_ndtr

from attacks.base import ThresholdAttack
from attacks.open_set import aggregate
from attacks.registry import register

#: statistics of :func:`calibrated_scores`
STATISTICS = ("raw", "difference", "zscore", "rank", "tail")

#: floor on the reference spread (cosine units) so a degenerate reference gives finite scores
MIN_STD = 1e-6


def _unit_rows(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    return x / (np.linalg.norm(x, axis=1, keepdims=True) + 1e-12)


def identity_similarity(
    queries: np.ndarray, gallery: np.ndarray, gallery_identity: np.ndarray, chunk: int = 4096
) -> tuple[np.ndarray, np.ndarray]:
    """Per identity, the best cosine of each query to that identity's gallery photos.

    Args:
        queries: (N, D) embeddings; gallery: (M, D); gallery_identity: (M,) labels.
        chunk: queries per block (memory about ``chunk * M`` float64).

    Returns ``(names (K,), sims (N, K) float64)``: ``names`` the sorted distinct identities,
    ``sims[i, k]`` the max cosine of query ``i`` to a photo of ``names[k]``. Rows are
    L2-normalised inside.
    """
    names, g, starts = _grouped(gallery, gallery_identity)
    q = _unit_rows(queries)
    sims = np.empty((len(q), len(names)), dtype=np.float64)
    step = max(int(chunk), 1)
    for i in range(0, len(q) if len(names) else 0, step):
        sims[i : i + step] = _best_per_identity(q[i : i + step], g, starts)
    return names, sims


def _grouped(gallery: np.ndarray, identity: np.ndarray) -> tuple:
    """``(names (K,), unit rows (M, D) grouped by identity, start of each group (K,))``."""
    names, inv = np.unique(np.asarray(identity), return_inverse=True)
    order = np.argsort(inv, kind="stable")
    starts = np.r_[0, np.flatnonzero(np.diff(inv[order])) + 1] if len(order) else np.array([], int)
    return names, _unit_rows(gallery)[order], starts


def _best_per_identity(unit_q: np.ndarray, g: np.ndarray, starts: np.ndarray) -> np.ndarray:
    """(n, K) best cosine of unit queries (n, D) per identity group of ``g`` (M, D)."""
    return np.maximum.reduceat(unit_q @ g.T, starts, axis=1)


def reference_calibrated_scores(
    queries: np.ndarray,
    catalog: tuple[np.ndarray, np.ndarray],
    reference: tuple[np.ndarray, np.ndarray],
    statistic: str,
    chunk: int = 4096,
) -> np.ndarray:
    """:func:`calibrated_scores` (N,) float64 of the queries (N, D) against the ``catalog`` and
    the ``reference`` whales, each ``(embeddings (M, D), identities (M,))``, worked out ``chunk``
    queries at a time: the scores of :func:`identity_similarity` on all queries (bit for bit at
    the same ``chunk``; the matrix products of other block sizes may round differently in the
    last bits), with memory about ``chunk x (M + M')`` float64 instead of ``N x (K + R)``."""
    cat, ref = _grouped(*catalog), _grouped(*reference)
    if len(cat[0]) == 0 or (len(ref[0]) == 0 and statistic != "raw"):
        raise ValueError(
            f"calibrated_scores needs K >= 1 and R >= 1, got {len(cat[0])}, {len(ref[0])}"
        )
    q = _unit_rows(queries)
    out = np.empty(len(q), dtype=np.float64)
    step = max(int(chunk), 1)
    for i in range(0, len(q), step):
        block = q[i : i + step]
        out[i : i + step] = calibrated_scores(
            _best_per_identity(block, *cat[1:]), _best_per_identity(block, *ref[1:]), statistic
        )
    return out


def _log1mexp(a: np.ndarray) -> np.ndarray:
    """``log(1 - exp(a))`` for ``a <= 0``, accurate on both sides of ``-log 2`` (Maechler)."""
    out = np.empty_like(a)
    near = a > -np.log(2.0)
    with np.errstate(divide="ignore"):
        out[near] = np.log(-np.expm1(a[near]))
    out[~near] = np.log1p(-np.exp(a[~near]))
    return out


def tail_score(z: np.ndarray, k: int) -> np.ndarray:
    """``-log P(max of k standard normals >= z) = -log(1 - Phi(z)^k)`` (N,) float64, computed in
    log space: finite and increasing in ``z`` (``~ exp(k log Phi(z))`` far below, ``~ -log k -
    log(1 - Phi(z))`` far above, where ``Phi(z)^k`` rounds to 1)."""
    z = np.asarray(z, dtype=np.float64)
    log_cdf_max = k * log_ndtr(z)  # log P(max of k draws < z)
    log_sf = log_ndtr(-z)  # log P(one draw >= z)
    far = log_sf < -700.0  # 1 - Phi(z)^k = k (1 - Phi(z)) to double precision
    out = np.empty_like(z)
    out[far] = -(np.log(k) + log_sf[far])
    out[~far] = -_log1mexp(log_cdf_max[~far])
    return out


def calibrated_scores(
    catalog_sims: np.ndarray, reference_sims: np.ndarray, statistic: str
) -> np.ndarray:
    """Known/new score (N,) float64, higher = known, of ``best = catalog_sims.max(1)``.

    Args:
        catalog_sims: (N, K) similarity of each query to each catalog identity.
        reference_sims: (N, R) similarity of each query to each reference identity.
        statistic: ``raw`` (best); ``difference`` (best - best reference); ``zscore``
            ((best - mean_r) / max(std_r, 1e-6), population std over the R references);
            ``rank`` (share of references below best, ties count 1/2: RMIA); ``tail``
            (``-log(1 - Phi(z)^K)``: how unlikely a best of ``K`` unrelated whales drawn from
            Normal(mean_r, std_r) reaches best).
    """
    if statistic not in STATISTICS:
        raise ValueError(f"statistic {statistic!r}: choose one of {', '.join(STATISTICS)}")
    cat = np.asarray(catalog_sims, dtype=np.float64)
    ref = np.asarray(reference_sims, dtype=np.float64)
    if cat.ndim != 2 or ref.ndim != 2 or len(cat) != len(ref):
        raise ValueError(
            f"catalog_sims {cat.shape} and reference_sims {ref.shape}: need (N, K)/(N, R)"
        )
    if cat.shape[1] == 0 or (ref.shape[1] == 0 and statistic != "raw"):
        raise ValueError(f"calibrated_scores needs K >= 1 and R >= 1, got {cat.shape}, {ref.shape}")
    best = cat.max(1)
    if statistic == "raw":
        return best
    if statistic == "difference":
        return best - ref.max(1)
    if statistic == "rank":
        below = (ref < best[:, None]).sum(1) + 0.5 * (ref == best[:, None]).sum(1)
        return below / ref.shape[1]
    z = (best - ref.mean(1)) / np.maximum(ref.std(1), MIN_STD)
    return z if statistic == "zscore" else tail_score(z, cat.shape[1])


def encounter_embeddings(
    embeddings: np.ndarray, groups: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """One embedding per encounter: ``(names (G,), (G, D))``, the mean of the L2-normalised rows
    of each group, normalised again (``names`` sorted as :func:`attacks.open_set.aggregate`)."""
    return aggregate(embeddings, groups, "mean_embedding")


@register("reference_calibrated", steps=("reference",))
class ReferenceCalibrated(ThresholdAttack):
    """Score = :func:`calibrated_scores` of a photo's embedding: its best catalog identity
    (gallery = the target's training photos) judged against reference whales outside it."""

    requires = ("embedding",)

    def __init__(
        self,
        gallery: np.ndarray | None = None,
        gallery_identity: np.ndarray | None = None,
        reference: np.ndarray | None = None,
        reference_identity: np.ndarray | None = None,
        statistic: str = "zscore",
    ):
        """Embeddings (M, D) and (M', D); an identity of None makes each photo its own."""
        if statistic not in STATISTICS:
            raise ValueError(f"statistic {statistic!r}: choose one of {', '.join(STATISTICS)}")
        self.statistic = statistic
        self.gallery, self.gallery_identity = _with_identity(gallery, gallery_identity)
        self.reference, self.reference_identity = _with_identity(reference, reference_identity)

    @classmethod
    def for_run(cls, run_signals: dict, **settings):
        """Gallery = the run's ``train`` rows (identity: ``label``); reference = its ``reference``
        rows (identity: ``identity``, else ``label``), unless given in ``settings``."""
        split = np.asarray(run_signals["split"]).astype(str)
        emb = np.asarray(run_signals["embedding"])
        if settings.get("gallery") is None:
            train = split == "train"
            settings["gallery"] = emb[train]
            settings["gallery_identity"] = np.asarray(run_signals["label"])[train]
        if settings.get("reference") is None:
            ref = split == "reference"
            if not ref.any():
                raise ValueError(
                    "reference_calibrated needs reference rows (split == 'reference') in the "
                    "run's signals or reference= embeddings of whales outside the catalog"
                )
            field = "identity" if "identity" in run_signals else "label"
            settings["reference"] = emb[ref]
            settings["reference_identity"] = np.asarray(run_signals[field])[ref]
        return cls(**settings)

    def raw_score(self, signals: dict) -> np.ndarray:
        if self.gallery is None or len(self.gallery) == 0:
            raise ValueError("reference_calibrated needs a gallery of training-photo embeddings")
        if self.reference is None or len(self.reference) == 0:
            raise ValueError("reference_calibrated needs reference embeddings (reference=)")
        return reference_calibrated_scores(
            np.asarray(signals["embedding"]),
            (self.gallery, self.gallery_identity),
            (self.reference, self.reference_identity),
            self.statistic,
        )


def _with_identity(emb: np.ndarray | None, identity: np.ndarray | None):
    """``(embeddings (M, D) float32, identity (M,))``; each row its own identity if None."""
    if emb is None:
        return None, None
    emb = np.asarray(emb, dtype=np.float32)
    ident = np.arange(len(emb)) if identity is None else np.asarray(identity)
    if len(ident) != len(emb):
        raise ValueError(f"{len(emb)} embeddings but {len(ident)} identities")
    return emb, ident
