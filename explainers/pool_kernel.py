"""The pool kernel: what every method that reads a labelled pool shares.

- `query_rng`: randomness fixed by (seed, text, intervention), so an estimate does not
  depend on the order queries arrive in, and K=1's pick is the first of K=5's.
- `predict_in_chunks` and `PoolScores`: the classifier's predictions on the whole pool,
  computed once per classifier object.
- `one_hot`: concept labels as one column per (concept, value).
- `PoolMatcher`: the base of the methods that pick counterfactuals from the pool (the
  baselines in `explainers.baselines`), with the pool's label codes, its encoder embeddings and
  the batched similarity product.

Labels come from the one resolver, `explainers.labels`.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from explainers.classifiers.base import Classifier
from explainers.concepts import ConceptSchema, Intervention
from explainers.data.pool import Pool
from explainers.errors import MissingResource
from explainers.labels import tagged
from explainers.types import Cost, Counterfactual, CounterfactualExplainer

PREDICT_CHUNK = 1024


def query_rng(seed: int, text: str, intervention: Intervention) -> np.random.Generator:
    """A generator fixed by the seed and the query alone (not by how many queries came before)."""
    key = f"{text}\x00{intervention.concept}\x00{intervention.source}\x00{intervention.target}"
    digest = int.from_bytes(hashlib.sha1(key.encode("utf-8")).digest()[:8], "little")
    return np.random.default_rng([seed, digest])


def predict_in_chunks(classifier: Classifier, texts: Sequence[str], chunk: int = PREDICT_CHUNK) -> np.ndarray:
    out = [
        np.asarray(classifier.predict_proba(list(texts[i : i + chunk])), float)
        for i in range(0, len(texts), chunk)
    ]
    return np.concatenate(out) if out else np.zeros((0, len(classifier.labels)))


class PoolScores:
    """The classifier's predictions on every pool text, computed once per classifier object."""

    def __init__(self, pool: Pool, max_classifiers: int = 4) -> None:
        self.pool = pool
        self.max_classifiers = max_classifiers
        self._by_id: dict[int, tuple[Classifier, np.ndarray]] = {}

    def get(self, classifier: Classifier, cost: Cost | None = None) -> np.ndarray:
        """Scores every pool text on first use (counted in `cost`, when given), then from memory."""
        hit = self._by_id.get(id(classifier))
        if hit is not None and hit[0] is classifier:
            return hit[1]
        preds = predict_in_chunks(classifier, self.pool.texts)
        if cost is not None:
            cost.classifier_calls += -(-len(self.pool.texts) // PREDICT_CHUNK)
            cost.classifier_texts += len(self.pool.texts)
        if len(self._by_id) >= self.max_classifiers:
            self._by_id.pop(next(iter(self._by_id)))
        self._by_id[id(classifier)] = (classifier, preds)  # holding the classifier keeps its id unique
        return preds

    def clear(self) -> None:
        """Drop every classifier's scores, and the classifiers themselves (their clients too)."""
        self._by_id.clear()


def one_hot(labels: Sequence[Mapping[str, str]], schema: ConceptSchema) -> np.ndarray:
    """One column per (concept, value); a label outside the schema's values sets no column."""
    cols = {(c.name, v): j for j, (c, v) in enumerate((c, v) for c in schema.concepts for v in c.values)}
    x = np.zeros((len(labels), len(cols)), dtype=np.float64)
    for i, lab in enumerate(labels):
        for c in schema.names:
            j = cols.get((c, lab.get(c, "")))
            if j is not None:
                x[i, j] = 1.0
    return x


class PoolMatcher(CounterfactualExplainer):
    """Shared machinery of the methods that pick counterfactuals from a labelled pool."""

    name = "pool_matcher"

    def __init__(
        self,
        pool: Pool,
        *,
        seed: int = 0,
        encoder: Any | None = None,
        taggers: Any | None = None,
        aggregation: str = "mean",
        similarity_threshold: float | None = None,
    ) -> None:
        super().__init__(aggregation=aggregation, similarity_threshold=similarity_threshold)
        if len(pool) == 0:
            raise MissingResource(f"method {self.name!r} needs a non-empty pool")
        self.pool = pool
        self.seed = seed
        self.encoder = encoder
        self.taggers = taggers
        self.concepts = pool.schema.names
        self._codes = {c: {v: j for j, v in enumerate(pool.schema[c].values)} for c in self.concepts}
        # Integer label matrix (n, concepts); -1 where a label is outside the schema.
        self.label_codes = np.array(
            [[self._codes[c].get(lab.get(c, ""), -1) for c in self.concepts] for lab in pool.labels],
            dtype=np.int16,
        )
        self._text_index = {t: i for i, t in enumerate(pool.texts)}
        self._embeddings: np.ndarray | None = None
        self._recent: dict[str, np.ndarray] = {}
        # Similarity rows of the batch being explained (filled by counterfactuals_batch, emptied after).
        self._batch_sims: dict[str, np.ndarray] = {}
        self._candidates: dict[tuple[str, str], np.ndarray] = {}

    def _close(self) -> None:
        # Per-query caches only; the pool and the encoder are the domain's, shared.
        self._recent.clear()
        self._batch_sims = {}
        self._candidates.clear()
        scores = getattr(self, "scores", None)
        if isinstance(scores, PoolScores):
            scores.clear()

    @property
    def embeddings(self) -> np.ndarray:
        """Pool embeddings, computed once (and disk-cached by the encoder)."""
        if self._embeddings is None:
            if self.encoder is None:
                raise MissingResource(f"method {self.name!r} needs an encoder")
            self._embeddings = np.ascontiguousarray(self.encoder.encode(self.pool.texts), dtype=np.float32)
        return self._embeddings

    def similarities(self, text: str, idx: np.ndarray) -> np.ndarray:
        """Cosine of the query to pool texts `idx` (unit vectors, so a dot product).

        One product with the whole contiguous pool matrix is cheaper than gathering the
        candidate rows first, and the last few queries' vectors are kept because a text
        is usually explained for several interventions in a row.
        """
        sims = self._batch_sims.get(text)
        if sims is None:
            sims = self._recent.get(text)
        if sims is None:
            assert self.encoder is not None, "similarities need an encoder"
            q = np.asarray(self.encoder.encode([text]), dtype=np.float32)[0]
            sims = self.embeddings @ q
            if len(self._recent) >= 8:
                self._recent.pop(next(iter(self._recent)))
            self._recent[text] = sims
        return sims[idx]

    # Whether counterfactuals() reads the query's concept labels / its encoder similarities.
    needs_labels = False
    needs_similarities = False

    def counterfactuals_batch(
        self,
        texts: Sequence[str],
        interventions: Sequence[Intervention],
        top_k: int,
        *,
        base_labels: Sequence[Mapping[str, str] | None] | None = None,
    ) -> list[tuple[list[Counterfactual], dict[str, Any]]]:
        """Per-text `counterfactuals()` after the shared work is done once for the batch: one tagger
        call for the texts without labels, one encoder call and one (pool x batch) product."""
        labels = tagged(texts, base_labels, self.taggers if self.needs_labels else None)
        try:
            if self.needs_similarities and self.encoder is not None:
                unique = list(dict.fromkeys(texts))
                q = np.asarray(self.encoder.encode(unique), dtype=np.float32)
                sims = np.ascontiguousarray((self.embeddings @ q.T).T)
                self._batch_sims = dict(zip(unique, sims, strict=True))
            return [
                self.counterfactuals(t, iv, top_k, base_labels=lab)
                for t, iv, lab in zip(texts, interventions, labels, strict=True)
            ]
        finally:
            self._batch_sims = {}

    def target_candidates(self, text: str, intervention: Intervention) -> np.ndarray:
        """Pool indices with the target value, the query text itself excluded."""
        key = (intervention.concept, intervention.target)
        idx = self._candidates.get(key)
        if idx is None:
            col = self.concepts.index(intervention.concept)
            code = self._codes[intervention.concept].get(intervention.target)
            if code is None:
                raise ValueError(f"{intervention.target!r} is not a value of {intervention.concept!r}")
            idx = self._candidates[key] = np.flatnonzero(self.label_codes[:, col] == code)
        own = self._text_index.get(text)
        return idx[idx != own] if own is not None else idx

    def counterfactual(self, i: int, similarity: float | None = None, **extra: Any) -> Counterfactual:
        ids = self.pool.ids
        return Counterfactual(
            text=self.pool.texts[i],
            similarity=similarity,
            source_id=ids[i] if ids else str(i),
            verification=extra or None,
        )
