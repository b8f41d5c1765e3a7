"""Stacks of component estimates: pooled and per-cell non-negative weights, and the simplex projection.

A cell is one (concept, direction). Its own NNLS weights are noisy when it has few pairs,
so they are shrunk toward the pooled weights: w = (n w_cell + tau w_pooled) / (n + tau),
and a cell with fewer than `min_pairs` pairs uses the pooled weights alone.

`project_to_simplex`: base + ICaCE is a probability vector, and so is the truth's
base + true ICaCE. Projecting base + estimate onto the simplex (a convex set holding the
truth) can only bring the estimate closer to the truth in L2, never further; it also
makes the estimate's labels sum to zero, as every true ICaCE does.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from explainers.estimators.crossfit import combine, fit_weights


def project_to_simplex(v: np.ndarray) -> np.ndarray:
    """Euclidean projection of each row of v onto {p : p >= 0, sum p = 1} (sort-based, exact)."""
    v = np.atleast_2d(np.asarray(v, float))
    n, d = v.shape
    u = -np.sort(-v, axis=1)
    css = np.cumsum(u, axis=1) - 1.0
    ind = np.arange(1, d + 1)
    cond = u - css / ind > 0
    rho = d - 1 - np.argmax(cond[:, ::-1], axis=1)
    theta = css[np.arange(n), rho] / (rho + 1)
    return np.maximum(v - theta[:, None], 0.0)


def project_icace(estimates: np.ndarray, base: np.ndarray) -> np.ndarray:
    """ICaCE estimates moved so that base + estimate is a probability vector (rows)."""
    est, b = np.atleast_2d(np.asarray(estimates, float)), np.atleast_2d(np.asarray(base, float))
    return project_to_simplex(b + est) - b


def cell_key(concept: str, direction: str) -> str:
    return f"{concept}:{direction}"


@dataclass
class CellStack:
    """Pooled weights plus shrunk per-cell weights over a fixed list of components."""

    components: list[str]
    pooled: dict[str, float]
    cells: dict[str, dict[str, float]] = field(default_factory=dict)
    cell_pairs: dict[str, int] = field(default_factory=dict)
    tau: float = 50.0
    min_pairs: int = 30

    def weights(self, concept: str, direction: str) -> dict[str, float]:
        return self.cells.get(cell_key(concept, direction), self.pooled)

    def predict(
        self, estimates: Mapping[str, np.ndarray], concepts: Sequence[str], directions: Sequence[str]
    ) -> np.ndarray:
        first = np.asarray(estimates[self.components[0]], float)
        out = np.zeros_like(first)
        for key in {cell_key(c, d) for c, d in zip(concepts, directions, strict=True)}:
            rows = np.array([cell_key(c, d) == key for c, d in zip(concepts, directions, strict=True)])
            w = self.cells.get(key, self.pooled)
            out[rows] = combine({n: np.asarray(estimates[n], float)[rows] for n in self.components}, w)
        return out

    def to_dict(self) -> dict[str, Any]:
        return {
            "components": self.components,
            "pooled": self.pooled,
            "cells": self.cells,
            "cell_pairs": self.cell_pairs,
            "tau": self.tau,
            "min_pairs": self.min_pairs,
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> CellStack:
        return cls(
            list(d["components"]),
            dict(d["pooled"]),
            {k: dict(v) for k, v in d.get("cells", {}).items()},
            dict(d.get("cell_pairs", {})),
            float(d.get("tau", 50.0)),
            int(d.get("min_pairs", 30)),
        )


def fit_cell_stack(
    estimates: Mapping[str, np.ndarray],
    truths: np.ndarray,
    concepts: Sequence[str],
    directions: Sequence[str],
    *,
    tau: float = 50.0,
    min_pairs: int = 30,
) -> CellStack:
    """NNLS weights on all pairs, and per cell with enough pairs, shrunk toward the pooled ones."""
    names = list(estimates)
    pooled = fit_weights(estimates, truths)
    by_cell: dict[str, list[int]] = defaultdict(list)
    for i, (c, d) in enumerate(zip(concepts, directions, strict=True)):
        by_cell[cell_key(c, d)].append(i)
    cells: dict[str, dict[str, float]] = {}
    for key, idx in by_cell.items():
        if len(idx) < min_pairs:
            continue
        own = fit_weights({n: np.asarray(estimates[n])[idx] for n in names}, np.asarray(truths)[idx])
        a = len(idx) / (len(idx) + tau)
        cells[key] = {n: round(a * own[n] + (1 - a) * pooled[n], 6) for n in names}
    return CellStack(names, pooled, cells, {k: len(v) for k, v in by_cell.items()}, tau, min_pairs)
