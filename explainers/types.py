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
from explainers.classifiers.usage import LLMUsage, metered, sampling_error
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

    def add_classifier_llm(self, usage: LLMUsage) -> None:
        """Count the tokens of a prompted-LLM classifier (kept apart from the generator's)."""
        self.classifier_llm_calls += usage.calls
        self.classifier_prompt_tokens += usage.prompt_tokens
        self.classifier_completion_tokens += usage.completion_tokens

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


# The states of an explainer's lifecycle (`Lifecycle.state`), as `/readyz` reports them.
LIFECYCLE_STATES = ("new", "loading", "ready", "failed", "closed")


class Lifecycle:
    """load -> ready -> close, as KServe's `Model` has it; every registered explainer honours it.

    `load()` does, once and up front, the work an explainer would otherwise do inside its first
    explanation (component explainers, projected pool vectors); `close()` releases what it holds
    (thread pools, component explainers, cached classifier scores that keep classifier clients
    alive). Both are idempotent. An explainer that was never loaded still explains (it does that
    work on first use), so code that builds one directly keeps working; `build_explainer` loads.
    Subclasses override `_load` / `_close`, never `load` / `close`, so the state stays right.
    """

    # Class-level defaults: a subclass need not call `Lifecycle.__init__`.
    state: str = "new"
    reason: str = ""

    @property
    def ready(self) -> bool:
        return self.state == "ready"

    def load(self) -> None:
        if self.state == "ready":
            return
        if self.state == "closed":
            raise RuntimeError(f"explainer {getattr(self, 'name', '?')!r} was closed; build a new one")
        self.state, self.reason = "loading", ""
        try:
            self._load()
        except Exception as e:
            self.state, self.reason = "failed", f"{type(e).__name__}: {e}"
            raise
        self.state = "ready"

    def close(self) -> None:
        if self.state == "closed":
            return
        self.state = "closed"
        self._close()

    def _load(self) -> None:
        """Nothing to prepare by default."""

    def _close(self) -> None:
        """Nothing held by default."""


@runtime_checkable
class Explainer(Protocol):
    """Estimate the effect of `intervention` on `classifier`'s output for `text`.

    Every registered explainer also has the `Lifecycle` (load / ready / close); the service
    loads one when it builds it and closes it when it drops it.
    """

    name: str
    state: str
    reason: str

    @property
    def ready(self) -> bool: ...

    def load(self) -> None: ...

    def close(self) -> None: ...

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


