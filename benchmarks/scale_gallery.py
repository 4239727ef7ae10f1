"""The embedding-gallery stages of the scale benchmark (:mod:`benchmarks.scale`), on the finished
run's penultimate embeddings (``final_signals``' ``embedding``, one row per manifest photo):

* ``knn_gallery``: :func:`attacks.knn.cosine_topk`, the 20 nearest catalog photos of every query
  (queries: the evaluation-set photos; gallery: the target's training photos), in
  blocks of queries; units gallery x queries;
* ``population_calibration``: the known/new score of every query calibrated against reference
  whales (:func:`attacks.reference_calibrated.identity_similarity` to the catalog's identities
  and to the reference identities, then :func:`calibrated_scores` with the ``tail`` statistic);
  the references are the attack-set whales, as ``cli.py attack``'s ``reference:`` step takes
  whales outside the catalog; units queries x (catalog + reference photos).

Each stage records its time per query (``ms_per_query``) and the sizes it ran at.
"""

from __future__ import annotations

import numpy as np

from attacks.knn import cosine_topk
from attacks.reference_calibrated import calibrated_scores, identity_similarity

#: neighbours per query (the Where's Whale-do benchmark's mAP@20)
K = 20


def gallery_parts(sig: dict) -> dict[str, np.ndarray]:
    """Queries (evaluation rows), the catalog (training rows) and references (the attack set's
    non-member whales), as embeddings (rows, D) and identities (rows,)."""
    emb, ident, sets = sig["embedding"], sig["identity"], sig["set"].astype(str)
    is_query = sets == "eval"
    catalog = sets == "train"
    reference = (sets == "attack") & (sig["role"].astype(str) == "nonmember")
    return {
        "queries": emb[is_query],
        "catalog": emb[catalog],
        "catalog_identity": ident[catalog],
        "reference": emb[reference],
        "reference_identity": ident[reference],
    }


def gallery_stages(m, sig: dict) -> None:
    """Time the two gallery stages into the :class:`benchmarks.scale_meter.Meter` ``m``."""
    p = gallery_parts(sig)
    n_q, n_cat, n_ref = len(p["queries"]), len(p["catalog"]), len(p["reference"])
    with m.stage("knn_gallery", n_cat * n_q) as rec:
        sims, _ = cosine_topk(p["queries"], p["catalog"], K)
        rec.update(queries=n_q, gallery=n_cat, k=sims.shape[1])
    m.stages["knn_gallery"]["ms_per_query"] = 1e3 * m.stages["knn_gallery"]["seconds"] / n_q
    with m.stage("population_calibration", n_q * (n_cat + n_ref)) as rec:
        _, cat = identity_similarity(p["queries"], p["catalog"], p["catalog_identity"])
        _, ref = identity_similarity(p["queries"], p["reference"], p["reference_identity"])
        scores = calibrated_scores(cat, ref, "tail")
        rec.update(
            queries=n_q,
            catalog_identities=cat.shape[1],
            reference_identities=ref.shape[1],
            finite=int(np.isfinite(scores).sum()),
        )
    stage = m.stages["population_calibration"]
    stage["ms_per_query"] = 1e3 * stage["seconds"] / n_q
