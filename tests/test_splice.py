"""`splice`: the corpus's small edits transplanted into the query text (explainers/splice.py)."""

from __future__ import annotations

import numpy as np
import pytest

from explainers.classifiers.local import SklearnClassifier
from explainers.concepts import ConceptSchema, Intervention
from explainers.data.movies import movie_corpus, train_rating_classifier
from explainers.data.pool import Pool
from explainers.errors import MissingResource, UnknownOption
from explainers.estimators.calibration_fit import _fit_text_budget
from explainers.splice import SentenceEdits, SpliceExplainer, clauses, fit_into, sentences

SCHEMA = ConceptSchema.simple(["food", "service"], ["good", "bad", "none"], domain="reviews")


def review_pool() -> Pool:
    """Origins of three texts: an original and two edits, each edit rewriting or adding one sentence."""
    texts, labels, origins, pairs = [], [], [], []
    foods = {"good": "The soup was delicious.", "bad": "The soup was cold and bland."}
    services = {"good": "Our waiter was friendly.", "bad": "Our waiter was rude.", "none": ""}
    for o in range(12):
        opener = f"We went there on day {o}."
        service = "good" if o % 2 else "bad"
        base = " ".join(s for s in (opener, foods["good"], services[service]) if s)
        food_edit = " ".join(s for s in (opener, foods["bad"], services[service]) if s)
        no_service = " ".join((opener, foods["good"]))
        row = len(texts)
        texts += [base, food_edit, no_service]
        labels += [
            {"food": "good", "service": service},
            {"food": "bad", "service": service},
            {"food": "good", "service": "none"},
        ]
        origins += [f"o{o}"] * 3
        # food good->bad rewrites a sentence; service none->x adds one, x->none removes one
        pairs += [(row, row + 1, "food"), (row + 2, row, "service"), (row, row + 2, "service")]
    return Pool(texts, labels, SCHEMA, origins=origins, pairs=pairs)


def test_sentences_split_on_ends_and_newlines() -> None:
    assert sentences("A b. C d!  E?\nF") == ["A b.", "C d!", "E?", "F"]


def test_the_concept_sentence_is_replaced_by_the_nearest_edits_of_that_direction() -> None:
    edits = SentenceEdits(review_pool())
    exp = SpliceExplainer(edits)
    text = "Lunch on a Monday. The soup was delicious. Our waiter was rude."
    cfs, details = exp.counterfactuals(text, Intervention("food", "bad", "good"), top_k=3)
    assert details["replaced_sentence"] == "The soup was delicious."
    assert [c.text for c in cfs] == [
        "Lunch on a Monday. The soup was cold and bland. Our waiter was rude."
    ] * 3
    # An absent value (edits from it add a sentence): the new sentence is appended.
    assert ("service", "none") in edits.absent and ("food", "good") not in edits.absent
    cfs, details = exp.counterfactuals(
        "Lunch on a Monday. The soup was delicious.", Intervention("service", "good", "none"), top_k=2
    )
    assert details["replaced_sentence"] is None
    assert {c.text for c in cfs} == {"Lunch on a Monday. The soup was delicious. Our waiter was friendly."}
    # To the absent value: the carrying sentence goes.
    cfs, _ = exp.counterfactuals(text, Intervention("service", "none", "bad"), top_k=1)
    assert cfs[0].text == "Lunch on a Monday. The soup was delicious."


def test_no_change_and_no_edits_give_no_counterfactuals() -> None:
    exp = SpliceExplainer(SentenceEdits(review_pool()))
    cfs, details = exp.counterfactuals(
        "The soup was delicious.", Intervention("food", "good"), 3, base_labels={"food": "good"}
    )
    assert cfs == [] and "already" in details["note"]
    cfs, details = exp.counterfactuals("The soup was cold.", Intervention("food", "good", "bad"), 3)
    assert cfs == [] and "no corpus edits" in details["note"]


def test_a_tiny_pool_still_fits() -> None:
    pool = review_pool()
    tiny = Pool(pool.texts[:3], pool.labels[:3], SCHEMA, origins=pool.origins[:3], pairs=pool.pairs[:3])
    cfs, _ = SpliceExplainer(SentenceEdits(tiny)).counterfactuals(
        "The soup was delicious. Our waiter was rude.", Intervention("food", "bad", "good"), 2
    )
    assert cfs and "cold and bland" in cfs[0].text


def test_a_pool_without_pairs_is_a_missing_resource() -> None:
    pool = review_pool()
    with pytest.raises(MissingResource, match="pairs"):
        SentenceEdits(Pool(pool.texts, pool.labels, SCHEMA))


