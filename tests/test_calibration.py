"""Calibration of estimators on a small synthetic domain (a real lexicon model, real MiniLM embeddings)."""

from __future__ import annotations

import numpy as np
import pytest

from explainers.concepts import Intervention
from explainers.estimators.calibration import Calibration, fingerprint
from explainers.estimators.calibration_fit import calibrate
from explainers.estimators.heldout import heldout_pairs, origin_folds, pool_origins
from explainers.estimators.intervals import Intervals, conformal_halfwidth, coverage_of, fit_intervals
from explainers.estimators.stack import fit_cell_stack, project_icace, project_to_simplex
from explainers.registry import Resources, build_explainer
from tests.calibration_fixtures import LexiconClassifier, synthetic_domain

KS = (1, 3)


@pytest.fixture(scope="module")
def domain():
    return synthetic_domain(90)


@pytest.fixture(scope="module")
def calibration(domain) -> Calibration:
    pool, space, enc = domain
    return calibrate(
        LexiconClassifier(),
        pool,
        space,
        enc,
        ks=KS,
        max_pairs=None,
        classifier_name="lexicon",
        combiners=("ridge",),
    )


def test_fold_pools_never_hold_a_heldout_pairs_origin(domain) -> None:
    pool, _, _ = domain
    origins = pool_origins(pool)
    fold_of = origin_folds(origins, 3, seed=1)
    pairs = heldout_pairs(pool, fold_of)
    assert pairs and {p.fold for p in pairs} == {0, 1, 2}
    for f in range(3):
        rows = [i for i in range(len(pool)) if fold_of[origins[i]] != f]
        sub = pool.subset(rows)
        sub_texts, sub_origins = set(sub.texts), set(sub.origins)
        for p in (p for p in pairs if p.fold == f):
            assert p.origin not in sub_origins
            assert pool.texts[p.base] not in sub_texts and pool.texts[p.cf] not in sub_texts
        # Pairs inside the fold pool are remapped onto its own rows and keep their texts.
        for b, c, con in sub.pairs:
            assert sub.origins[b] == sub.origins[c] and sub.labels[b][con] != sub.labels[c][con]


def test_calibration_weights_are_non_negative_and_cells_shrink_to_pooled(calibration: Calibration) -> None:
    assert calibration.stacks
    for st in calibration.stacks.values():
        assert all(w >= 0 for w in st.pooled.values())
        for w in st.cells.values():
            assert all(x >= 0 for x in w.values())
    # Each pool text once, then at most splice's capped K new texts per held-out pair.
    protocol, texts = calibration.meta["protocol"], calibration.meta["cost"]["classifier_texts"]
    cap = protocol["options"]["splice_max_k"]
    assert cap == max(KS)
    size = calibration.meta["pool"]["size"]
    assert size < texts <= size + protocol["heldout_pairs"] * cap
    assert calibration.meta["classifier"]["fingerprint"]
    assert calibration.meta["coverage"]["nominal"] == 0.9
    table = calibration.report["methods"]
    assert {"match@1", "pair_transfer@3", "s_learner@1", "splice@3"} <= set(table)
    for row in table.values():
        assert set(row["macro"]) == {"l2", "cos", "normdiff"}
    # Every (concept, direction) of the held-out pairs has an expected error.
    assert calibration.expected and all("l2" in v and "cos" in v for v in calibration.expected.values())


def test_calibrated_auto_beats_zero_on_heldout_pairs(calibration: Calibration) -> None:
    auto = calibration.report["auto"]["macro"]
    assert auto["l2"] < calibration.report["zero"]["l2"]
    assert auto["cos"] < 0.5


def test_cell_stack_shrinks_small_cells_to_pooled() -> None:
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(200, 3)), rng.normal(size=(200, 3))
    truth = 0.7 * a + 0.2 * b
    concepts = ["food"] * 180 + ["service"] * 20
    dirs = ["Positive->Negative"] * 200
    st = fit_cell_stack({"a": a, "b": -b}, truth, concepts, dirs, min_pairs=30)
    assert st.pooled["b"] == 0.0 and st.pooled["a"] == pytest.approx(0.7, abs=0.05)  # NNLS keeps b at zero
    assert "service:Positive->Negative" not in st.cells  # 20 pairs: pooled weights
    assert st.weights("service", "Positive->Negative") == st.pooled


