"""Calibration under shift (issue 23): a classifier trained on the domain's own texts.

The memorising classifier is real: TF-IDF + logistic regression trained on the synthetic pool's
originals, each of which carries a token of its own ("visit 17"), so it is overconfident on
exactly the texts it saw, as a team's model is on its own corpus.
"""

from __future__ import annotations

import numpy as np
import pytest

from explainers.classifiers.local import SklearnClassifier
from explainers.concepts import Intervention
from explainers.estimators.calibration import Calibration
from explainers.estimators.calibration_fit import calibrate
from explainers.estimators.intervals import conformal_halfwidth
from explainers.estimators.shift import Situation, behaviour, ks_statistic, weighted_quantile
from explainers.registry import Resources, build_explainer
from tests.calibration_fixtures import LexiconClassifier, synthetic_domain

KS = (1, 3)


def test_weighted_quantile_with_equal_weights_is_the_split_conformal_one() -> None:
    r = np.random.default_rng(0).exponential(size=(200, 1))
    assert weighted_quantile(r[:, 0], np.ones(200), 0.9, 1.0) == pytest.approx(conformal_halfwidth(r, 0.9)[0])
    # The test point's weight sits at +infinity: with too little calibration mass the quantile is unbounded.
    assert weighted_quantile(r[:5, 0], np.full(5, 0.01), 0.9, 1.0) == float("inf")


def test_ks_statistic_and_behaviour() -> None:
    a = np.linspace(0, 1, 50)
    assert ks_statistic(a, a) == 0.0 and ks_statistic(a, a + 2) == 1.0
    b = behaviour(np.array([[1.0, 0.0, 0.0], [1 / 3, 1 / 3, 1 / 3]]))
    assert b[0] == pytest.approx([1.0, 0.0], abs=1e-6) and b[1] == pytest.approx([1 / 3, 1.0], abs=1e-6)


def test_a_text_unlike_the_calibration_pairs_is_told_its_numbers_do_not_hold() -> None:
    rng = np.random.default_rng(1)
    conf = rng.uniform(0.93, 0.99, 400)  # calibrated where the classifier is sure of itself
    base = np.stack([conf, (1 - conf) / 2, (1 - conf) / 2], axis=1)
    residuals = np.abs(rng.normal(0, 0.05, (400, 3)))
    sit = Situation.fit(base, np.linalg.norm(residuals, axis=1), residuals, 0.9)
    inside = sit.check(np.array([[0.96, 0.02, 0.02]]))
    assert inside.valid and inside.effective_pairs > 100 and inside.why is None
    unsure = sit.check(np.array([[0.40, 0.35, 0.25]]))
    assert not unsure.valid and "effective calibration pairs" in (unsure.why or "")
    batch = sit.compare(np.array([[0.4, 0.35, 0.25]] * 10 + [[0.96, 0.02, 0.02]] * 10))
    assert batch["share_outside"] == 0.5 and batch["ks_confidence"] >= 0.5


@pytest.fixture(scope="module")
def domain():
    return synthetic_domain(90)


def _originals(pool) -> list[int]:
    return [i for i, original in enumerate(pool.originals) if original]


@pytest.fixture(scope="module")
def memorising(domain) -> tuple[SklearnClassifier, list[str]]:
    """Trained on the originals of the first 45 origins, labelled by the lexicon model's verdict."""
    from explainers.reference import tfidf_lr_pipeline

    pool, _, _ = domain
    rows = [i for i in _originals(pool) if int(pool.origins[i][1:]) < 45]
    texts = [pool.texts[i] for i in rows]
    verdict = np.array(LexiconClassifier.labels)[LexiconClassifier().predict_proba(texts).argmax(1)]
    pipe = tfidf_lr_pipeline().set_params(tfidf__min_df=1, lr__C=100.0).fit(texts, verdict)
    return SklearnClassifier(pipe), [pool.ids[i] for i in rows]


