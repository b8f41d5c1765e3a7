"""ICaCE-error metrics, exactly as CEBaB defines them, and the two ways to average them.

CEBaB (Abraham et al., 2022, `eval_pipeline/utils/metric_utils.py`) scores an explainer
by comparing, per counterfactual pair, its estimated ICaCE vector with the true one
(model(counterfactual) - model(base)):

- L2: the Euclidean distance between the two vectors;
- Cosine: 1 - cos(true, estimate), set to 1 when either vector is all zero (cosine is
  undefined there; 1 is the distance of an uninformative estimate, so the Zero
  explainer scores exactly 1);
- NormDiff: | ||true|| - ||estimate|| |, which ignores direction and checks magnitude.

CEBaB reports the mean over all pairs (micro). Gat et al. (ICLR 2024) report a macro
average that keeps frequent cells from dominating: mean per (concept, direction) cell,
then mean over each concept's directions, then mean over concepts. Both are here.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np


def l2(estimate: np.ndarray, true: np.ndarray) -> np.ndarray:
    """Row-wise Euclidean distance between (n, C) arrays (or a scalar for two vectors)."""
    return np.linalg.norm(np.asarray(estimate, float) - np.asarray(true, float), axis=-1)


def cosine_distance(estimate: np.ndarray, true: np.ndarray) -> np.ndarray:
    """Row-wise 1 - cos; 1 where either vector is all zero (CEBaB's convention)."""
    e, t = np.asarray(estimate, float), np.asarray(true, float)
    ne, nt = np.linalg.norm(e, axis=-1), np.linalg.norm(t, axis=-1)
    zero = (ne == 0) | (nt == 0)
    denom = np.where(zero, 1.0, ne * nt)
    cos = np.sum(e * t, axis=-1) / denom
    return np.where(zero, 1.0, 1.0 - cos)


def norm_diff(estimate: np.ndarray, true: np.ndarray) -> np.ndarray:
    """Row-wise | ||true|| - ||estimate|| |."""
    return np.abs(
        np.linalg.norm(np.asarray(true, float), axis=-1)
        - np.linalg.norm(np.asarray(estimate, float), axis=-1)
    )


def pair_errors(estimates: np.ndarray, truths: np.ndarray) -> dict[str, np.ndarray]:
    """The three errors for every pair: {"l2": (n,), "cos": (n,), "normdiff": (n,)}."""
    est, tru = np.atleast_2d(np.asarray(estimates, float)), np.atleast_2d(np.asarray(truths, float))
    if est.shape != tru.shape:
        raise ValueError(f"estimates {est.shape} and true ICaCEs {tru.shape} differ in shape")
    return {"l2": l2(est, tru), "cos": cosine_distance(est, tru), "normdiff": norm_diff(est, tru)}


def micro_average(errors: dict[str, np.ndarray]) -> dict[str, float]:
    """CEBaB's score: the plain mean over all pairs."""
    return {m: float(np.mean(v)) if len(v) else float("nan") for m, v in errors.items()}


def _cell_means(
    values: np.ndarray, concepts: Sequence[str], directions: Sequence[str]
) -> dict[tuple[str, str], float]:
    groups: dict[tuple[str, str], list[float]] = defaultdict(list)
    for v, c, d in zip(values, concepts, directions, strict=True):
        groups[(c, d)].append(float(v))
    return {k: float(np.mean(v)) for k, v in groups.items()}


def macro_average(
    errors: dict[str, np.ndarray], concepts: Sequence[str], directions: Sequence[str]
) -> tuple[dict[str, float], dict[str, dict[str, float]]]:
    """The paper's macro average and, on the way, the per-concept averages.

    Returns ({metric: macro}, {concept: {metric: mean over that concept's directions}}).
    A concept averages over the directions that have pairs (6 on CEBaB: Positive,
    Negative, unknown to each other); the total averages over concepts with pairs.
    """
    macro: dict[str, float] = {}
    per_concept: dict[str, dict[str, float]] = defaultdict(dict)
    for m, values in errors.items():
        cells = _cell_means(values, concepts, directions)
        by_concept: dict[str, list[float]] = defaultdict(list)
        for (c, _), mean in cells.items():
            by_concept[c].append(mean)
        concept_means = {c: float(np.mean(v)) for c, v in by_concept.items()}
        for c, v in concept_means.items():
            per_concept[c][m] = v
        macro[m] = float(np.mean(list(concept_means.values()))) if concept_means else float("nan")
    return macro, dict(per_concept)


@dataclass
class ErrorSummary:
    """Every aggregate the benchmark table reports for one explainer at one K."""

    n: int
    micro: dict[str, float]
    macro: dict[str, float]
    per_concept: dict[str, dict[str, float]]
    # Mean error per (concept, direction) cell and its pair count, for the JSON output.
    cells: dict[str, dict[str, float]] = field(default_factory=dict)

    def to_dict(self) -> dict:
        return {
            "n": self.n,
            "micro": self.micro,
            "macro": self.macro,
            "per_concept": self.per_concept,
            "cells": self.cells,
        }


def summarize(
    estimates: np.ndarray, truths: np.ndarray, concepts: Sequence[str], directions: Sequence[str]
) -> ErrorSummary:
    """Micro, macro, per-concept and per-cell errors of estimates against true ICaCEs."""
    errors = pair_errors(estimates, truths)
    if not (len(concepts) == len(directions) == len(errors["l2"])):
        raise ValueError("need one concept and one direction per pair")
    macro, per_concept = macro_average(errors, concepts, directions)
    cells: dict[str, dict[str, float]] = {}
    counts: dict[tuple[str, str], int] = defaultdict(int)
    for c, d in zip(concepts, directions, strict=True):
        counts[(c, d)] += 1
    for m, values in errors.items():
        for (c, d), mean in _cell_means(values, concepts, directions).items():
            cells.setdefault(f"{c}:{d}", {"n": counts[(c, d)]})[m] = mean
    return ErrorSummary(len(errors["l2"]), micro_average(errors), macro, per_concept, cells)
