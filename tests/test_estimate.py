"""explainers/estimate.py: ICaCE aggregation (mean, similarity-weighted, threshold) and the CaCE bootstrap."""

from __future__ import annotations

import numpy as np
import pytest

from explainers.estimate import cace, icace_from_predictions

BASE = np.array([0.2, 0.5, 0.3])
PREDS = np.array([[0.1, 0.2, 0.7], [0.3, 0.3, 0.4], [0.0, 0.1, 0.9]])


def test_mean_is_mean_prediction_minus_base_with_population_spread() -> None:
    est = icace_from_predictions(BASE, PREDS)
    assert est.used == 3
    np.testing.assert_allclose(est.icace, PREDS.mean(axis=0) - BASE)
    np.testing.assert_allclose(est.spread, PREDS.std(axis=0))
    assert est.icace.sum() == pytest.approx(0.0, abs=1e-12)  # probabilities in, a sum-zero effect out


def test_similarity_weighting_moves_toward_the_closer_counterfactual() -> None:
    sims = np.array([0.9, 0.1, 0.1])
    est = icace_from_predictions(BASE, PREDS, similarities=sims, aggregation="similarity_weighted")
    w = sims / sims.sum()
    np.testing.assert_allclose(est.icace, (w[:, None] * PREDS).sum(axis=0) - BASE)
    plain = icace_from_predictions(BASE, PREDS)
    first = PREDS[0] - BASE
    assert np.linalg.norm(est.icace - first) < np.linalg.norm(plain.icace - first)


def test_threshold_drops_weak_matches_and_none_left_means_zero_effect() -> None:
    sims = np.array([0.9, 0.2, 0.8])
    est = icace_from_predictions(BASE, PREDS, similarities=sims, threshold=0.5)
    assert est.used == 2
    np.testing.assert_allclose(est.icace, PREDS[[0, 2]].mean(axis=0) - BASE)
    none = icace_from_predictions(BASE, PREDS, similarities=sims, threshold=0.95)
    assert none.used == 0
    assert not none.icace.any() and not none.spread.any()


def test_median_ignores_an_outlier_and_stays_a_probability_vector() -> None:
    base = np.array([0.5, 0.3, 0.2])
    preds = np.array([[0.6, 0.3, 0.1], [0.62, 0.28, 0.1], [0.58, 0.3, 0.12], [0.0, 0.0, 1.0]])
    est = icace_from_predictions(base, preds, aggregation="median")
    assert (base + est.icace).sum() == pytest.approx(1.0)
    assert np.all(base + est.icace >= 0)
    assert est.icace[0] > 0.05 and est.icace[2] < 0  # the flipped fourth prediction does not win
    mean = icace_from_predictions(base, preds).icace
    assert mean[2] > 0  # where it moves the mean the other way
    assert est.spread.shape == (3,) and np.all(est.spread >= 0)


def test_single_counterfactual_has_zero_spread_and_bad_aggregation_is_refused() -> None:
    est = icace_from_predictions(BASE, PREDS[:1])
    np.testing.assert_allclose(est.spread, 0.0)
    with pytest.raises(ValueError, match="unknown aggregation"):
        icace_from_predictions(BASE, PREDS, aggregation="mode")


def test_cace_is_the_mean_with_a_bootstrap_interval_around_it() -> None:
    rng = np.random.default_rng(0)
    icaces = rng.normal(loc=[0.1, -0.1], scale=0.05, size=(400, 2))
    est = cace(icaces, confidence=0.95, n_boot=500, seed=3)
    np.testing.assert_allclose(est.cace, icaces.mean(axis=0))
    assert np.all(est.ci_low < est.cace) and np.all(est.cace < est.ci_high)
    # The percentile interval's width is about 2 * 1.96 standard errors.
    se = icaces.std(axis=0) / np.sqrt(len(icaces))
    np.testing.assert_allclose(est.ci_high - est.ci_low, 2 * 1.96 * se, rtol=0.2)
    again = cace(icaces, confidence=0.95, n_boot=500, seed=3)
    np.testing.assert_array_equal(est.ci_low, again.ci_low)  # deterministic for a seed


def test_cace_of_one_text_is_that_text_and_bad_shapes_are_refused() -> None:
    one = cace(np.array([[0.2, -0.2]]))
    assert one.n == 1
    np.testing.assert_array_equal(one.ci_low, one.cace)
    with pytest.raises(ValueError):
        cace(np.zeros((0, 3)))
    with pytest.raises(ValueError):
        cace(np.zeros(3))
