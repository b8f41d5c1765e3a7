"""A learned combiner: a regression from the component estimates to the true ICaCE.

Features per pair: every component's estimate (one column per label), the base prediction
(an effect is bounded by where the text starts: a text already at 5 stars cannot gain
much 5-star probability), and one-hot concept, concept:source and concept:target. One
model per label: gradient boosting (sklearn's HistGradientBoostingRegressor) or ridge.
The output is projected onto the simplex like every other estimate (see stack.py).
Cross-fit by origin: each pair is predicted by a model that never saw its review group.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from explainers.estimators.crossfit import group_folds

KINDS = ("hgb", "ridge")


@dataclass
class Combiner:
    """Fitted per-label regressors over a fixed list of components and categories."""

    kind: str
    components: list[str]
    categories: list[str]
    n_labels: int
    models: list[Any] = field(default_factory=list)

    def features(
        self,
        estimates: Mapping[str, np.ndarray],
        base: np.ndarray,
        concepts: Sequence[str],
        sources: Sequence[str],
        targets: Sequence[str],
    ) -> np.ndarray:
        base = np.atleast_2d(np.asarray(base, float))
        cols = [np.atleast_2d(np.asarray(estimates[n], float)) for n in self.components] + [base]
        col_of = {c: j for j, c in enumerate(self.categories)}
        onehot = np.zeros((len(base), len(self.categories)))
        for i, (c, s, t) in enumerate(zip(concepts, sources, targets, strict=True)):
            for key in (c, f"{c}:from:{s}", f"{c}:to:{t}"):
                if key in col_of:
                    onehot[i, col_of[key]] = 1.0
        return np.concatenate(cols + [onehot], axis=1)

    def predict_features(self, x: np.ndarray) -> np.ndarray:
        return np.stack([m.predict(x) for m in self.models], axis=1)

    def predict(
        self,
        estimates: Mapping[str, np.ndarray],
        base: np.ndarray,
        concepts: Sequence[str],
        sources: Sequence[str],
        targets: Sequence[str],
    ) -> np.ndarray:
        return self.predict_features(self.features(estimates, base, concepts, sources, targets))


def _new_model(kind: str, seed: int) -> Any:
    if kind == "hgb":
        from sklearn.ensemble import HistGradientBoostingRegressor

        return HistGradientBoostingRegressor(
            max_iter=250,
            learning_rate=0.05,
            max_leaf_nodes=15,
            min_samples_leaf=20,
            l2_regularization=1.0,
            random_state=seed,
        )
    if kind == "ridge":
        from sklearn.linear_model import Ridge

        return Ridge(alpha=1.0)
    raise ValueError(f"unknown combiner kind {kind!r}; choose one of {KINDS}")


def fit_combiner(
    kind: str,
    estimates: Mapping[str, np.ndarray],
    truths: np.ndarray,
    base: np.ndarray,
    concepts: Sequence[str],
    sources: Sequence[str],
    targets: Sequence[str],
    seed: int = 0,
) -> Combiner:
    cats = (
        sorted(set(concepts))
        + sorted({f"{c}:from:{s}" for c, s in zip(concepts, sources, strict=True)})
        + sorted({f"{c}:to:{t}" for c, t in zip(concepts, targets, strict=True)})
    )
    truths = np.asarray(truths, float)
    comb = Combiner(kind, list(estimates), cats, truths.shape[1])
    x = comb.features(estimates, base, concepts, sources, targets)
    comb.models = [_new_model(kind, seed).fit(x, truths[:, j]) for j in range(truths.shape[1])]
    return comb


def cross_fit_combiner(
    kind: str,
    estimates: Mapping[str, np.ndarray],
    truths: np.ndarray,
    base: np.ndarray,
    concepts: Sequence[str],
    sources: Sequence[str],
    targets: Sequence[str],
    groups: Sequence[str],
    *,
    folds: int = 2,
    seed: int = 0,
) -> np.ndarray:
    """Out-of-fold predictions: each pair predicted by a combiner fit on the other origin folds."""
    fold = group_folds(groups, folds, seed + 1)
    out = np.zeros_like(np.asarray(truths, float))
    for k in range(folds):
        tr, te = fold != k, fold == k
        if not tr.any() or not te.any():
            continue
        sel = lambda seq, m: [s for s, keep in zip(seq, m, strict=True) if keep]  # noqa: E731
        comb = fit_combiner(
            kind,
            {n: np.asarray(e)[tr] for n, e in estimates.items()},
            np.asarray(truths)[tr],
            np.asarray(base)[tr],
            sel(concepts, tr),
            sel(sources, tr),
            sel(targets, tr),
            seed,
        )
        out[te] = comb.predict(
            {n: np.asarray(e)[te] for n, e in estimates.items()},
            np.asarray(base)[te],
            sel(concepts, te),
            sel(sources, te),
            sel(targets, te),
        )
    return out