def test_splice_moves_a_real_classifier_the_way_the_human_edits_do() -> None:
    """On the movie domain, splice's ICaCE has the sign of the true effect of the corpus's own edits."""
    corpus = movie_corpus(40, seed=3)
    texts = [r["text"] for r in corpus]
    from explainers.domains import infer_schema, pool_from_rows, validate_rows

    rows = validate_rows(corpus)
    pool = pool_from_rows(rows, infer_schema(rows))
    clf = SklearnClassifier(train_rating_classifier(movie_corpus(60, edits=False, seed=9)), name="rating")
    exp = SpliceExplainer(SentenceEdits(pool), max_k=5)
    proba = np.asarray(clf.predict_proba(texts))
    agree = []
    for b, e, concept in pool.pairs[:60]:
        iv = Intervention(concept, pool.labels[e][concept], pool.labels[b][concept])
        got = exp.explain(pool.texts[b], iv, clf, top_k=5).icace
        truth = proba[e] - proba[b]
        if abs(truth[0]) > 0.05:
            agree.append(np.sign(got[0]) == np.sign(truth[0]))
    assert len(agree) >= 10 and np.mean(agree) >= 0.8, (len(agree), np.mean(agree))


def test_calibration_caps_text_making_methods_to_the_budget() -> None:
    methods, options, skipped = _fit_text_budget(["match", "splice"], [5, 10, 20], {}, 40_000, 4000)
    assert methods == ["match", "splice"] and options["splice_max_k"] == 10 and not skipped
    # What splice was calibrated with is recorded, so auto splices the same way after a default changes.
    assert options["splice_unit"] == "clause" and options["splice_edit_pieces"] == 1
    _, options, _ = _fit_text_budget(["splice"], [5], {"splice_edit_pieces": 2}, 40_000, 4000)
    assert options["splice_edit_pieces"] == 2
    methods, options, skipped = _fit_text_budget(["match", "splice"], [5, 10], {}, 10_000, 4000)
    assert methods == ["match"] and "budget" in skipped["splice"]


def shared_sentence_pool() -> Pool:
    """Reviews judging food and service in one sentence; each food edit rewrites only the food clause."""
    texts, labels, origins, pairs = [], [], [], []
    foods = {"good": "The soup was delicious", "bad": "The soup was cold and bland"}
    services = {"good": "our waiter was friendly.", "bad": "our waiter was rude."}
    for o in range(12):
        service = "good" if o % 2 else "bad"
        opener = f"We went there on day {o}."
        row = len(texts)
        texts += [f"{opener} {foods[f]}, but {services[service]}" for f in ("good", "bad")]
        labels += [{"food": f, "service": service} for f in ("good", "bad")]
        origins += [f"o{o}"] * 2
        pairs += [(row, row + 1, "food"), (row + 1, row, "food")]
    return Pool(texts, labels, SCHEMA, origins=origins, pairs=pairs)


def test_clauses_cut_a_sentence_where_a_new_judgement_starts() -> None:
    assert clauses("Great food, but the waiter was rude. Loud.") == [
        "Great food,",
        "but the waiter was rude.",
        "Loud.",
    ]
    assert clauses("The food was great; the room was far too loud.") == [
        "The food was great;",
        "the room was far too loud.",
    ]
    # A short piece after a comma lists more of one judgement: it is not a clause of its own.
    assert clauses("The lead gives a moving, nuanced performance.") == [
        "The lead gives a moving, nuanced performance."
    ]
    assert fit_into("The soup was cold.", "the soup was hot,") == "the soup was cold,"
    assert fit_into("but the soup was cold", "The soup was hot.") == "But the soup was cold."
    assert fit_into("I loved it.", "we liked it,") == "I loved it," and fit_into(" . ", "x.") == ""


def test_clause_unit_rewrites_the_concept_clause_and_keeps_the_other_concepts_clause() -> None:
    pool = shared_sentence_pool()
    text = "Lunch on a Monday. The soup was delicious, but our waiter was rude."
    iv = Intervention("food", "bad", "good")
    # The sentence unit rewrites the whole shared sentence: the service judgement changes with it.
    by_sentence, _ = SpliceExplainer(SentenceEdits(pool, unit="sentence")).counterfactuals(text, iv, top_k=12)
    assert any("friendly" in c.text for c in by_sentence)
    by_clause, details = SpliceExplainer(SentenceEdits(pool, unit="clause")).counterfactuals(
        text, iv, top_k=12
    )
    assert details["replaced_sentence"] == "The soup was delicious,"
    assert {c.text for c in by_clause} == {
        "Lunch on a Monday. The soup was cold and bland, but our waiter was rude."
    }