def test_simplex_projection_keeps_probabilities_and_never_moves_away_from_truth() -> None:
    rng = np.random.default_rng(1)
    base = rng.dirichlet(np.ones(5), size=300)
    after = rng.dirichlet(np.ones(5), size=300)
    truth = after - base
    est = truth + rng.normal(scale=0.3, size=truth.shape)
    proj = project_icace(est, base)
    moved = base + proj
    assert np.all(moved >= -1e-12) and np.allclose(moved.sum(axis=1), 1.0)
    assert np.all(np.linalg.norm(proj - truth, axis=1) <= np.linalg.norm(est - truth, axis=1) + 1e-12)
    np.testing.assert_allclose(project_to_simplex(np.array([[0.2, 0.3, 0.5]])), [[0.2, 0.3, 0.5]])


def test_conformal_interval_coverage_on_synthetic_data_is_near_nominal() -> None:
    rng = np.random.default_rng(2)
    n = 4000
    truth = rng.normal(size=(2 * n, 3))
    est = truth + rng.standard_t(df=4, size=(2 * n, 3)) * 0.2
    concepts, dirs = ["food"] * (2 * n), ["a->b"] * (2 * n)
    iv = fit_intervals(est[:n], truth[:n], concepts[:n], dirs[:n], coverage=0.9)
    lo, hi = zip(*(iv.bounds(e, "food", "a->b") for e in est[n:]), strict=True)
    cov = coverage_of(est[n:], truth[n:], np.array(lo), np.array(hi))
    assert cov["per_label"] == pytest.approx(0.9, abs=0.02)
    assert np.isinf(conformal_halfwidth(np.ones((5, 2)), 0.9)).all()  # too few residuals for 90%


def test_a_cell_of_exact_estimates_gets_a_zero_width_interval_counted_apart() -> None:
    """Where 95% of a cell's held-out estimates are exact, its half-width is 0 and covers them all
    (coverage 1 there by construction); the coverage of the positive-width intervals stays nominal."""
    rng = np.random.default_rng(3)
    n = 4000
    truth = rng.normal(size=(2 * n, 2))
    noisy = truth + rng.normal(size=(2 * n, 2)) * 0.2
    exact = np.where(rng.random((2 * n, 1)) < 0.95, truth, noisy)  # the "-> unknown" cell
    est = np.concatenate([noisy, exact])
    truths = np.concatenate([truth, truth])
    concepts = ["plot"] * (4 * n)
    dirs = ["good->bad"] * (2 * n) + ["good->unknown"] * (2 * n)
    train = np.r_[0:n, 2 * n : 3 * n]
    test = np.r_[n : 2 * n, 3 * n : 4 * n]
    iv = fit_intervals(est[train], truths[train], [concepts[i] for i in train], [dirs[i] for i in train])
    assert iv.halfwidth("plot", "good->unknown").tolist() == [0.0, 0.0]
    lo, hi = zip(*(iv.bounds(est[i], concepts[i], dirs[i]) for i in test), strict=True)
    cov = coverage_of(est[test], truths[test], np.array(lo), np.array(hi))
    assert cov["per_label"] == pytest.approx(
        0.5 * 0.9 + 0.5 * 0.95, abs=0.02
    )  # exact ones all in, noisy ones out
    assert cov["zero_width"] == pytest.approx(0.5)
    assert cov["per_label_positive_width"] == pytest.approx(0.9, abs=0.02)


