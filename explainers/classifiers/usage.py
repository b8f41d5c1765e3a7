"""Per-explanation accounting of what an LLM-backed classifier spent.

A prompted-LLM classifier is shared by every request in the service, so its own counters
cannot say what one explanation cost. Instead, whoever wants the bill opens a meter
(`with metered() as usage: classifier.predict_proba(...)`) and the adapter adds each
request's calls and tokens to the meter of the context it runs in. A context variable
(not a thread-local) is used so the meter follows the call into the adapter's batch
threads (the adapter copies the context into each), and so two concurrent explanations
on one classifier never see each other's tokens. Texts answered from a prediction cache
cost nothing and are, correctly, not counted.
"""

from __future__ import annotations

import contextvars
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import numpy as np


@dataclass
class LLMUsage:
    """What the classifier's LLM calls cost inside one meter."""

    calls: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    # Sampling path only: answers drawn, and those that named no declared label.
    samples: int = 0
    invalid_samples: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    def add(
        self,
        *,
        calls: int = 0,
        prompt_tokens: int = 0,
        completion_tokens: int = 0,
        samples: int = 0,
        invalid_samples: int = 0,
    ) -> None:
        with self._lock:
            self.calls += calls
            self.prompt_tokens += prompt_tokens
            self.completion_tokens += completion_tokens
            self.samples += samples
            self.invalid_samples += invalid_samples


_METER: contextvars.ContextVar[LLMUsage | None] = contextvars.ContextVar("classifier_llm_usage", default=None)


def current() -> LLMUsage | None:
    """The meter open in this context, or None (then nothing is recorded)."""
    return _METER.get()


@contextmanager
def metered() -> Iterator[LLMUsage]:
    """Count the classifier LLM calls made inside the block (nested meters do not add to the outer one)."""
    usage = LLMUsage()
    token = _METER.set(usage)
    try:
        yield usage
    finally:
        _METER.reset(token)


def sampling_n(classifier: object) -> int | None:
    """n when `classifier` (or the one a cache wraps) reports sample frequencies, else None."""
    while classifier is not None:
        get = getattr(classifier, "sampling_n", None)
        if callable(get):
            return get()
        classifier = getattr(classifier, "inner", None)
    return None


def sampling_error(
    classifier: object, base: np.ndarray, counterfactual: np.ndarray, usage: LLMUsage | None = None
) -> dict[str, Any] | None:
    """The sampling standard errors of a sampled classifier's base prediction and ICaCE, or None.

    Each probability is a frequency over n answers, so its standard error is sqrt(p(1-p)/n);
    the ICaCE (mean aggregation: mean of K counterfactual rows minus the base row, independent samples)
    has variance var(base) + sum(var(cf_k)) / K^2.
    """
    n = sampling_n(classifier)
    if not n:
        return None
    var_base = base * (1 - base) / n
    cf = np.atleast_2d(counterfactual)
    k = len(cf)
    var_cf = (cf * (1 - cf) / n).sum(axis=0) / k**2 if k else np.zeros_like(base)
    out: dict[str, Any] = {
        "n": n,
        "base_standard_error": [round(float(x), 6) for x in np.sqrt(var_base)],
        "icace_standard_error": [round(float(x), 6) for x in np.sqrt(var_base + var_cf)],
    }
    if usage is not None and usage.samples:
        out["samples"] = usage.samples
        out["invalid_samples"] = usage.invalid_samples
    return out
