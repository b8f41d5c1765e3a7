"""Shift between the calibration's pairs and the texts being explained, and what it does to `auto`.

A calibration measures its estimators on the domain's own counterfactual pairs. A classifier
trained on those texts is overconfident on them: the effects it shows there are not the ones it
shows on new texts, so errors measured there are not errors on new texts (issue 23: expected
L2 0.112, actual 0.219 on a movie corpus whose classifier was trained on the pool's originals).

The classifier's *behaviour* on a text is what changes, not the text's content, so the shift is
read from the classifier's own prediction on the base text: its confidence (top probability) and
its normalised entropy (`behaviour`). Three things use it:

- `Situation` keeps the calibration pairs' behaviour and their cross-fitted errors of `auto`.
  For one text it weighs those pairs by how much their base prediction looks like this text's
  (a Gaussian kernel in behaviour space: localised, weighted split-conformal) and gives the
  expected error and interval half-widths *for that situation*, with the effective number of
  pairs behind them. Too few (`min_effective`) and the answer says its numbers are not valid
  for this text, and why.
- `memorisation` compares the classifier's behaviour on texts it was trained on with the other
  pool texts (a two-sample KS statistic on confidence): how much it memorised.
- `compare` is the batch test (effects and reports): the queries' behaviour against the
  calibration pairs' (KS on confidence and entropy, the share of queries outside support).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from explainers.estimators.intervals import conformal_halfwidth

FEATURES = ("confidence", "entropy")
# Fewer effective calibration pairs than this near a text and its expected error and interval are
# not claimed for it (the error of a weighted 90% quantile from ~30 points is already about +-5 points).
MIN_EFFECTIVE_PAIRS = 30.0
# Kernel bandwidth per feature, as a share of that feature's spread over the calibration pairs
# (with a floor): wide enough that a typical text has hundreds of effective pairs, narrow enough
# that the confident-on-memorised-texts regime and the unsure-on-new-texts regime separate.
BANDWIDTH_SHARE = 0.25
BANDWIDTH_FLOOR = 0.03


def behaviour(probs: np.ndarray) -> np.ndarray:
    """(n, 2): the top probability and the entropy divided by log(number of labels)."""
    p = np.clip(np.atleast_2d(np.asarray(probs, float)), 1e-12, 1.0)
    conf = p.max(axis=1)
    ent = -(p * np.log(p)).sum(axis=1) / max(math.log(p.shape[1]), 1e-12)
    return np.stack([conf, ent], axis=1)


def ks_statistic(a: np.ndarray, b: np.ndarray) -> float:
    """Two-sample Kolmogorov-Smirnov statistic (largest gap between the empirical CDFs)."""
    a, b = np.sort(np.asarray(a, float)), np.sort(np.asarray(b, float))
    if not len(a) or not len(b):
        return float("nan")
    grid = np.concatenate([a, b])
    return float(
        np.max(
            np.abs(np.searchsorted(a, grid, "right") / len(a) - np.searchsorted(b, grid, "right") / len(b))
        )
    )


def weighted_quantile(values: np.ndarray, weights: np.ndarray, level: float, test_weight: float) -> float:
    """Weighted split-conformal quantile: the test point's own weight sits at +infinity.

    (Tibshirani et al., 2019: with weights proportional to the likelihood ratio between the test
    point's situation and the calibration's, the interval keeps its coverage under that shift.)
    """
    order = np.argsort(values)
    v, w = np.asarray(values, float)[order], np.asarray(weights, float)[order]
    total = w.sum() + test_weight
    if total <= 0:
        return float("inf")
    cum = np.cumsum(w) / total
    idx = int(np.searchsorted(cum, level, "left"))
    return float(v[idx]) if idx < len(v) else float("inf")


def memorisation(probs_trained: np.ndarray, probs_other: np.ndarray) -> dict[str, Any]:
    """How differently the classifier behaves on texts it was trained on and on the others."""
    if not len(probs_trained) or not len(probs_other):
        return {
            "measured": False,
            "why": "every pool text was in the classifier's training data"
            if len(probs_trained)
            else "no pool text was declared as training data",
        }
    bt, bo = behaviour(probs_trained), behaviour(probs_other)
    unsure_trained, unsure_other = 1.0 - float(bt[:, 0].mean()), 1.0 - float(bo[:, 0].mean())
    return {
        "measured": True,
        "confidence_trained": round(float(bt[:, 0].mean()), 4),
        "confidence_other": round(float(bo[:, 0].mean()), 4),
        "ks_confidence": round(ks_statistic(bt[:, 0], bo[:, 0]), 4),
        # How many times less unsure it is on its training texts (1 - mean confidence), capped.
        "uncertainty_ratio": round(min(1000.0, unsure_other / max(unsure_trained, 1e-6)), 3),
        "n_trained": len(bt),
        "n_other": len(bo),
    }


@dataclass
class LocalCheck:
    """What the calibration can claim for one text's situation."""

    valid: bool
    effective_pairs: float
    confidence: float
    confidence_percentile: float  # where this text's confidence falls among the calibration pairs'
    error_ratio: float  # local mean L2 of auto / its mean over every calibration pair
    halfwidth_ratio: np.ndarray  # per label: local weighted-conformal quantile / the pooled one
    why: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "valid": self.valid,
            "effective_pairs": round(self.effective_pairs, 1),
            "confidence": round(self.confidence, 4),
            "confidence_percentile": round(self.confidence_percentile, 3),
            "error_ratio": round(self.error_ratio, 3),
            **({"why": self.why} if self.why else {}),
        }


