"""ICaCE and CaCE estimators.

ICaCE (individual causal concept effect) for one text is an aggregate of the model's
predictions on K counterfactuals minus its prediction on the text itself. Gat et al.
use the plain mean over the top-K; we also offer a similarity-weighted mean (closer
matches count more) and a similarity threshold (drop poor matches; if none survive the
estimate is zero, the honest "no evidence" answer). CaCE is the mean ICaCE over texts,
with a percentile-bootstrap confidence interval.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

AGGREGATIONS = ("mean", "similarity_weighted", "median")


@dataclass
class IcaceEstimate:
    icace: np.ndarray
    spread: np.ndarray
    used: int


def icace_from_predictions(
    base: np.ndarray,
    counterfactual_predictions: np.ndarray,
    *,
    similarities: np.ndarray | None = None,
    aggregation: str = "mean",
    threshold: float | None = None,
) -> IcaceEstimate:
    """Aggregate K counterfactual predictions (K, C) against the base prediction (C,)."""
    base = np.asarray(base, dtype=np.float64)
    preds = np.asarray(counterfactual_predictions, dtype=np.float64).reshape(-1, base.shape[0])
    if aggregation not in AGGREGATIONS:
        raise ValueError(f"unknown aggregation {aggregation!r}; choose one of {AGGREGATIONS}")
    sims = np.ones(len(preds)) if similarities is None else np.asarray(similarities, dtype=np.float64)
    if threshold is not None:
        keep = sims >= threshold
        preds, sims = preds[keep], sims[keep]
    if len(preds) == 0:
        zero = np.zeros_like(base)
        return IcaceEstimate(zero, zero.copy(), 0)
    if aggregation == "similarity_weighted":
        w = np.clip(sims, 1e-6, None)
        w = w / w.sum()
        agg = (w[:, None] * preds).sum(axis=0)
        spread = np.sqrt((w[:, None] * (preds - agg) ** 2).sum(axis=0))
    elif aggregation == "median":
        # Per-label median, rescaled to sum as the predictions do: a few counterfactuals that
        # flip a saturated classifier (a bad edit) do not move it, where they move the mean.
        med = np.median(preds, axis=0)
        total = med.sum()
        agg = med * (preds.sum(axis=1).mean() / total) if total > 0 else med
        spread = 1.4826 * np.median(np.abs(preds - med), axis=0)  # MAD, scaled to a normal's std
    else:
        agg = preds.mean(axis=0)
        spread = preds.std(axis=0)
    return IcaceEstimate(agg - base, spread, len(preds))


@dataclass
class CaceEstimate:
    cace: np.ndarray
    ci_low: np.ndarray
    ci_high: np.ndarray
    n: int
    confidence: float


def cace(icaces: np.ndarray, *, confidence: float = 0.95, n_boot: int = 1000, seed: int = 0) -> CaceEstimate:
    """Mean ICaCE over texts with a percentile bootstrap CI (deterministic for a seed)."""
    arr = np.asarray(icaces, dtype=np.float64)
    if arr.ndim != 2 or len(arr) == 0:
        raise ValueError(f"cace needs an (n, C) array with n >= 1, got shape {arr.shape}")
    mean = arr.mean(axis=0)
    if len(arr) == 1:
        return CaceEstimate(mean, mean.copy(), mean.copy(), 1, confidence)
    rng = np.random.default_rng(seed)
    # Resamples are drawn a block at a time so a million texts never need an (n_boot, n) index
    # matrix; the generator yields the same indices either way, so the interval is the same (up to
    # float summation order, ~1e-16).
    block = max(1, min(n_boot, 1_000_000 // len(arr)))
    boots = np.empty((n_boot, arr.shape[1]))
    for start in range(0, n_boot, block):
        stop = min(n_boot, start + block)
        idx = rng.integers(0, len(arr), size=(stop - start, len(arr)))
        boots[start:stop] = arr[idx].mean(axis=1)
    alpha = (1 - confidence) / 2
    low, high = np.quantile(boots, [alpha, 1 - alpha], axis=0)
    return CaceEstimate(mean, low, high, len(arr), confidence)