def test_declared_training_texts_are_left_out_of_the_fit_and_reported(domain, memorising, tmp_path) -> None:
    pool, space, enc = domain
    clf, trained = memorising
    cal = calibrate(
        clf,
        pool,
        space,
        enc,
        ks=KS,
        max_pairs=None,
        combiners=("ridge",),
        trained_on=trained,
        min_unseen_pairs=100,
    )
    shift = cal.meta["shift"]
    assert shift["trained_on_declared"] and shift["trained_texts"] == len(trained) == 45
    mem = shift["memorisation"]
    assert mem["measured"] and mem["confidence_trained"] > mem["confidence_other"], mem
    assert mem["ks_confidence"] >= 0.2, mem  # it memorised them: the pairs touching them are left out
    assert "not trained" in shift["fit_on"] and cal.meta["protocol"]["heldout_pairs"] == shift["pairs_unseen"]
    # A strong memoriser: auto chooses among the text-making components only (their counterfactuals are new texts).
    assert shift["robust_only"] == (mem["ks_confidence"] >= 0.4)
    if shift["robust_only"]:
        assert all(e.startswith("single:splice") for e in [cal.default, *cal.choice.values()]), cal.choice
    # The fit and the per-answer situation are kept with the artifact.
    cal.save(tmp_path / "cal")
    loaded = Calibration.load(tmp_path / "cal")
    assert loaded.situation is not None and loaded.robust == cal.robust
    assert np.allclose(loaded.situation.l2, cal.situation.l2, atol=1e-6)


def test_undeclared_training_on_the_originals_is_suspected_and_treated_as_declared(domain) -> None:
    """Nobody says the classifier was trained on the corpus's originals: its confidence gives it away."""
    from explainers.reference import tfidf_lr_pipeline

    pool, space, enc = domain
    rows = _originals(pool)
    texts = [pool.texts[i] for i in rows]
    verdict = np.array(LexiconClassifier.labels)[LexiconClassifier().predict_proba(texts).argmax(1)]
    clf = SklearnClassifier(tfidf_lr_pipeline().set_params(tfidf__min_df=1, lr__C=100.0).fit(texts, verdict))
    cal = calibrate(clf, pool, space, enc, ks=KS, max_pairs=None, combiners=("ridge",))
    shift = cal.meta["shift"]
    assert shift["trained_on_declared"] is False and shift["trained_on_suspected"] is True, shift
    assert shift["trained_on_found"].startswith(f"suspected: the {len(rows)} originals")
    test = shift["originals_vs_edits"]
    assert test["ks_confidence"] >= 0.2 and test["confidence_originals"] > test["confidence_edits"], test
    # Then as if declared: every pair of this pool touches an original, so the fit keeps them and says so.
    assert shift["trained_texts"] == len(rows) and shift["pairs_unseen"] == 0
    assert "measured on texts it was trained on" in shift["fit_on"]
    # An empty declaration says "none of them": nothing is suspected.
    none = calibrate(clf, pool, space, enc, ks=KS, max_pairs=None, combiners=("ridge",), trained_on=[])
    assert none.meta["shift"]["trained_on_declared"] is True
    assert "trained_on_suspected" not in none.meta["shift"]
    assert none.meta["shift"]["fit_on"].startswith("every pair: none touches") and none.situation is not None
    assert not none.situation.trained_pairs


def test_the_corpus_trained_column_declares_the_training_texts(domain) -> None:
    from dataclasses import replace

    from explainers.estimators.shift import training_texts

    pool, _, _ = domain
    marked = replace(pool, trained=[i % 2 == 0 for i in range(len(pool))])
    chosen, found = training_texts(marked, np.full((len(pool), 3), 1 / 3), 0.2)
    assert chosen == [pool.ids[i] for i in range(0, len(pool), 2)]
    assert found["trained_on_found"] == f"the corpus's trained column ({len(chosen)} texts)"
    # A column of false values says "none of them": nothing is suspected.
    none = replace(pool, trained=[False] * len(pool))
    assert training_texts(none, np.full((len(pool), 3), 1 / 3), 0.2)[0] == []
    # Originals far *less* confident than their edits is no sign of training on them.
    flags = np.array(pool.original_flags())
    probs = np.where(flags[:, None], [0.4, 0.3, 0.3], [0.98, 0.01, 0.01])
    assert training_texts(replace(pool, trained=None), probs, 0.2)[0] is None
    assert training_texts(
        replace(pool, trained=None), np.where(flags[:, None], [0.98, 0.01, 0.01], [0.4, 0.3, 0.3]), 0.2
    )[0] == [pool.ids[i] for i in np.flatnonzero(flags)]
    # A pool that cannot tell originals from edits suspects nothing.
    unknown = replace(pool, originals=None, origins=list(pool.ids))
    assert training_texts(unknown, np.full((len(pool), 3), 1 / 3), 0.2)[0] is None


