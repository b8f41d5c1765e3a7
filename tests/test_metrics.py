"""ICaCE-error maths on hand-computed vectors, and both averaging schemes on a hand-built set."""

from __future__ import annotations

import math

import numpy as np
import pytest

from explainers.metrics import (
    cosine_distance,
    l2,
    macro_average,
    micro_average,
    norm_diff,
    pair_errors,
    summarize,
)


def test_l2_is_euclidean_distance() -> None:
    assert l2(np.array([0.1, -0.1, 0.0]), np.array([0.4, 0.3, 0.0])) == pytest.approx(0.5)  # 3-4-5 triangle
    assert l2(np.zeros(5), np.zeros(5)) == 0.0


def test_cosine_distance_hand_values() -> None:
    assert cosine_distance(np.array([1.0, 0.0]), np.array([2.0, 0.0])) == pytest.approx(0.0)
    assert cosine_distance(np.array([1.0, 0.0]), np.array([0.0, 3.0])) == pytest.approx(1.0)
    assert cosine_distance(np.array([1.0, 0.0]), np.array([-1.0, 0.0])) == pytest.approx(2.0)
    # 45 degrees: 1 - 1/sqrt(2)
    assert cosine_distance(np.array([1.0, 1.0]), np.array([1.0, 0.0])) == pytest.approx(1 - 1 / math.sqrt(2))


def test_cosine_distance_is_one_when_either_vector_is_zero() -> None:
    assert cosine_distance(np.zeros(3), np.array([0.2, -0.1, -0.1])) == 1.0
    assert cosine_distance(np.array([0.2, -0.1, -0.1]), np.zeros(3)) == 1.0
    assert cosine_distance(np.zeros(3), np.zeros(3)) == 1.0
    rows = cosine_distance(np.array([[0.0, 0.0], [1.0, 0.0]]), np.array([[1.0, 0.0], [1.0, 0.0]]))
    assert rows.tolist() == pytest.approx([1.0, 0.0])


def test_norm_diff() -> None:
    # |5 - 1| regardless of direction
    assert norm_diff(np.array([0.0, 1.0]), np.array([3.0, -4.0])) == pytest.approx(4.0)
    assert norm_diff(np.array([-3.0, 4.0]), np.array([3.0, -4.0])) == pytest.approx(0.0)


def test_pair_errors_rejects_shape_mismatch() -> None:
    with pytest.raises(ValueError, match="differ in shape"):
        pair_errors(np.zeros((2, 3)), np.zeros((2, 4)))


def _tiny_set():
    """Five pairs over two concepts; L2 errors are 1, 3, 2, 4, 10 by construction."""
    truths = np.zeros((5, 2))
    estimates = np.array([[1.0, 0.0], [3.0, 0.0], [0.0, 2.0], [0.0, 4.0], [6.0, 8.0]])
    concepts = ["food", "food", "food", "noise", "noise"]
    directions = [
        "Positive->Negative",
        "Positive->Negative",
        "Negative->Positive",
        "unknown->Positive",
        "unknown->Negative",
    ]
    return estimates, truths, concepts, directions


def test_micro_and_macro_averages_by_hand() -> None:
    est, tru, concepts, directions = _tiny_set()
    errors = pair_errors(est, tru)
    assert errors["l2"].tolist() == pytest.approx([1, 3, 2, 4, 10])
    assert micro_average(errors)["l2"] == pytest.approx(20 / 5)
    macro, per_concept = macro_average(errors, concepts, directions)
    # food cells: P->N mean(1,3)=2, N->P 2 -> food 2; noise cells: 4 and 10 -> noise 7; macro (2+7)/2
    assert per_concept["food"]["l2"] == pytest.approx(2.0)
    assert per_concept["noise"]["l2"] == pytest.approx(7.0)
    assert macro["l2"] == pytest.approx(4.5)
    # True ICaCE is zero everywhere, so every cosine is 1 and NormDiff equals L2 here.
    assert macro["cos"] == pytest.approx(1.0)
    assert macro["normdiff"] == pytest.approx(4.5)


def test_summarize_reports_cells_and_counts() -> None:
    est, tru, concepts, directions = _tiny_set()
    s = summarize(est, tru, concepts, directions)
    assert s.n == 5
    assert s.cells["food:Positive->Negative"] == {
        "n": 2,
        "l2": pytest.approx(2.0),
        "cos": 1.0,
        "normdiff": pytest.approx(2.0),
    }
    assert s.micro["l2"] == pytest.approx(4.0) and s.macro["l2"] == pytest.approx(4.5)
    with pytest.raises(ValueError):
        summarize(est, tru, concepts[:4], directions)


def test_macro_differs_from_micro_when_cells_are_unbalanced() -> None:
    # 9 easy pairs in one cell, 1 hard pair in another cell of the same concept.
    tru = np.zeros((10, 2))
    est = np.zeros((10, 2))
    est[9] = [1.0, 0.0]
    concepts = ["service"] * 10
    directions = ["Positive->Negative"] * 9 + ["Negative->Positive"]
    s = summarize(est, tru, concepts, directions)
    assert s.micro["l2"] == pytest.approx(0.1)
    assert s.macro["l2"] == pytest.approx(0.5)
