"""The `Explainer` protocol and the values every explanation method returns.

The path an explanation takes, whatever the method:

    base = classifier.predict_proba([text])
    counterfactuals = method's own way of finding texts where only `intervention` changed
    predictions = classifier.predict_proba(counterfactual texts)
    icace = aggregate(predictions) - base

`CounterfactualExplainer` implements that path once; generate, match and the
matching baselines only supply `counterfactuals()`. Methods that need no counterfactual
texts (Zero, CONEXP, S-Learner, pair-transfer) implement `explain()` directly and still
return an `Explanation`, so the service and the benchmark treat every method alike.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Protocol, runtime_checkable

import numpy as np

from explainers.classifiers.base import Classifier
from explainers.classifiers.usage import metered, sampling_error
from explainers.concepts import Intervention


@dataclass
class Counterfactual:
    """One counterfactual text, how it was found, and (once scored) the model's output on it."""

    text: str
    # Cosine similarity to the query (match) or None (generate).
    similarity: float | None = None
    # Where it came from: a pool id, an LLM sample index, a pair id.
    source_id: str | None = None
    # Verification details for generated texts (tagger result, reason kept).
    verification: dict[str, Any] | None = None
    prediction: list[float] | None = None


@dataclass
class Cost:
    """What one explanation cost: calls, tokens and wall time."""

    classifier_calls: int = 0
    classifier_texts: int = 0
    llm_calls: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    wall_time_s: float = 0.0
    # The classifier's own LLM calls and tokens (a prompted-LLM classifier), apart from the generator's above.
    classifier_llm_calls: int = 0
    classifier_prompt_tokens: int = 0
    classifier_completion_tokens: int = 0

    def add(self, other: Cost) -> None:
        for k, v in asdict(other).items():
            setattr(self, k, getattr(self, k) + v)


@dataclass
class Explanation:
    """The answer to "how would the prediction change if only this concept changed?"."""

    method: str
    labels: list[str]
    base_prediction: np.ndarray
    icace: np.ndarray
    # Per-label standard deviation of the counterfactual predictions (0 when K < 2).
    spread: np.ndarray
    counterfactuals: list[Counterfactual] = field(default_factory=list)
    intervention: Intervention | None = None
    cost: Cost = field(default_factory=Cost)
    # Method-specific facts the user may want: rejection counts, space id, weights...
    details: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "method": self.method,
            "labels": list(self.labels),
            "base_prediction": [float(x) for x in self.base_prediction],
            "icace": [float(x) for x in self.icace],
            "spread": [float(x) for x in self.spread],
            "counterfactuals": [asdict(c) for c in self.counterfactuals],
            "intervention": asdict(self.intervention) if self.intervention else None,
            "cost": asdict(self.cost),
            "details": self.details,
        }


@runtime_checkable
class Explainer(Protocol):
    """Estimate the effect of `intervention` on `classifier`'s output for `text`."""

    name: str

    def explain(
        self,
        text: str,
        intervention: Intervention,
        classifier: Classifier,
        top_k: int = 5,
        *,
        base_labels: Mapping[str, str] | None = None,
    ) -> Explanation:
        """`base_labels` are the text's concept labels, for methods that condition on them."""
        ...


class CounterfactualExplainer:
    """Base for methods that find counterfactual texts: the ICaCE path lives here, once.

    Subclasses set `name` and implement `counterfactuals()`. `aggregation` picks how the
    K counterfactual predictions are combined (see `explainers.estimate`).
    """

    name: str = "counterfactual"

    def __init__(self, aggregation: str = "mean", similarity_threshold: float | None = None) -> None:
        self.aggregation = aggregation
        self.similarity_threshold = similarity_threshold

    def counterfactuals(
        self,
        text: str,
        intervention: Intervention,
        top_k: int,
        *,
        base_labels: Mapping[str, str] | None = None,
    ) -> tuple[list[Counterfactual], dict[str, Any]]:
        """Return up to `top_k` counterfactual texts and method details (e.g. rejection counts)."""
        raise NotImplementedError

    def explain(
        self,
        text: str,
        intervention: Intervention,
        classifier: Classifier,
        top_k: int = 5,
        *,
        base_labels: Mapping[str, str] | None = None,
    ) -> Explanation:
        from explainers.estimate import icace_from_predictions

        started = time.perf_counter()
        cfs, details = self.counterfactuals(text, intervention, top_k, base_labels=base_labels)
        cost = details.pop("cost", None) or Cost()
        texts = [text] + [c.text for c in cfs]
        with metered() as usage:
            proba = classifier.predict_proba(texts)
        cost.classifier_calls += 1
        cost.classifier_texts += len(texts)
        cost.classifier_llm_calls += usage.calls
        cost.classifier_prompt_tokens += usage.prompt_tokens
        cost.classifier_completion_tokens += usage.completion_tokens
        base, cf_pred = proba[0], proba[1:]
        for c, p in zip(cfs, cf_pred, strict=True):
            c.prediction = [float(x) for x in p]
        sims = np.array([c.similarity if c.similarity is not None else 1.0 for c in cfs], dtype=float)
        estimate = icace_from_predictions(
            base, cf_pred, similarities=sims, aggregation=self.aggregation, threshold=self.similarity_threshold
        )
        cost.wall_time_s += time.perf_counter() - started
        details.setdefault("used", estimate.used)
        sampling = sampling_error(classifier, base, cf_pred, usage)
        if sampling:
            details["classifier_sampling"] = sampling
        return Explanation(
            method=self.name,
            labels=list(classifier.labels),
            base_prediction=base,
            icace=estimate.icace,
            spread=estimate.spread,
            counterfactuals=cfs,
            intervention=intervention,
            cost=cost,
            details=details,
        )


def zero_explanation(method: str, labels: Sequence[str], base: np.ndarray, intervention: Intervention) -> Explanation:
    """An explanation with no counterfactuals and no effect: what a method returns when it finds none."""
    return Explanation(
        method=method,
        labels=list(labels),
        base_prediction=base,
        icace=np.zeros_like(base),
        spread=np.zeros_like(base),
        intervention=intervention,
        details={"used": 0, "note": "no counterfactuals found; effect reported as zero"},
    )