def test_fingerprint_detects_a_changed_model(domain, calibration: Calibration, tmp_path) -> None:
    pool, space, enc = domain
    ok, _ = calibration.check_classifier(LexiconClassifier())
    assert ok
    changed, got = calibration.check_classifier(LexiconClassifier(shift=0.3))
    assert not changed and got != calibration.meta["classifier"]["fingerprint"]
    assert fingerprint(np.array([[0.5, 0.5]])) == fingerprint(np.array([[0.50001, 0.49999]]))
    # Saved and loaded: the same artifact, and auto refuses to use it for the changed model.
    calibration.save(tmp_path / "cal")
    loaded = Calibration.load(tmp_path / "cal")
    assert loaded.meta["format_version"] == 1 and loaded.meta["kind"] == "calibration"
    assert loaded.choice == calibration.choice and loaded.default == calibration.default
    res = Resources(
        schema=pool.schema, pool=pool, encoder=enc, space=space, extra={"calibration": str(tmp_path / "cal")}
    )
    auto = build_explainer("auto", res)
    text, labels = pool.texts[0], pool.labels[0]
    target = "Negative" if labels["food"] != "Negative" else "Positive"
    good = auto.explain(text, Intervention("food", target), LexiconClassifier(), 3, base_labels=labels)
    assert good.details["calibrated"] is True
    lo, hi = np.array(good.details["interval"]["lower"]), np.array(good.details["interval"]["upper"])
    assert (
        np.all(lo <= good.icace + 1e-5)
        and np.all(good.icace <= hi + 1e-5)
        and good.details["interval"]["coverage"] == 0.9
    )
    assert good.details["expected_error"]["l2"] >= 0 and good.details["estimator"]
    # Residuals all 0 (this lexicon domain's estimates are exact): a zero-width interval that says
    # why; residuals of 0.1: an interval of positive width and no such note.
    for residual, folder in ((0.0, "exact"), (0.1, "wide")):
        cal = Calibration.load(tmp_path / "cal")
        cal.intervals = Intervals(0.9, [residual] * 3, {}, cal.intervals.min_pairs)
        assert cal.situation is not None
        cal.situation.residuals = np.full_like(cal.situation.residuals, residual)
        cal.save(tmp_path / folder)
        extra = {"calibration": str(tmp_path / folder)}
        got = build_explainer(
            "auto", Resources(schema=pool.schema, pool=pool, encoder=enc, space=space, extra=extra)
        ).explain(text, Intervention("food", target), LexiconClassifier(), 3, base_labels=labels)
        interval = got.details["interval"]
        if residual == 0.0:
            assert interval["lower"] == interval["upper"] and "exact (residual 0)" in interval["note"]
        else:
            assert interval["lower"] != interval["upper"] and "note" not in interval
    assert good.base_prediction.shape == good.icace.shape == (3,)
    stale = auto.explain(
        text, Intervention("food", target), LexiconClassifier(shift=0.3), 3, base_labels=labels
    )
    assert stale.details["calibrated"] is False and "model changed" in stale.details["note"]


def test_auto_without_calibration_says_so(domain) -> None:
    pool, space, enc = domain
    auto = build_explainer("auto", Resources(schema=pool.schema, pool=pool, encoder=enc, space=space))
    e = auto.explain(
        pool.texts[3],
        Intervention("service", "Negative", "Positive"),
        LexiconClassifier(),
        3,
        base_labels=pool.labels[3],
    )
    assert e.details["calibrated"] is False and "no calibration" in e.details["note"]
    assert np.all(e.base_prediction + e.icace >= -1e-9)  # projected onto the simplex
    # Its uncertainty is the spread its counterfactuals measured (it was 0.000 whatever they said).
    (component,) = auto_components = list(e.details["weights"])
    method, k = component.split("@")
    alone = build_explainer(
        method, Resources(schema=pool.schema, pool=pool, encoder=enc, space=space)
    ).explain(
        pool.texts[3],
        Intervention("service", "Negative", "Positive"),
        LexiconClassifier(),
        int(k),
        base_labels=pool.labels[3],
    )
    assert len(alone.counterfactuals) >= 2, auto_components
    np.testing.assert_allclose(e.spread, alone.spread)
    assert e.details["used"] == len(alone.counterfactuals)


def test_budget_cuts_the_pool_to_whole_origins(domain) -> None:
    pool, space, enc = domain
    cal = calibrate(
        LexiconClassifier(),
        pool,
        space,
        enc,
        methods=("s_learner", "conexp"),
        ks=(1,),
        max_classifier_texts=120,
        combiners=(),
    )
    assert cal.meta["cost"]["classifier_texts"] <= 120
    assert cal.meta["pool"]["size"] <= 120 and cal.meta["pool"]["size"] % 3 == 0  # three texts per origin
