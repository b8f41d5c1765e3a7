"""In-process classifiers: a scikit-learn pipeline file.

Useful for benchmarks (no HTTP in the loop) and as the embedded default model.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import joblib
import numpy as np

from explainers.classifiers.base import check_proba


class SklearnClassifier:
    """A fitted scikit-learn pipeline with `predict_proba` over raw texts, loaded from a joblib file."""

    def __init__(self, pipeline, labels: Sequence[str] | None = None, name: str = "sklearn") -> None:
        self.pipeline = pipeline
        self.name = name
        classes = [str(c) for c in getattr(pipeline, "classes_", [])]
        self._labels = list(labels) if labels is not None else classes
        # Map the pipeline's own class order onto the declared label order.
        self._order = (
            [classes.index(lab) for lab in self._labels] if classes else list(range(len(self._labels)))
        )

    @classmethod
    def load(cls, path: str | Path, labels: Sequence[str] | None = None) -> SklearnClassifier:
        p = Path(path)
        file = p / "model.joblib" if p.is_dir() else p
        return cls(joblib.load(file), labels=labels, name=p.stem if p.is_file() else p.name)

    @property
    def labels(self) -> list[str]:
        return list(self._labels)

    def predict_proba(self, texts: Sequence[str]) -> np.ndarray:
        if len(texts) == 0:
            return np.zeros((0, len(self._labels)))
        proba = np.asarray(self.pipeline.predict_proba(list(texts)))[:, self._order]
        return check_proba(proba, len(texts), len(self._labels), source=self.name)
