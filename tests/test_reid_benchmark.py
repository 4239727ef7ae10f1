"""The Where's Whale-do style re-identification benchmark (attacks/reid_benchmark.py): scenario
masks, the masked mAP@20 and identity top-k by hand, and the unmasked mAP unchanged."""

from __future__ import annotations

import numpy as np
import pytest

from attacks import reid_benchmark as rb
from attacks.open_set import whaledo_map

# five photos: whale A in encounters e1 (two photos), e2 (2019) and e3 (2020); whale B in its own
# encounter also named e1 (2019): a different sighting, since encounters are per whale
IDENT = np.array(["A", "A", "A", "A", "B"])
ENC = np.array(["e1", "e1", "e2", "e3", "e1"])
YEAR = np.array([2019, 2019, 2019, 2020, 2019])
T, F = True, False


def test_scenario_masks_by_hand():
    masks = {s: rb.scenario_mask(IDENT, ENC, YEAR, s) for s in rb.SCENARIOS}
    assert masks["photo"].tolist() == (~np.eye(5, dtype=bool)).tolist()
    assert masks["encounter"].tolist() == [
        [F, F, T, T, T],
        [F, F, T, T, T],
        [T, T, F, T, T],
        [T, T, T, F, T],
        [T, T, T, T, F],
    ]
    assert masks["same_year"].tolist() == [
        [F, F, T, F, T],
        [F, F, T, F, T],
        [T, T, F, F, T],
        [F, F, F, F, F],  # the only 2020 photo
        [T, T, T, F, F],
    ]
    assert masks["across_years"].tolist() == [
        [F, F, F, T, F],
        [F, F, F, T, F],
        [F, F, F, T, F],
        [T, T, T, F, T],
        [F, F, F, T, F],
    ]
    with pytest.raises(ValueError, match="choose one of"):
        rb.scenario_mask(IDENT, ENC, YEAR, "same_day")


def test_masked_map_by_hand():
    gid = np.array(["A", "B", "A", "C", "A", "B"])
    sim = np.array([[0.9, 0.8, 0.7, 0.6, 0.5, 0.4]])
    allowed = np.array([[T, T, F, T, T, T]])
    # unmasked: A B A C A B, hits at 1, 3, 5 of R = 3: (1/1 + 2/3 + 3/5) / 3 = 34/45
    assert whaledo_map(sim, ["A"], gid) == pytest.approx(34 / 45)
    # masked: photo 2 never retrieved and not a match: A B C A B, R = 2,
    # hits at 1 and 4: P(1) = 1/1, P(4) = 2/4 -> (1 + 1/2) / min(2, 20) = 3/4
    assert whaledo_map(sim, ["A"], gid, allowed=allowed) == pytest.approx(0.75)
    # limit 3: A B C, one hit at 1: (1/1) / min(2, 3) = 1/2
    assert whaledo_map(sim, ["A"], gid, limit=3, allowed=allowed) == pytest.approx(0.5)
    # a second query (C) whose only match (photo 3) is masked is left out, not scored 0
    sim2, allowed2 = np.vstack([sim, sim]), np.vstack([allowed, [T, T, T, F, T, T]])
    assert whaledo_map(sim2, ["A", "C"], gid, allowed=allowed2) == pytest.approx(0.75)
    m = rb.retrieval_metrics(sim2, ["A", "C"], gid, allowed=allowed2)
    assert m["map20"] == pytest.approx(0.75) and m["n_queries"] == 1
    assert np.isnan(whaledo_map(sim, ["C"], gid, allowed=allowed2[1:]))
    with pytest.raises(ValueError, match="shape"):
        whaledo_map(sim, ["A"], gid, allowed=allowed[:, :3])


def old_whaledo_map(similarity, query_identity, gallery_identity, limit=20):
    """attacks.open_set.whaledo_map before the ``allowed`` mask, verbatim."""
    sim = np.asarray(similarity, dtype=np.float64)
    qid = np.asarray(query_identity).astype(str)
    gid = np.asarray(gallery_identity).astype(str)
    aps = []
    for i in range(len(qid)):
        n_rel = int((gid == qid[i]).sum())
        if n_rel == 0:
            continue
        order = np.argsort(-sim[i], kind="stable")[:limit]
        rel = gid[order] == qid[i]
        prec = np.cumsum(rel) / np.arange(1, len(rel) + 1)
        aps.append(float((prec * rel).sum() / min(n_rel, limit)))
    return float(np.mean(aps)) if aps else float("nan")