@dataclass
class Situation:
    """The calibration pairs' behaviour and `auto`'s cross-fitted errors on them."""

    features: np.ndarray  # (n, 2)
    l2: np.ndarray  # (n,)
    residuals: np.ndarray  # (n, C) |truth - auto|
    coverage: float
    bandwidth: np.ndarray = field(default_factory=lambda: np.array([0.05, 0.05]))
    min_effective: float = MIN_EFFECTIVE_PAIRS
    trained_pairs: bool = False  # every calibration pair touched a text the classifier was trained on
    # The per-label split-conformal half-width over every pair: what a text's local one is compared with.
    pooled_halfwidth: np.ndarray = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self.pooled_halfwidth = (
            conformal_halfwidth(self.residuals, self.coverage) if len(self.residuals) else np.ones(1)
        )

    @classmethod
    def fit(
        cls,
        base: np.ndarray,
        l2: np.ndarray,
        residuals: np.ndarray,
        coverage: float,
        trained_pairs: bool = False,
    ) -> Situation:
        x = behaviour(base)
        spread = np.quantile(x, 0.9, axis=0) - np.quantile(x, 0.1, axis=0) if len(x) else np.zeros(2)
        bw = np.maximum(BANDWIDTH_SHARE * spread, BANDWIDTH_FLOOR)
        return cls(
            x,
            np.asarray(l2, float),
            np.abs(np.asarray(residuals, float)),
            coverage,
            bw,
            trained_pairs=trained_pairs,
        )

    def weights(self, x: np.ndarray) -> np.ndarray:
        z = (self.features - np.asarray(x, float)[None, :]) / self.bandwidth[None, :]
        return np.exp(-0.5 * (z**2).sum(axis=1))

    def check(self, base_prediction: np.ndarray) -> LocalCheck:
        x = behaviour(base_prediction)[0]
        conf = float(x[0])
        pct = float(np.mean(self.features[:, 0] <= conf)) if len(self.features) else float("nan")
        if not len(self.features):
            return LocalCheck(False, 0.0, conf, pct, 1.0, np.ones(1), "the calibration kept no pairs")
        w = self.weights(x)
        n_eff = float(w.sum() ** 2 / max((w**2).sum(), 1e-300))
        mean_l2 = float(self.l2.mean())
        local_l2 = float((w * self.l2).sum() / w.sum()) if w.sum() > 0 else float("inf")
        ratio = local_l2 / mean_l2 if mean_l2 > 0 else 1.0
        pooled = self.pooled_halfwidth
        local = np.array(
            [
                weighted_quantile(self.residuals[:, j], w, self.coverage, 1.0)
                for j in range(self.residuals.shape[1])
            ]
        )
        with np.errstate(divide="ignore", invalid="ignore"):
            hw_ratio = np.where(pooled > 0, local / pooled, 1.0)
        why = None
        if self.trained_pairs:
            why = (
                "every calibration pair touched a text the classifier was trained on: its errors there are "
                "not its errors on new texts"
            )
        elif n_eff < self.min_effective:
            median = float(np.median(self.features[:, 0]))
            why = (
                f"only {n_eff:.0f} effective calibration pairs had a prediction like this text's (confidence "
                f"{conf:.2f}, at the {100 * pct:.0f}th percentile of the calibration pairs', median {median:.2f}): "
                "the classifier behaves here as it did on few calibration pairs"
            )
        return LocalCheck(why is None, n_eff, conf, pct, ratio, hw_ratio, why)

    def compare(self, query_probs: np.ndarray) -> dict[str, Any]:
        """The batch test: the queries' behaviour against the calibration pairs'."""
        q = behaviour(query_probs)
        if not len(q) or not len(self.features):
            return {"n_queries": len(q)}
        checks = [self.check(p[None, :]) for p in np.atleast_2d(np.asarray(query_probs, float))]
        return {
            "n_queries": len(q),
            "ks_confidence": round(ks_statistic(q[:, 0], self.features[:, 0]), 4),
            "ks_entropy": round(ks_statistic(q[:, 1], self.features[:, 1]), 4),
            "confidence_queries": round(float(q[:, 0].mean()), 4),
            "confidence_calibration": round(float(self.features[:, 0].mean()), 4),
            "share_outside": round(float(np.mean([not c.valid for c in checks])), 4),
        }

    # -- persistence (arrays in an .npz beside calibration.json) --
    def to_arrays(self) -> dict[str, np.ndarray]:
        return {
            "features": self.features.astype(np.float32),
            "l2": self.l2.astype(np.float32),
            "residuals": self.residuals.astype(np.float32),
            "bandwidth": self.bandwidth.astype(np.float64),
        }

    def to_dict(self) -> dict[str, Any]:
        return {
            "coverage": self.coverage,
            "min_effective": self.min_effective,
            "trained_pairs": self.trained_pairs,
        }

    @classmethod
    def from_parts(cls, arrays: Mapping[str, np.ndarray], d: Mapping[str, Any]) -> Situation:
        return cls(
            np.asarray(arrays["features"], float),
            np.asarray(arrays["l2"], float),
            np.asarray(arrays["residuals"], float),
            float(d["coverage"]),
            np.asarray(arrays["bandwidth"], float),
            float(d.get("min_effective", MIN_EFFECTIVE_PAIRS)),
            bool(d.get("trained_pairs", False)),
        )


