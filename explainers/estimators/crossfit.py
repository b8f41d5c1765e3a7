"""Stacking weights for combined ICaCE estimators, fit by cross-fitting.

Given per-pair estimates of several methods (each (n, C)) and the true ICaCEs (n, C),
`fit_weights` finds non-negative weights w minimising sum ||sum_m w_m est_m - true||^2
(NNLS over all pairs and labels at once: one weight per method, so the stack cannot
memorise a label). Weights are not forced to sum to one: shrinking every estimate toward
zero is allowed, and often right, when the components are noisy.

`cross_fit` scores the stack honestly: pairs are split into folds by group (the base's
original_id on CEBaB, so edits of one review never sit on both sides) and each fold is
predicted with weights fit on the other folds. The weights a deployment uses are fit on
all pairs; the cross-fitted error is what the benchmark reports for them.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from scipy.optimize import nnls


def fit_weights(estimates: Mapping[str, np.ndarray], truths: np.ndarray) -> dict[str, float]:
    """Non-negative least-squares weights, one per method."""
    names = list(estimates)
    if not names:
        raise ValueError("no component estimates to stack")
    a = np.stack([np.asarray(estimates[n], float).ravel() for n in names], axis=1)
    w, _ = nnls(a, np.asarray(truths, float).ravel())
    return {n: round(float(x), 6) for n, x in zip(names, w, strict=True)}


def combine(estimates: Mapping[str, np.ndarray], weights: Mapping[str, float]) -> np.ndarray:
    first = np.asarray(next(iter(estimates.values())), float)
    out = np.zeros_like(first)
    for n, w in weights.items():
        out += w * np.asarray(estimates[n], float)
    return out


@dataclass
class CrossFit:
    """Out-of-fold stacked estimates plus the weights of every fold and of all data."""

    predictions: np.ndarray
    fold_weights: list[dict[str, float]]
    weights: dict[str, float]
    folds: int
    procedure: dict[str, Any] = field(default_factory=dict)


def group_folds(groups: Sequence[str], folds: int, seed: int = 0) -> np.ndarray:
    """Fold number per item; every item of a group lands in the same fold (seeded shuffle of groups)."""
    uniq = sorted(set(groups))
    rng = np.random.default_rng(seed)
    perm = rng.permutation(len(uniq))
    fold_of = {uniq[i]: int(k % folds) for k, i in enumerate(perm)}
    return np.array([fold_of[g] for g in groups], dtype=np.int64)


def cross_fit(
    estimates: Mapping[str, np.ndarray],
    truths: np.ndarray,
    groups: Sequence[str],
    *,
    folds: int = 2,
    seed: int = 0,
) -> CrossFit:
    """Score every pair with weights fit only on pairs of other groups' folds."""
    truths = np.asarray(truths, float)
    fold = group_folds(groups, folds, seed)
    pred = np.zeros_like(truths)
    fold_weights: list[dict[str, float]] = []
    for k in range(folds):
        train, test = fold != k, fold == k
        if not train.any() or not test.any():
            fold_weights.append({})
            continue
        w = fit_weights({n: np.asarray(e)[train] for n, e in estimates.items()}, truths[train])
        fold_weights.append(w)
        pred[test] = combine({n: np.asarray(e)[test] for n, e in estimates.items()}, w)
    weights = fit_weights(estimates, truths)
    procedure = {
        "method": "non-negative least squares over pairs x labels, no intercept",
        "cross_fitting": f"{folds} folds split by group (original_id), seed {seed}",
        "n_pairs": int(len(truths)),
    }
    return CrossFit(pred, fold_weights, weights, folds, procedure)
