"""Concept spaces: groups, the ordered contrastive loss, FAISS partitions, artifacts, stacking."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from explainers.estimators.crossfit import cross_fit, fit_weights, group_folds
from explainers.matching.groups import build_groups
from explainers.matching.index import PartitionIndex, exact_topk, recall_at_k
from explainers.matching.loss import (
    PAPER_LAMBDAS,
    batch_loss,
    ordered_contrastive_loss,
    padded_groups,
    padded_loss,
)

CONCEPTS = ["food", "service"]
# Hand-made corpus: three origins; index -> (origin, food, service).
CORPUS = [
    ("o1", "Positive", "Positive"),  # 0 query
    ("o1", "Negative", "Positive"),  # 1 T of 0 on food
    ("o1", "Positive", "Negative"),  # 2 C of 0 on food
    ("o1", "Negative", "Negative"),  # 3 both changed: no group of 0 (same origin)
    ("o2", "Negative", "Positive"),  # 4 A of 0: other origin, same service, food differs
    ("o2", "Positive", "Positive"),  # 5 same labels as 0 but other origin: N
    ("o3", "unknown", "Negative"),  # 6 N
]
LABELS = [{"food": f, "service": s} for _, f, s in CORPUS]
ORIGINS = [o for o, _, _ in CORPUS]


def test_groups_on_hand_made_corpus() -> None:
    groups = {g.query: g for g in build_groups(LABELS, ORIGINS, "food", CONCEPTS, seed=0)}
    g0 = groups[0]
    assert g0.T.tolist() == [1]
    assert g0.C.tolist() == [2]
    assert g0.A.tolist() == [4]
    assert sorted(g0.N.tolist()) == [5, 6]
    g4 = groups[4]  # origin o2: its edit 5 is its true counterfactual
    assert g4.T.tolist() == [5]
    assert g4.C.tolist() == []
    assert g4.A.tolist() == [0]
    assert sorted(g4.N.tolist()) == [1, 2, 3, 6]
    assert 6 not in groups  # no same-origin counterfactual: no training query


def test_groups_on_service_and_subsampling() -> None:
    groups = {g.query: g for g in build_groups(LABELS, ORIGINS, "service", CONCEPTS)}
    assert groups[0].T.tolist() == [2] and groups[0].C.tolist() == [1]
    small = build_groups(LABELS, ORIGINS, "food", CONCEPTS, max_n=1, seed=3)
    assert all(len(g.N) <= 1 for g in small)
    with pytest.raises(ValueError):
        build_groups(LABELS, ORIGINS, "noise", CONCEPTS)


def test_loss_on_known_vectors() -> None:
    e1, e2 = torch.tensor([1.0, 0.0]), torch.tensor([0.0, 1.0])
    tau = 0.1
    # S_T = exp(1/tau), S_C = exp(0) -> -log(S_T / (S_T + S_C)) = log(1 + exp(-1/tau))
    loss = ordered_contrastive_loss(e1, {"T": e1[None], "C": e2[None]}, tau=tau, lambdas={"TC": 1.0})
    assert float(loss) == pytest.approx(math.log1p(math.exp(-10.0)), rel=1e-5)
    # Group scores are means: S_T = (e^10 + 1) / 2, S_C = 1.
    two = torch.stack([e1, e2])
    loss = ordered_contrastive_loss(e1, {"T": two, "C": e2[None]}, tau=tau, lambdas={"TC": 1.0})
    s_t = (math.exp(10) + 1) / 2
    assert float(loss) == pytest.approx(-math.log(s_t / (s_t + 1)), rel=1e-5)
    # Wrong order costs: C closer than T.
    bad = ordered_contrastive_loss(e1, {"T": e2[None], "C": e1[None]}, tau=tau, lambdas={"TC": 1.0})
    assert float(bad) == pytest.approx(10.0 + math.log1p(math.exp(-10.0)), rel=1e-5)
    # Paper lambdas weigh (A, C) too; an empty group drops its terms.
    both = ordered_contrastive_loss(
        e1, {"T": e1[None], "C": e2[None], "A": e2[None], "N": e1[None][:0]}, tau=tau, lambdas=PAPER_LAMBDAS
    )
    expect = 2 * math.log1p(math.exp(-10.0)) + math.log(2)  # TC + TA + AC (S_A = S_C)
    assert float(both) == pytest.approx(expect, rel=1e-5)


def test_padded_loss_equals_per_query_loss() -> None:
    torch.manual_seed(0)
    table = torch.randn(12, 5)
    groups = [{"T": [1, 2], "C": [3], "A": [4, 5, 6], "N": [7]}, {"T": [8], "C": [], "A": [9], "N": [10, 11]}]
    queries = table[[0, 7]]
    per = batch_loss(
        queries,
        table,
        [{g: torch.tensor(v, dtype=torch.long) for g, v in x.items()} for x in groups],
        tau=0.2,
        lambdas={"TC": 1.0, "TA": 0.5, "AN": 2.0},
    )
    vec = padded_loss(
        queries, table, padded_groups(groups), tau=0.2, lambdas={"TC": 1.0, "TA": 0.5, "AN": 2.0}
    )
    assert float(vec) == pytest.approx(float(per), rel=1e-5)


def _unit(rng: np.random.Generator, n: int, d: int) -> np.ndarray:
    x = rng.normal(size=(n, d)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def test_index_exact_search_filter_threshold_and_round_trip(tmp_path) -> None:
    rng = np.random.default_rng(0)
    x = _unit(rng, 50, 8)
    idx = PartitionIndex.build(x)
    assert idx.kind == "flat"
    hits = idx.search(x[3], 5)
    assert hits.ids[0] == 3 and hits.scores[0] == pytest.approx(1.0, abs=1e-5)
    assert list(hits.ids) == list(exact_topk(x, x[3:4], 5)[0])
    no_dup = idx.search(x[3], 5, exclude_above=0.999)
    assert 3 not in no_dup.ids and len(no_dup.ids) == 5
    allowed = np.array([1, 7, 9, 20])
    only = idx.search(x[3], 10, allowed=allowed)
    assert set(only.ids) == set(allowed.tolist())
    assert list(only.scores) == sorted(only.scores, reverse=True)
    strict = idx.search(x[3], 10, threshold=0.5)
    assert all(s >= 0.5 for s in strict.scores) and 3 in strict.ids
    assert len(idx.search(x[3], 5, allowed=np.array([], dtype=np.int64)).ids) == 0
    idx.save(tmp_path / "p.faiss")
    back = PartitionIndex.load(tmp_path / "p.faiss")
    again = back.search(x[3], 5)
    assert back.kind == "flat" and list(again.ids) == list(hits.ids)


@pytest.mark.parametrize("kind", ["hnsw", "ivf"])
def test_approximate_index_reaches_recall_and_survives_round_trip(tmp_path, kind: str) -> None:
    rng = np.random.default_rng(1)
    centers = _unit(rng, 40, 32)
    x = centers[rng.integers(0, 40, size=4000)] + 0.3 * rng.normal(size=(4000, 32)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    idx = PartitionIndex.build(x, kind=kind)
    assert idx.kind == kind and idx.info["recall_at_10"] >= 0.95
    q = x[:100] + 0.05 * rng.normal(size=(100, 32)).astype(np.float32)
    q /= np.linalg.norm(q, axis=1, keepdims=True)
    got = np.stack([idx.search(v, 10).ids for v in q])
    assert recall_at_k(got, exact_topk(x, q, 10)) >= 0.9
    idx.save(tmp_path / "a.faiss")
    back = PartitionIndex.load(tmp_path / "a.faiss")
    assert back.info["breadth"] == idx.info["breadth"]
    assert list(back.search(q[0], 10).ids) == list(idx.search(q[0], 10).ids)
    sel = back.search(q[0], 5, allowed=np.arange(0, 4000, 2))
    assert len(sel.ids) == 5 and all(i % 2 == 0 for i in sel.ids)


def test_auto_kind_follows_threshold() -> None:
    x = _unit(np.random.default_rng(2), 300, 16)
    assert PartitionIndex.build(x, approx_threshold=1000).kind == "flat"
    assert PartitionIndex.build(x, approx_threshold=100).kind == "hnsw"


def test_stacking_recovers_weights_and_cross_fits_by_group() -> None:
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(200, 5)), rng.normal(size=(200, 5))
    truth = 0.7 * a + 0.2 * b + 0.01 * rng.normal(size=(200, 5))
    w = fit_weights({"a": a, "b": b, "noise": rng.normal(size=(200, 5))}, truth)
    assert w["a"] == pytest.approx(0.7, abs=0.02) and w["b"] == pytest.approx(0.2, abs=0.02)
    assert w["noise"] >= 0.0 and w["noise"] < 0.05
    groups = [f"g{i // 4}" for i in range(200)]
    folds = group_folds(groups, 2, seed=1)
    for g in set(groups):
        assert len({int(f) for f, gg in zip(folds, groups, strict=True) if gg == g}) == 1
    cf = cross_fit({"a": a, "b": b}, truth, groups, folds=2)
    assert len(cf.fold_weights) == 2 and all(fw for fw in cf.fold_weights)
    assert np.mean(np.linalg.norm(cf.predictions - truth, axis=1)) < 0.1


def test_plan_edits_gives_each_source_distinct_concepts_and_new_targets() -> None:
    from explainers.concepts import CEBAB_SCHEMA
    from explainers.data.pool import Pool
    from explainers.matching.augment import plan_edits

    labels = [{"food": "Positive", "service": "Negative", "ambiance": "unknown", "noise": "odd"},
              {"food": "Negative", "service": "unknown", "ambiance": "Positive", "noise": "Negative"},
              {"food": "unknown", "service": "Positive", "ambiance": "Negative", "noise": "Positive"}]  # fmt: skip
    pool = Pool(texts=["a", "b", "c"], labels=labels, schema=CEBAB_SCHEMA, origins=["1", "2", "3"])
    plan = plan_edits(pool, concepts_per_source=2, seed=3)
    assert len(plan) == 6 and plan == plan_edits(pool, concepts_per_source=2, seed=3)  # seeded
    for src in range(3):
        concepts = [e.intervention.concept for e in plan if e.source == src]
        assert len(concepts) == 2 and len(set(concepts)) == 2
    for e in plan:
        label = labels[e.source][e.intervention.concept]
        assert (
            e.intervention.target != label
            and e.intervention.target in CEBAB_SCHEMA[e.intervention.concept].values
        )
        # A label outside the schema ("odd") is not passed on as the current value.
        assert e.intervention.source == (
            label if label in CEBAB_SCHEMA[e.intervention.concept].values else None
        )
    keys = [(e.intervention.concept, e.intervention.target) for e in plan]
    assert keys == sorted(keys)  # consecutive prompts share their prefix (llama.cpp KV reuse)
    assert {e.source for e in plan_edits(pool, n_sources=2)} <= {0, 1, 2} and len(
        plan_edits(pool, n_sources=2)
    ) == 4