class CounterfactualExplainer(Lifecycle):
    """Base for methods that find counterfactual texts: the ICaCE path lives here, once.

    Subclasses set `name` and implement `counterfactuals()`. `aggregation` picks how the
    K counterfactual predictions are combined (see `explainers.estimate`).
    """

    name: str = "counterfactual"
    # True where the top-k counterfactuals are the first k of the top-K for any k <= K (a ranked
    # list cut at K), so one search at the widest K serves every smaller one.
    nested_top_k: bool = False

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

    def counterfactuals_batch(
        self,
        texts: Sequence[str],
        interventions: Sequence[Intervention],
        top_k: int,
        *,
        base_labels: Sequence[Mapping[str, str] | None] | None = None,
    ) -> list[tuple[list[Counterfactual], dict[str, Any]]]:
        """`counterfactuals()` for many texts; methods that can share work across texts override it."""
        labels = list(base_labels) if base_labels is not None else [None] * len(texts)
        return [
            self.counterfactuals(t, iv, top_k, base_labels=lab)
            for t, iv, lab in zip(texts, interventions, labels, strict=True)
        ]

    def explain(
        self,
        text: str,
        intervention: Intervention,
        classifier: Classifier,
        top_k: int = 5,
        *,
        base_labels: Mapping[str, str] | None = None,
    ) -> Explanation:
        started = time.perf_counter()
        cfs, details = self.counterfactuals(text, intervention, top_k, base_labels=base_labels)
        searched = time.perf_counter() - started
        exp = self.explain_counterfactuals(text, intervention, classifier, cfs, details)
        exp.cost.wall_time_s += searched
        return exp

    def explain_counterfactuals(
        self,
        text: str,
        intervention: Intervention,
        classifier: Classifier,
        cfs: list[Counterfactual],
        details: dict[str, Any],
    ) -> Explanation:
        """The explanation from counterfactuals already found (scoring and aggregation only)."""
        started = time.perf_counter()
        cost = details.pop("cost", None) or Cost()
        texts = [text] + [c.text for c in cfs]
        with metered() as usage:
            proba = np.asarray(classifier.predict_proba(texts), float)
        cost.classifier_calls += 1
        cost.classifier_texts += len(texts)
        cost.add_classifier_llm(usage)
        exp = self._estimate(text, intervention, classifier, cfs, details, cost, proba[0], proba[1:], usage)
        exp.cost.wall_time_s += time.perf_counter() - started
        return exp

    def explain_batch(
        self,
        texts: Sequence[str],
        interventions: Sequence[Intervention],
        classifier: Classifier,
        top_k: int = 5,
        *,
        base_labels: Sequence[Mapping[str, str] | None] | None = None,
    ) -> list[Explanation]:
        """`explain()` for many texts, each stage once: counterfactuals for all, then one classifier call.

        The classifier sees every distinct text once (base texts and counterfactuals shared
        between queries), so each explanation equals what `explain()` gives for its text.
        Each explanation's cost counts the texts it needed and the one call it shared
        (`details["batch_size"]` says with how many); wall time is split evenly.
        """
        if len(texts) != len(interventions):
            raise ValueError(f"{len(texts)} texts but {len(interventions)} interventions")
        if not texts:
            return []
        started = time.perf_counter()
        found = self.counterfactuals_batch(texts, interventions, top_k, base_labels=base_labels)
        unique = list(dict.fromkeys([*texts, *(c.text for cfs, _ in found for c in cfs)]))
        with metered() as usage:
            proba = np.asarray(classifier.predict_proba(unique), float)
        row = {t: i for i, t in enumerate(unique)}
        out = []
        for n, (text, iv, (cfs, details)) in enumerate(zip(texts, interventions, found, strict=True)):
            cost = details.pop("cost", None) or Cost()
            cost.classifier_calls += 1
            cost.classifier_texts += 1 + len(cfs)
            if n == 0:  # the batch's one classifier call, LLM tokens included, is counted once
                cost.add_classifier_llm(usage)
            details["batch_size"] = len(texts)
            cf_pred = proba[[row[c.text] for c in cfs]] if cfs else np.zeros((0, proba.shape[1]))
            out.append(
                self._estimate(text, iv, classifier, cfs, details, cost, proba[row[text]], cf_pred, usage)
            )
        share = (time.perf_counter() - started) / len(texts)
        for exp in out:
            exp.cost.wall_time_s += share
        return out

    def _estimate(
        self,
        text: str,
        intervention: Intervention,
        classifier: Classifier,
        cfs: list[Counterfactual],
        details: dict[str, Any],
        cost: Cost,
        base: np.ndarray,
        cf_pred: np.ndarray,
        usage: LLMUsage | None = None,
    ) -> Explanation:
        from explainers.estimate import icace_from_predictions

        for c, p in zip(cfs, cf_pred, strict=True):
            c.prediction = [float(x) for x in p]
        sims = np.array([c.similarity if c.similarity is not None else 1.0 for c in cfs], dtype=float)
        estimate = icace_from_predictions(
            base,
            cf_pred,
            similarities=sims,
            aggregation=self.aggregation,
            threshold=self.similarity_threshold,
        )
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


def explain_batch(
    explainer: Explainer,
    texts: Sequence[str],
    interventions: Sequence[Intervention],
    classifier: Classifier,
    top_k: int = 5,
    *,
    base_labels: Sequence[Mapping[str, str] | None] | None = None,
) -> list[Explanation]:
    """Explain many texts: batched where the explainer can, one `explain()` per text where it cannot."""
    batched = getattr(explainer, "explain_batch", None)
    if batched is not None:
        return batched(texts, interventions, classifier, top_k, base_labels=base_labels)
    labels = list(base_labels) if base_labels is not None else [None] * len(texts)
    return [
        explainer.explain(t, iv, classifier, top_k, base_labels=lab)
        for t, iv, lab in zip(texts, interventions, labels, strict=True)
    ]


def zero_explanation(
    method: str, labels: Sequence[str], base: np.ndarray, intervention: Intervention
) -> Explanation:
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
