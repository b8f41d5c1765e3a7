"""Each baseline on a tiny hand-made pool, against a rule-based classifier whose outputs are known by hand.

The classifier here is a real (if tiny) model being explained: P(pos) = (#"good" - #"bad" + 2) / 4,
so every expected ICaCE can be computed on paper.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pytest

from explainers.concepts import ConceptSchema, Intervention
from explainers.data.pool import Pool
from explainers.registry import MissingResource, Resources, available, build_explainer

SCHEMA = ConceptSchema.simple(["food", "service"], ["Positive", "Negative", "unknown"])
P, N, U = "Positive", "Negative", "unknown"
POOL_ROWS = [
    ("good food, good service", {"food": P, "service": P}),  # p(pos) 1.0
    ("bad food, good service", {"food": N, "service": P}),  # 0.5
    ("bad food, bad service", {"food": N, "service": N}),  # 0.0
    ("good food, bad service", {"food": P, "service": N}),  # 0.5
    ("bad food", {"food": N, "service": U}),  # 0.25
    ("nothing to say", {"food": U, "service": U}),  # 0.5
]


class KeywordClassifier:
    """Two labels; P(pos) = clip((#good - #bad + 2) / 4, 0, 1)."""

    labels = ["neg", "pos"]

    def predict_proba(self, texts: Sequence[str]) -> np.ndarray:
        p = np.array([min(max((t.count("good") - t.count("bad") + 2) / 4, 0.0), 1.0) for t in texts])
        return np.stack([1 - p, p], axis=1)


def _pool() -> Pool:
    return Pool(
        texts=[t for t, _ in POOL_ROWS],
        labels=[dict(lab) for _, lab in POOL_ROWS],
        schema=SCHEMA,
        ids=[f"r{i}" for i in range(len(POOL_ROWS))],
    )


@pytest.fixture()
def resources() -> Resources:
    return Resources(schema=SCHEMA, pool=_pool(), seed=7)


QUERY = "good food and good service here"  # p(pos) = 1.0, not in the pool
QUERY_LABELS = {"food": P, "service": P}
FOOD_TO_NEG = Intervention("food", N, P)


def test_all_baselines_are_registered() -> None:
    names = set(available())
    assert {
        "zero",
        "random",
        "random_proba",
        "random_matching",
        "conexp",
        "approx",
        "approx_match",
        "s_learner",
        "pt_match",
    } <= names


def test_zero(resources: Resources) -> None:
    exp = build_explainer("zero", resources).explain(QUERY, FOOD_TO_NEG, KeywordClassifier())
    assert exp.icace.tolist() == [0.0, 0.0]
    assert exp.base_prediction.tolist() == [0.0, 1.0]
    assert exp.method == "zero"


def test_conexp_by_hand(resources: Resources) -> None:
    exp = build_explainer("conexp", resources).explain(QUERY, FOOD_TO_NEG, KeywordClassifier())
    # E[p | food=N] = (0.5 + 0 + 0.25)/3 = 0.25; E[p | food=P] = (1 + 0.5)/2 = 0.75
    assert exp.icace == pytest.approx([0.5, -0.5])


def test_conexp_takes_source_from_base_labels_or_says_what_is_missing(resources: Resources) -> None:
    conexp = build_explainer("conexp", resources)
    no_source = Intervention("food", N)
    exp = conexp.explain(QUERY, no_source, KeywordClassifier(), base_labels=QUERY_LABELS)
    assert exp.icace == pytest.approx([0.5, -0.5])
    with pytest.raises(MissingResource, match="labels"):
        conexp.explain(QUERY, no_source, KeywordClassifier())


def test_random_matching_draws_target_texts_deterministically(resources: Resources) -> None:
    rm = build_explainer("random_matching", resources)
    clf = KeywordClassifier()
    e3 = rm.explain(QUERY, FOOD_TO_NEG, clf, top_k=3)
    assert {c.text for c in e3.counterfactuals} == {
        "bad food, good service",
        "bad food, bad service",
        "bad food",
    }
    # K counterfactuals averaged: p = (0.5 + 0 + 0.25)/3 = 0.25, minus base 1.0
    assert e3.icace == pytest.approx([0.75, -0.75])
    e1 = rm.explain(QUERY, FOOD_TO_NEG, clf, top_k=1)
    again = build_explainer("random_matching", resources).explain(QUERY, FOOD_TO_NEG, clf, top_k=1)
    assert e1.counterfactuals[0].text == again.counterfactuals[0].text == e3.counterfactuals[0].text


def test_random_ignores_labels_and_never_returns_the_query(resources: Resources) -> None:
    rnd = build_explainer("random", resources)
    in_pool = POOL_ROWS[0][0]
    exp = rnd.explain(in_pool, FOOD_TO_NEG, KeywordClassifier(), top_k=10)
    texts = [c.text for c in exp.counterfactuals]
    assert len(texts) == len(POOL_ROWS) - 1 and in_pool not in texts
    seeds = {
        tuple(
            c.text
            for c in build_explainer("random", Resources(schema=SCHEMA, pool=_pool(), seed=s))
            .explain(QUERY, FOOD_TO_NEG, KeywordClassifier(), top_k=6)
            .counterfactuals
        )
        for s in range(6)
    }
    assert len(seeds) > 1  # the seed matters


def test_random_proba_is_a_difference_of_probability_vectors(resources: Resources) -> None:
    exp = build_explainer("random_proba", resources).explain(QUERY, FOOD_TO_NEG, KeywordClassifier())
    assert exp.icace.sum() == pytest.approx(0.0)
    assert np.all(np.abs(exp.icace) <= 1.0) and np.any(exp.icace != 0)


def test_approx_prefers_same_confounders_then_relaxes(resources: Resources) -> None:
    clf = KeywordClassifier()
    approx = build_explainer("approx", resources)
    e1 = approx.explain(QUERY, FOOD_TO_NEG, clf, top_k=1, base_labels=QUERY_LABELS)
    # Only "bad food, good service" has food=Negative and service=Positive.
    assert [c.text for c in e1.counterfactuals] == ["bad food, good service"]
    assert e1.icace == pytest.approx([0.5, -0.5])
    assert e1.details["relaxed"] is False
    e3 = approx.explain(QUERY, FOOD_TO_NEG, clf, top_k=3, base_labels=QUERY_LABELS)
    assert e3.counterfactuals[0].text == "bad food, good service"
    assert e3.details["relaxed"] is True and e3.details["tiers"] == {"1": 1, "0": 2}
    strict = build_explainer("approx", resources, relax="nonempty")
    e3s = strict.explain(QUERY, FOOD_TO_NEG, clf, top_k=3, base_labels=QUERY_LABELS)
    assert [c.text for c in e3s.counterfactuals] == ["bad food, good service"]


def test_approx_needs_labels(resources: Resources) -> None:
    with pytest.raises(MissingResource):
        build_explainer("approx", resources).explain(QUERY, FOOD_TO_NEG, KeywordClassifier())


@pytest.mark.parametrize("target", ["argmax", "proba"])
def test_s_learner_moves_towards_the_pool_association(resources: Resources, target: str) -> None:
    s = build_explainer("s_learner", resources, s_learner_target=target)
    exp = s.explain(QUERY, FOOD_TO_NEG, KeywordClassifier(), base_labels=QUERY_LABELS)
    assert exp.icace.sum() == pytest.approx(0.0, abs=1e-9)
    assert exp.icace[1] < 0  # food Positive -> Negative lowers P(pos) in this pool
    back = s.explain(
        QUERY, Intervention("food", P, N), KeywordClassifier(), base_labels={"food": N, "service": P}
    )
    assert back.icace == pytest.approx(-exp.icace)


@pytest.fixture(scope="module")
def encoder():
    from explainers.embeddings import Encoder

    return Encoder()


def _restaurant_pool() -> Pool:
    rows = [
        ("The pasta was bland but the waiter was friendly.", {"food": N, "service": P}),
        ("The pasta was bland and the waiter was rude.", {"food": N, "service": N}),
        ("Terrible food.", {"food": N, "service": U}),
        ("The pasta was great and the waiter was friendly.", {"food": P, "service": P}),
        ("We parked outside.", {"food": U, "service": U}),
    ]
    return Pool(
        [t for t, _ in rows], [lab for _, lab in rows], SCHEMA, ids=[f"p{i}" for i in range(len(rows))]
    )


def test_pt_match_returns_nearest_target_texts(encoder) -> None:
    res = Resources(schema=SCHEMA, pool=_restaurant_pool(), encoder=encoder)
    query = "The pasta was delicious and the waiter was friendly."
    exp = build_explainer("pt_match", res).explain(query, FOOD_TO_NEG, KeywordClassifier(), top_k=3)
    texts = [c.text for c in exp.counterfactuals]
    assert set(texts) == {
        t for t, lab in zip(res.pool.texts, res.pool.labels, strict=True) if lab["food"] == N
    }
    sims = [c.similarity for c in exp.counterfactuals]
    assert sims == sorted(sims, reverse=True)
    q = encoder.encode([query])[0]
    expected = encoder.encode(texts) @ q
    assert sims == pytest.approx(expected.tolist(), abs=1e-5)


def test_approx_match_ranks_within_the_confounder_tier(encoder) -> None:
    res = Resources(schema=SCHEMA, pool=_restaurant_pool(), encoder=encoder)
    query = "The pasta was delicious and the waiter was friendly."
    am = build_explainer("approx_match", res)
    exp = am.explain(query, FOOD_TO_NEG, KeywordClassifier(), top_k=3, base_labels=QUERY_LABELS)
    assert exp.counterfactuals[0].text == "The pasta was bland but the waiter was friendly."
    assert exp.counterfactuals[0].verification == {"confounders_matched": 1}
    rest = exp.counterfactuals[1:]
    assert [c.similarity for c in rest] == sorted([c.similarity for c in rest], reverse=True)
    with pytest.raises(MissingResource):
        build_explainer("approx_match", Resources(schema=SCHEMA, pool=_restaurant_pool()))


def test_matchers_need_a_pool() -> None:
    with pytest.raises(MissingResource, match="pool"):
        build_explainer("random_matching", Resources(schema=SCHEMA))
