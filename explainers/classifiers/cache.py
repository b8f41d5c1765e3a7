"""A prediction cache in front of any classifier, keyed by (classifier key, text).

Explanations call the same classifier on the same texts again and again (the base text
of every intervention, counterfactuals shared across concepts, benchmark reruns), and a
remote endpoint is the slow, metered part. The cache sends only the texts it has not
seen to the wrapped classifier, in one call, and keeps the newest `max_items` rows.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np

from explainers.classifiers.base import Classifier


@dataclass(frozen=True)
class CacheStats:
    """Counters since the cache was made: texts answered from memory vs sent on."""

    hits: int
    misses: int
    size: int
    max_items: int

    @property
    def hit_rate(self) -> float:
        total = self.hits + self.misses
        return self.hits / total if total else 0.0

    def to_dict(self) -> dict:
        return {**asdict(self), "hit_rate": round(self.hit_rate, 4)}


class CachingClassifier:
    """Wraps `inner`; same labels, same answers, fewer calls.

    `key` names the classifier in the cache key so two classifiers may share one
    process without mixing rows (defaults to the inner object's `name` or its id).
    Thread-safe: the lock covers the dictionary only, never the call to `inner`, so
    concurrent callers with disjoint texts do not wait for each other. Two callers
    asking for the same unseen text at the same moment may both send it; that costs a
    duplicate call, never a wrong answer.
    """

    def __init__(self, inner: Classifier, key: str | None = None, max_items: int = 100_000) -> None:
        if max_items < 1:
            raise ValueError("max_items must be at least 1")
        self.inner = inner
        self.key = key or str(getattr(inner, "name", None) or f"classifier-{id(inner)}")
        self.name = getattr(inner, "name", self.key)
        self.max_items = max_items
        self._rows: OrderedDict[tuple[str, str], np.ndarray] = OrderedDict()
        self._lock = threading.Lock()
        self._hits = 0
        self._misses = 0

    @property
    def labels(self) -> list[str]:
        return list(self.inner.labels)

    def predict_proba(self, texts: Sequence[str]) -> np.ndarray:
        texts = list(texts)
        n_labels = len(self.inner.labels)
        out = np.empty((len(texts), n_labels), dtype=np.float64)
        missing: dict[str, list[int]] = {}
        with self._lock:
            for i, text in enumerate(texts):
                row = self._rows.get((self.key, text))
                if row is None:
                    missing.setdefault(text, []).append(i)
                else:
                    self._rows.move_to_end((self.key, text))
                    out[i] = row
            # A miss is a distinct text sent on; repeats inside one call are served from that answer.
            self._misses += len(missing)
            self._hits += len(texts) - len(missing)
        if not missing:
            return out
        todo = list(missing)
        proba = np.asarray(self.inner.predict_proba(todo), dtype=np.float64)
        if proba.shape != (len(todo), n_labels):
            # The inner adapter validates its own output; this guards a custom inner classifier.
            raise ValueError(
                f"{self.key}: inner classifier returned shape {proba.shape}, expected {(len(todo), n_labels)}"
            )
        with self._lock:
            for text, row in zip(todo, proba, strict=True):
                row = row.copy()
                row.flags.writeable = False
                self._rows[(self.key, text)] = row
                self._rows.move_to_end((self.key, text))
                for i in missing[text]:
                    out[i] = row
            while len(self._rows) > self.max_items:
                self._rows.popitem(last=False)
        return out

    def stats(self) -> CacheStats:
        with self._lock:
            return CacheStats(self._hits, self._misses, len(self._rows), self.max_items)

    def clear(self) -> None:
        """Forget every row (e.g. after the endpoint's model was replaced); counters stay."""
        with self._lock:
            self._rows.clear()
