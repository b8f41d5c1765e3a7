"""The `Classifier` protocol: the one thing every endpoint adapter honours.

The service explains models it can only call, so all it asks of one is an ordered list
of class names and a function from texts to an (n, C) probability matrix whose rows
sum to 1. Every adapter (Open Inference V2, KServe V1, Hugging Face JSON, a custom JSON
template, an in-process scikit-learn pipeline or transformers folder) implements this,
and so do the wrappers that add batching, retries and caching around them.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol, runtime_checkable

import numpy as np

from explainers.errors import (
    UpstreamError,
    UpstreamMalformed,
    UpstreamRejected,
    UpstreamTimeout,
    UpstreamUnavailable,
)


class ClassifierError(UpstreamError, RuntimeError):
    """The classifier could not be called, or answered something unusable (see `explainers.errors`)."""

    what = "classifier"


class MalformedResponse(ClassifierError, UpstreamMalformed):
    """The endpoint answered, but not with n rows of C finite scores for known labels."""


class ClassifierUnavailable(ClassifierError, UpstreamUnavailable):
    """The endpoint could not be reached or kept failing after retries."""


class ClassifierTimeout(ClassifierUnavailable, UpstreamTimeout):
    """The endpoint did not answer in time (a kind of unavailable, so retry logic treats it alike)."""


class EndpointRejected(ClassifierError, UpstreamRejected):
    """The endpoint refused the request with a 4xx other than 429: retrying will not help."""


@runtime_checkable
class Classifier(Protocol):
    """A black-box text classifier: ordered labels and a probability function."""

    @property
    def labels(self) -> list[str]: ...

    def predict_proba(self, texts: Sequence[str]) -> np.ndarray:
        """Return an (len(texts), len(labels)) float array whose rows sum to 1."""
        ...


def softmax(logits: np.ndarray) -> np.ndarray:
    z = logits - logits.max(axis=-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=-1, keepdims=True)


def check_proba(proba: np.ndarray, n: int, n_labels: int, *, source: str = "classifier") -> np.ndarray:
    """Validate a probability matrix; raise MalformedResponse saying exactly what is off."""
    arr = np.asarray(proba, dtype=np.float64)
    if arr.ndim != 2:
        raise MalformedResponse(f"{source}: expected a 2-D score matrix, got shape {arr.shape}")
    if arr.shape[0] != n:
        raise MalformedResponse(f"{source}: sent {n} texts but got {arr.shape[0]} score rows")
    if arr.shape[1] != n_labels:
        raise MalformedResponse(f"{source}: expected {n_labels} scores per text, got {arr.shape[1]}")
    if not np.all(np.isfinite(arr)):
        raise MalformedResponse(f"{source}: scores contain NaN or infinity")
    if np.any(arr < -1e-6):
        raise MalformedResponse(f"{source}: negative probabilities (did the endpoint return logits?)")
    sums = arr.sum(axis=1)
    if np.any(np.abs(sums - 1.0) > 1e-3):
        raise MalformedResponse(
            f"{source}: probability rows must sum to 1 (got sums in [{sums.min():.4f}, {sums.max():.4f}]);"
            " declare logits=true if the endpoint returns logits"
        )
    arr = np.clip(arr, 0.0, None)
    return arr / arr.sum(axis=1, keepdims=True)
