"""In-process Hugging Face sequence classifier (a local folder or a hub id).

Benchmarks and the embedded default model call the classifier thousands of times; doing
that in-process skips HTTP and JSON entirely. Labels come from the artifact's meta.json
when there is one (the declared order the rest of the system uses), else from the model
config's id2label, so a plain hub model works too.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from explainers.artifacts import META
from explainers.classifiers.base import check_proba, softmax


class TransformersClassifier:
    """`AutoModelForSequenceClassification` + tokenizer with batched, no-grad softmax inference."""

    def __init__(
        self,
        model,
        tokenizer,
        labels: Sequence[str] | None = None,
        *,
        name: str = "transformers",
        batch_size: int = 32,
        max_len: int = 256,
    ) -> None:
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.name = name
        self.batch_size = batch_size
        self.max_len = max_len
        id2label = {int(k): str(v) for k, v in (getattr(model.config, "id2label", None) or {}).items()}
        own = [id2label.get(i, str(i)) for i in range(int(model.config.num_labels))]
        self._labels = list(labels) if labels is not None else own
        if sorted(self._labels) != sorted(own):
            # Declared names that are not the model's own: take them positionally.
            if len(self._labels) != len(own):
                raise ValueError(f"{name}: {len(self._labels)} labels declared, model has {len(own)} outputs")
            self._order = list(range(len(own)))
        else:
            self._order = [own.index(lab) for lab in self._labels]
        self._lock = threading.Lock()  # torch modules are not safe to run from several threads at once

    @classmethod
    def load(
        cls, path_or_name: str | Path, labels: Sequence[str] | None = None, **kwargs
    ) -> TransformersClassifier:
        """Load a transformers folder (labels from meta.json if present) or a hub model id."""
        from transformers import AutoModelForSequenceClassification, AutoTokenizer

        p = Path(path_or_name)
        meta_file = p / META
        if labels is None and meta_file.exists():
            labels = json.loads(meta_file.read_text()).get("labels")
        model = AutoModelForSequenceClassification.from_pretrained(str(path_or_name))
        tok = AutoTokenizer.from_pretrained(str(path_or_name))
        return cls(model, tok, labels, name=p.name if p.is_dir() else str(path_or_name), **kwargs)

    @property
    def labels(self) -> list[str]:
        return list(self._labels)

    def predict_proba(self, texts: Sequence[str]) -> np.ndarray:
        import torch

        texts = list(texts)
        if not texts:
            return np.zeros((0, len(self._labels)))
        # Sort by length so each batch pads to similar lengths; undo the order at the end.
        order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
        logits = np.zeros((len(texts), int(self.model.config.num_labels)), dtype=np.float64)
        with self._lock, torch.inference_mode():
            for b in range(0, len(order), self.batch_size):
                idx = order[b : b + self.batch_size]
                enc = self.tokenizer(
                    [texts[i] for i in idx],
                    padding=True,
                    truncation=True,
                    max_length=self.max_len,
                    return_tensors="pt",
                )
                logits[idx] = self.model(**enc).logits.float().numpy()
        proba = softmax(logits)[:, self._order]
        return check_proba(proba, len(texts), len(self._labels), source=self.name)
