"""The check a calibration's classifier calls make as they go: is there budget for the next chunk,
and (through `explainers.progress.checkpoint`) was the job cancelled.

Why: a calibration is one item that runs for minutes and sends a classifier tens of thousands of
texts; the worker only looks at a job's status between items, so without these a cancelled
calibration ran to its end and a failing one spent its whole text allowance on every attempt.
"""

from __future__ import annotations

import time
from collections.abc import Sequence

import numpy as np

from app.store import Store
from explainers.classifiers.base import Classifier
from explainers.errors import BudgetExhausted
from explainers.progress import checkpoint


class BudgetedClassifier:
    """A classifier whose every call is first charged to a shared text budget (all or nothing) and
    a cancellation checkpoint: a call that does not fit raises `BudgetExhausted` before anything is sent."""

    def __init__(
        self,
        inner: Classifier,
        *,
        store: Store,
        budget_key: str,
        budget_texts: int,
        window_s: float,
    ) -> None:
        self.inner = inner
        self.name = getattr(inner, "name", budget_key)
        self.store = store
        self.budget_key = budget_key
        self.budget_texts = budget_texts
        self.window_s = window_s
        self.charged = 0

    @property
    def labels(self) -> list[str]:
        return list(self.inner.labels)

    # Texts per upstream call: a calibration asks for a whole pool at once, so without chunks a cancel
    # (or the budget) would only be seen after thousands of texts. 128 = an HTTP client's default
    # batch (32) x concurrency (4): chunks keep its parallelism.
    CHUNK = 128

    def predict_proba(self, texts: Sequence[str]) -> np.ndarray:
        texts = list(texts)
        if len(texts) <= self.CHUNK:
            return self._predict(texts)
        parts = [self._predict(texts[i : i + self.CHUNK]) for i in range(0, len(texts), self.CHUNK)]
        return np.concatenate(parts)

    def _predict(self, texts: list[str]) -> np.ndarray:
        checkpoint()  # inside a `cancellable` block: raises Cancelled once the job is cancelled
        n = len(texts)
        if n:
            ok, window_end = self.store.charge_calibration(
                self.budget_key, n, self.budget_texts, self.window_s
            )
            if not ok:
                raise BudgetExhausted(
                    f"classifier {self.budget_key!r}: {n} more texts would pass its calibration budget of "
                    f"{self.budget_texts} texts per {self.window_s:g} s (CACE_CALIBRATION_BUDGET_TEXTS); "
                    f"the window ends at {time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime(window_end))}",
                    retry_at=window_end,
                )
            self.charged += n
        return np.asarray(self.inner.predict_proba(texts), float)