def test_without_a_mask_the_map_is_unchanged():
    rng = np.random.default_rng(4)
    g = rng.integers(0, 6, 50).astype(str)
    q = rng.integers(0, 8, 15).astype(str)
    s = rng.integers(0, 10, (15, 50)).astype(float)  # many ties: gallery order decides
    for limit in (5, 20):
        ref = old_whaledo_map(s, q, g, limit)
        assert whaledo_map(s, q, g, limit) == ref
        assert whaledo_map(s, q, g, limit, allowed=np.ones((15, 50), bool)) == ref
        assert rb.retrieval_metrics(s, q, g, limit=limit)["map20"] == ref


def test_identity_top1_top5_by_hand():
    gid = np.array(["A", "B", "C", "D", "E", "F", "G", "A", "B"])
    sim = np.array(
        [
            [0.1, 0.9, 0.8, 0.7, 0.6, 0.5, 0.4, 0.95, 0.3],  # A's photo 7 first: rank 1
            [0.55, 0.9, 0.8, 0.7, 0.6, 0.5, 0.4, 0.95, 0.85],  # photo 7 masked: see below
            [0.1, 0.9, 0.8, 0.7, 0.6, 0.5, 0.4, 0.3, 0.2],  # A's best 0.3: rank 7
            [0.1, 0.9, 0.8, 0.7, 0.6, 0.5, 0.4, 0.3, 0.2],  # Z: no match, left out
        ]
    )
    allowed = np.ones(sim.shape, bool)
    allowed[1, 7] = False
    # query 1: identities by best allowed photo B .9, C .8, D .7, E .6, A .55 -> rank 5
    # (B's second photo, .85, does not count again: as photos A would be 6th)
    m = rb.retrieval_metrics(sim, ["A", "A", "A", "Z"], gid, allowed=allowed)
    assert m["n_queries"] == 3
    assert m["top1"] == pytest.approx(1 / 3) and m["top5"] == pytest.approx(2 / 3)
    empty = rb.retrieval_metrics(sim[3:], ["Z"], gid)
    assert empty["n_queries"] == 0 and np.isnan(empty["top1"]) and np.isnan(empty["map20"])


def test_benchmark_runs_every_scenario_on_the_cosine():
    emb = np.where(IDENT[:, None] == "A", [[2.0, 0.0]], [[0.0, 1.0]])  # A and B orthogonal
    out = rb.benchmark(emb, IDENT, ENC, YEAR)
    assert list(out) == list(rb.SCENARIOS)
    # B (photo 4) never has another B photo: left out everywhere; in same_year the 2020 photo
    # has no database at all. Every remaining query finds an A photo (cosine 1) first.
    assert {s: m["n_queries"] for s, m in out.items()} == {
        "photo": 4,
        "encounter": 4,
        "same_year": 3,
        "across_years": 4,
    }
    for m in out.values():
        assert m["map20"] == m["top1"] == m["top5"] == pytest.approx(1.0)
    assert list(rb.benchmark(emb, IDENT, ENC, YEAR, scenarios=("photo",))) == ["photo"]


@pytest.mark.parametrize("block", [1, 3, 7])
def test_blocked_benchmark_equals_the_whole_matrix(block):
    """Queries scored a block at a time give the figures of the whole (N, N) matrix."""
    rng = np.random.default_rng(0)
    n = 23
    ident = rng.choice(list("abcdef"), n)
    enc = rng.choice(["e1", "e2", "e3"], n)
    year = rng.choice([2018, 2019], n)
    emb = rng.normal(size=(n, 8))
    whole = rb.benchmark(emb, ident, enc, year, block=n)
    blocked = rb.benchmark(emb, ident, enc, year, block=block)
    for s in rb.SCENARIOS:
        assert blocked[s]["n_queries"] == whole[s]["n_queries"] > 0
        for key in ("map20", "top1", "top5"):
            assert blocked[s][key] == pytest.approx(whole[s][key], abs=1e-12)
    sim = rb.cosine(emb, emb)
    full = rb.retrieval_metrics(sim, ident, ident, rb.scenario_mask(ident, enc, year, "encounter"))
    assert whole["encounter"]["map20"] == pytest.approx(full["map20"], abs=1e-12)


def test_gallery_map20_in_blocks_equals_the_whole_matrix():
    rng = np.random.default_rng(1)
    q, g = rng.normal(size=(17, 6)), rng.normal(size=(29, 6))
    qid, gid = rng.choice(list("abcdefg"), 17), rng.choice(list("abcde"), 29)
    whole = whaledo_map(rb.cosine(q, g), qid, gid)
    for block in (1, 4, 17):
        assert rb.gallery_map20(q, g, qid, gid, block=block) == pytest.approx(whole, abs=1e-12)
    assert np.isnan(rb.gallery_map20(q, g, np.array(["z"] * 17), gid))