def test_a_corpus_says_its_originals_and_training_texts_and_a_saved_space_keeps_them(
    domain, tmp_path
) -> None:
    from explainers.domains import infer_schema, pool_from_rows, validate_rows
    from explainers.matching.space import ConceptSpace

    _, _, enc = domain
    lines = [
        {"text": "The plot is gripping.", "labels": {"plot": "good"}, "id": "a", "trained": True},
        {"text": "The plot is dull.", "labels": {"plot": "bad"}, "id": "a1", "origin": "a"},
        {"text": "The story drags.", "labels": {"plot": "bad"}, "id": "b", "origin": "b", "trained": False},
        {"text": "The story flies.", "labels": {"plot": "good"}, "id": "b1", "origin": "b"},
    ]
    rows = validate_rows(lines)
    pool = pool_from_rows(rows, infer_schema(rows))
    assert pool.trained == [True, False, False, False] and pool.original_flags() == [True, False, True, False]
    assert len(pool.pairs) == 4
    from explainers.domains.build import pair_stats

    assert pair_stats(pool)["originals"] == 2 and pair_stats(pool)["trained"] == 1
    space = ConceptSpace(pool, enc)
    space.build_indices()
    space.save(tmp_path / "space")
    loaded = ConceptSpace.load(tmp_path / "space", enc).pool
    assert loaded.trained == pool.trained and loaded.originals == pool.originals
    # Rows naming neither id nor origin are originals too (their made-up id and origin differ).
    plain_rows = validate_rows([{"text": "a", "labels": {"x": "1"}}, {"text": "b", "labels": {"x": "2"}}])
    bare = pool_from_rows(plain_rows, infer_schema(plain_rows))
    assert bare.original_flags() == [True, True] and bare.trained is None
    assert loaded.subset([2, 3]).trained == [False, False] and loaded.subset([2, 3]).pairs == [
        (0, 1, "plot"),
        (1, 0, "plot"),
    ]


@pytest.mark.parametrize(
    ("ks", "ratio", "unseen", "fit", "says"),
    [
        (0.1, 1.0, 0, "all", "about as confident"),  # no memorisation: every pair, whatever is left
        (0.3, 1.3, 5000, "unseen", "not trained on"),  # the edit->edit pairs of a model trained on originals
        (0.3, 1.3, 540, "all", "memorisation is mild"),  # CEBaB's whole pool declared: 540 odd pairs left
        (0.5, 1.3, 540, "trained", "measured on texts it was trained on"),  # strong, and too few to fit on
        (0.3, 2.9, 540, "trained", "measured on texts it was trained on"),  # strong by its uncertainty ratio
        (None, None, 0, "trained", "measured on texts it was trained on"),  # every text trained: unmeasurable
    ],
)
def test_which_pairs_a_calibration_fits_on(ks, ratio, unseen, fit, says) -> None:
    from explainers.estimators.calibration_fit import fit_on_pairs, strong_memorisation

    mem = (
        {"measured": False}
        if ks is None
        else {"measured": True, "ks_confidence": ks, "uncertainty_ratio": ratio}
    )
    got, why = fit_on_pairs(mem, unseen, 13000)
    assert got == fit and says in why, why
    assert strong_memorisation(mem) == (ks is not None and (ks >= 0.4 or ratio >= 2.0))
    assert fit_on_pairs({"measured": True, "ks_confidence": 0.3}, 299, 1000)[0] == "all"  # under 300
    # trained_on=[] on a small domain: nothing was trained on, whatever the pair count.
    assert fit_on_pairs({"measured": False}, 40, 40) == (
        "all",
        "every pair: none touches a text the classifier was trained on",
    )
    # A memoriser's uncertainty on its training texts, measured: 70x less unsure than on the others.
    from explainers.estimators.shift import memorisation

    sure, unsure = np.tile([0.999, 0.0005, 0.0005], (50, 1)), np.tile([0.93, 0.05, 0.02], (50, 1))
    assert memorisation(sure, unsure)["uncertainty_ratio"] == pytest.approx(70.0, rel=1e-3)