def training_texts(pool: Any, probs: np.ndarray, threshold: float) -> tuple[list[str] | None, dict[str, Any]]:
    """The pool texts the classifier was trained on when nobody declared them, and how that was found.

    The corpus's own `trained` column, where it has one. Else a test of the usual case: a team
    trains its classifier on its corpus's originals, and the edits (human or LLM counterfactuals)
    are new to it. A classifier that memorised the originals is far more confident on them than on
    the edits (KS on confidence, benchmarks/results/calibration_shift.md: 0.26 and 0.36 on CEBaB for a
    tfidf-lr and a memorising LR trained on the pool's originals, 0.21 for the memorising one on the
    movie corpus; 0.06-0.11 for classifiers trained elsewhere, or regularised ones on the movie
    corpus's originals, which treat originals and edits alike); at `threshold` or above, with the
    originals the more confident side, they are taken as its training texts, and the calibration
    says it suspects so. `probs`: the classifier's predictions on every pool text, in pool order."""
    ids = pool.ids
    if ids is None:
        return None, {"trained_on_found": "nothing: the pool has no ids"}
    if pool.trained is not None:  # all false: the corpus says the classifier saw none of them
        chosen = [i for i, t in zip(ids, pool.trained, strict=True) if t]
        return chosen, {"trained_on_found": f"the corpus's trained column ({len(chosen)} texts)"}
    flags = pool.original_flags()
    if flags is None or all(flags) or not any(flags):
        return None, {"trained_on_found": "nothing: the pool does not say which texts are originals"}
    mask = np.array(flags, bool)
    probs = np.asarray(probs, float)
    test = memorisation(probs[mask], probs[~mask])
    test = {
        "confidence_originals": test.get("confidence_trained"),
        "confidence_edits": test.get("confidence_other"),
        "ks_confidence": test.get("ks_confidence"),
        "n_originals": test.get("n_trained"),
        "n_edits": test.get("n_other"),
    }
    if (
        test["ks_confidence"] is None
        or test["ks_confidence"] < threshold
        or test["confidence_originals"] <= test["confidence_edits"]
    ):
        return None, {
            "trained_on_found": f"nothing: the classifier is about as confident on the originals as on their "
            f"edits (confidence {test['confidence_originals']} vs {test['confidence_edits']}, KS "
            f"{test['ks_confidence']}; suspected from KS {threshold} with the originals the more confident)",
            "originals_vs_edits": test,
        }
    chosen = [i for i, f in zip(ids, flags, strict=True) if f]
    return chosen, {
        "trained_on_found": f"suspected: the {len(chosen)} originals (the classifier is more confident on "
        f"them than on their edits, KS {test['ks_confidence']} >= {threshold}, as a classifier trained on "
        "them is); declare trained_on (an empty list for none) to say otherwise",
        "trained_on_suspected": True,
        "originals_vs_edits": test,
    }


def seen_mask(
    bases: Sequence[int], cfs: Sequence[int], ids: Sequence[str] | None, trained_on: Sequence[str] | None
) -> np.ndarray | None:
    """Per pair: does its base or its counterfactual belong to the classifier's training texts?"""
    if trained_on is None:
        return None
    if ids is None:
        raise ValueError("trained_on names texts by id, and this pool has no ids")
    trained = set(trained_on)
    flag = np.array([i in trained for i in ids], bool)
    return np.array([flag[b] or flag[c] for b, c in zip(bases, cfs, strict=True)], bool)


__all__ = [
    "FEATURES",
    "MIN_EFFECTIVE_PAIRS",
    "LocalCheck",
    "Situation",
    "behaviour",
    "ks_statistic",
    "memorisation",
    "seen_mask",
    "training_texts",
    "weighted_quantile",
]