def test_scope_all_rewrites_every_sentence_carrying_the_concept() -> None:
    edits = SentenceEdits(review_pool())
    text = "The soup was delicious. Our waiter was rude. The soup was delicious and warm."
    iv = Intervention("food", "bad", "good")
    one, _ = SpliceExplainer(edits).counterfactuals(text, iv, top_k=1)
    assert one[0].text.count("delicious") == 1
    every, details = SpliceExplainer(edits, scope="all").counterfactuals(text, iv, top_k=1)
    assert "delicious" not in every[0].text and every[0].text.count("cold and bland") == 2
    assert details["also_replaced"] and details["scope"] == "all"


def test_unit_and_scope_are_declared_options_with_checked_values() -> None:
    from explainers.registry import Resources, allowed_options, build_explainer

    assert {"splice_unit", "splice_scope"} <= allowed_options("splice") & allowed_options("splice_median")
    resources = Resources(schema=SCHEMA, pool=review_pool())
    built = build_explainer("splice", resources, splice_unit="clause", splice_scope="two")
    assert isinstance(built, SpliceExplainer) and built.edits.unit == "clause" and built.scope == "two"
    with pytest.raises(UnknownOption, match="splice_unit"):
        build_explainer("splice", resources, splice_unit="word")
    with pytest.raises(UnknownOption, match="splice_scope"):
        build_explainer("splice", resources, splice_scope="some")


def two_sentence_edit_pool() -> Pool:
    """Food edits that rewrite two sentences (the dish, then the dessert), and one-sentence service edits."""
    texts, labels, origins, pairs = [], [], [], []
    for o in range(6):
        opener = f"We went there on day {o}."
        good = f"{opener} The soup was delicious. The cake was wonderful. Our waiter was friendly."
        bad = f"{opener} The soup was cold. The cake was stale. Our waiter was friendly."
        rude = f"{opener} The soup was delicious. The cake was wonderful. Our waiter was rude."
        row = len(texts)
        texts += [good, bad, rude]
        labels += [
            {"food": "good", "service": "good"},
            {"food": "bad", "service": "good"},
            {"food": "good", "service": "bad"},
        ]
        origins += [f"o{o}"] * 3
        pairs += [(row, row + 1, "food"), (row, row + 2, "service")]
    return Pool(texts, labels, SCHEMA, origins=origins, pairs=pairs)


def test_edits_of_several_pieces_serve_whole_when_edit_pieces_allows() -> None:
    from explainers.registry import Resources, allowed_options, build_explainer

    pool = two_sentence_edit_pool()
    iv = Intervention("food", "bad", "good")
    text = "Lunch on a Monday. The soup was delicious. Our waiter was rude."
    # One-piece edits only (the default): food has none here, so splice has nothing to transplant.
    one = SentenceEdits(pool, unit="sentence")
    assert not one.cell("food", "good", "bad") and one.cell("service", "good", "bad")
    cfs, details = SpliceExplainer(one).counterfactuals(text, iv, top_k=2)
    assert cfs == [] and "no corpus edits" in details["note"]
    # Up to two pieces: the two rewritten sentences, joined, stand where the query's food sentence stood.
    two = SentenceEdits(pool, unit="sentence", edit_pieces=2)
    assert [e.inserted for e in two.cell("food", "good", "bad")][:1] == [
        "The soup was cold. The cake was stale."
    ]
    cfs, details = SpliceExplainer(two).counterfactuals(text, iv, top_k=2)
    assert details["replaced_sentence"] == "The soup was delicious."
    assert cfs and all(
        c.text == "Lunch on a Monday. The soup was cold. The cake was stale. Our waiter was rude."
        for c in cfs
    )
    # Clause unit: the joined pieces take the replaced piece's punctuation.
    cfs, _ = SpliceExplainer(SentenceEdits(pool, edit_pieces=2)).counterfactuals(text, iv, top_k=1)
    assert cfs[0].text == "Lunch on a Monday. The soup was cold. The cake was stale. Our waiter was rude."
    # A declared option of both methods, its value checked (a string from a config is read as a number).
    assert "splice_edit_pieces" in allowed_options("splice") & allowed_options("splice_median")
    resources = Resources(schema=SCHEMA, pool=pool)
    built = build_explainer("splice_median", resources, splice_edit_pieces="2")
    assert isinstance(built, SpliceExplainer) and built.edits.edit_pieces == 2
    for bad in (0, 4, "two", None, True):
        with pytest.raises(UnknownOption, match="splice_edit_pieces"):
            build_explainer("splice", resources, splice_edit_pieces=bad)
