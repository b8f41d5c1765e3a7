"""Batched explanation equals per-text explanation, and shares its work across the batch.

On a tiny trained concept space with the real tfidf-lr classifier and real taggers: for every
batched method, `explain_batch` over mixed texts and interventions (with and without labels)
gives the same counterfactuals and ICaCE as `explain` one text at a time, while the
classifier is called once and sees each distinct text once.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pytest

from explainers.concepts import CEBAB_SCHEMA, Intervention
from explainers.embeddings import Encoder
from explainers.matching.space import ConceptSpace
from explainers.registry import Resources, build_explainer
from explainers.taggers import TaggerSet
from explainers.types import explain_batch
from tests.test_matching_space import ROWS, space_dir, tiny_pool  # noqa: F401  (fixture)

U = "unknown"
QUERIES = [
    "The pasta was delicious and the waiter was friendly.",  # a pool text: never its own match
    "Lovely noodles, but the staff ignored us.",
    "The burgers were cold and the server was rude.",
    "Quiet room, tasty sushi, slow service.",
    "Lovely noodles, but the staff ignored us.",  # a repeat inside the batch
]
INTERVENTIONS = [
    Intervention("food", "Negative", "Positive"),
    Intervention("service", "Positive", "Negative"),
    Intervention("food", "Positive", "Negative"),
    Intervention("food", "Negative", "Positive"),
    Intervention("food", "Negative", "Positive"),
]
LABELS = [
    {"food": "Positive", "service": "Positive", "ambiance": U, "noise": U},
    None,  # taggers infer these
    {"food": "Negative", "service": "Negative", "ambiance": U, "noise": U},
    None,
    None,
]


class CountingClassifier:
    """The real classifier, recording each call's texts (what the batch path promises to save)."""

    def __init__(self, inner) -> None:
        self.inner = inner
        self.labels = list(inner.labels)
        self.calls: list[list[str]] = []

    def predict_proba(self, texts: Sequence[str]) -> np.ndarray:
        self.calls.append(list(texts))
        return self.inner.predict_proba(texts)


@pytest.fixture(scope="module")
def resources(space_dir) -> Resources:  # noqa: F811
    space = ConceptSpace.load(space_dir)
    pool = tiny_pool()
    taggers = TaggerSet(CEBAB_SCHEMA).fit(pool.texts, pool.labels)
    return Resources(schema=CEBAB_SCHEMA, pool=pool, encoder=Encoder(), space=space, taggers=taggers, seed=3)


@pytest.mark.parametrize(
    "method", ["match", "match_dr", "pt_match", "approx_match", "approx", "random_matching"]
)
def test_batch_equals_per_text(method: str, resources: Resources, tfidf_lr) -> None:
    single = build_explainer(method, resources)
    batched = build_explainer(method, resources)
    clf = CountingClassifier(tfidf_lr)
    if method == "match_dr":  # its outcome model scores the pool once per classifier, before any batch
        batched._outcome_model(clf)
        clf.calls.clear()
    one = [
        single.explain(t, iv, tfidf_lr, top_k=3, base_labels=lab)
        for t, iv, lab in zip(QUERIES, INTERVENTIONS, LABELS, strict=True)
    ]
    many = batched.explain_batch(QUERIES, INTERVENTIONS, clf, 3, base_labels=LABELS)
    assert len(many) == len(one)
    for a, b in zip(one, many, strict=True):
        assert [c.text for c in a.counterfactuals] == [c.text for c in b.counterfactuals]
        assert np.allclose(a.icace, b.icace, atol=1e-9)
        assert np.allclose(a.base_prediction, b.base_prediction, atol=1e-12)
        sims_a = [c.similarity for c in a.counterfactuals]
        sims_b = [c.similarity for c in b.counterfactuals]
        assert sims_a == pytest.approx(sims_b, abs=1e-5)
        for key in ("used", "confounder_matched", "adjustment", "candidates", "relaxed"):
            assert a.details.get(key) == b.details.get(key), key
        assert b.details["batch_size"] == len(QUERIES)
    assert len(clf.calls) == 1  # one classifier call for the whole batch
    assert len(clf.calls[0]) == len(set(clf.calls[0]))  # each distinct text once
    assert set(clf.calls[0]) >= set(QUERIES)


def test_free_function_falls_back_per_text(resources: Resources, tfidf_lr) -> None:
    pt = build_explainer("pair_transfer", resources)  # no explain_batch: one explain() per text
    assert not hasattr(pt, "explain_batch")
    got = explain_batch(pt, QUERIES[:3], INTERVENTIONS[:3], tfidf_lr, 2, base_labels=LABELS[:3])
    want = [
        pt.explain(t, iv, tfidf_lr, 2, base_labels=lab)
        for t, iv, lab in zip(QUERIES[:3], INTERVENTIONS[:3], LABELS[:3], strict=True)
    ]
    assert [list(e.icace) for e in got] == [list(e.icace) for e in want]


def test_batch_rejects_mismatched_lengths_and_unknown_values(resources: Resources, tfidf_lr) -> None:
    m = build_explainer("match", resources)
    with pytest.raises(ValueError, match="interventions"):
        m.explain_batch(QUERIES, INTERVENTIONS[:2], tfidf_lr, 3)
    with pytest.raises(ValueError):
        m.explain_batch(QUERIES[:1], [Intervention("food", "Delicious")], tfidf_lr, 3)
    assert m.explain_batch([], [], tfidf_lr, 3) == []


def test_search_batch_equals_search(resources: Resources) -> None:
    space = resources.space
    vecs = space.embed(QUERIES, "food")
    conf = {"service": "Positive"}
    batch = space.search_batch(vecs, "food", "Negative", 3, confounders=conf, exclude_texts=QUERIES)
    for v, q, got in zip(vecs, QUERIES, batch, strict=True):
        want = space.search(v, "food", "Negative", 3, confounders=conf, exclude_text=q)
        assert [m.row for m in got] == [m.row for m in want]
    assert ROWS  # the space is the tiny one