def test_a_calibration_on_trained_texts_only_says_so_in_every_answer(domain, memorising) -> None:
    pool, space, enc = domain
    clf, _ = memorising
    everything = list(pool.ids)
    cal = calibrate(clf, pool, space, enc, ks=KS, max_pairs=None, combiners=("ridge",), trained_on=everything)
    assert "measured on texts it was trained on" in cal.meta["shift"]["fit_on"]
    assert cal.meta["shift"]["memorisation"]["measured"] is False
    res = Resources(schema=pool.schema, pool=pool, encoder=enc, space=space, extra={"calibration": cal})
    auto = build_explainer("auto", res)
    text, labels = pool.texts[3], pool.labels[3]
    target = "Negative" if labels["food"] != "Negative" else "Positive"
    e = auto.explain(text, Intervention("food", target), clf, 3, base_labels=labels)
    sit = e.details["situation"]
    assert sit["valid"] is False and "was trained on" in sit["why"] and sit["fallback"] == cal.robust
    assert e.details["estimator"] == cal.robust and e.details["interval"]["valid"] is False
    assert e.details["calibration"]["shift"]["trained_on_declared"] is True


def test_an_answer_inside_the_calibration_keeps_its_choice_and_a_bounded_interval(domain) -> None:
    pool, space, enc = domain
    cal = calibrate(LexiconClassifier(), pool, space, enc, ks=KS, max_pairs=None, combiners=("ridge",))
    shift = cal.meta["shift"]
    # The lexicon model was trained on no pool text: it treats originals and edits alike.
    assert shift["trained_on_declared"] is False and "memorisation" not in shift, shift
    assert shift["trained_on_found"].startswith(
        "nothing: the classifier is about as confident on the originals"
    )
    assert shift["originals_vs_edits"]["ks_confidence"] < 0.2 and cal.situation is not None
    res = Resources(schema=pool.schema, pool=pool, encoder=enc, space=space, extra={"calibration": cal})
    auto = build_explainer("auto", res)
    text, labels = pool.texts[0], pool.labels[0]
    target = "Negative" if labels["food"] != "Negative" else "Positive"
    e = auto.explain(text, Intervention("food", target), LexiconClassifier(), 3, base_labels=labels)
    sit = e.details["situation"]
    assert sit["valid"] is True and "fallback" not in sit and sit["effective_pairs"] >= 30
    direction = f"{labels['food']}->{target}"
    assert e.details["estimator"] == cal.estimator_for("food", direction)
    lo, hi = np.array(e.details["interval"]["lower"]), np.array(e.details["interval"]["upper"])
    base = e.base_prediction
    # Clipped to what an ICaCE can be: base + ICaCE stays within [0, 1] at both ends.
    assert np.all(lo >= -base - 1e-9) and np.all(hi <= 1 - base + 1e-9)
    assert np.all(lo <= e.icace + 1e-5) and np.all(e.icace <= hi + 1e-5)


def test_a_report_cell_says_how_its_texts_compare_with_the_calibration(domain) -> None:
    from explainers.reports.report import Cell, calibration_lookup

    pool, space, enc = domain
    cal = calibrate(LexiconClassifier(), pool, space, enc, ks=KS, max_pairs=None, combiners=("ridge",))
    lookup = calibration_lookup(cal, LexiconClassifier.labels)
    inside = LexiconClassifier().predict_proba(pool.texts[:20])  # texts like the calibration's own
    got = lookup(Cell("food", "Positive", "Negative"), inside)
    assert got is not None and got["shift"]["n_queries"] == 20 and got["shift"]["share_outside"] < 0.5
    assert set(got["shift"]) >= {
        "ks_confidence",
        "ks_entropy",
        "confidence_queries",
        "confidence_calibration",
    }
