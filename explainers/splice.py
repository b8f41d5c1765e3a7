"""`splice`: counterfactuals of the query text itself, made by transplanting the corpus's own edits.

A domain's counterfactual groups are human edits: in most of them one sentence was
rewritten so that one concept changed ("The food was bland." -> "The food was superb.").
`SentenceEdits` collects those sentence-level edits from the pool's pairs, per (concept,
source value, target value), and learns from the same pairs which sentences carry a
concept (a sentence a concept edit removed or inserted carries it; one it left alone
does not). For a query text and an intervention, `SpliceExplainer`:

1. finds the sentence of the text that most carries the concept (when the concept has a
   value now; when it is `unknown`, the new sentence is appended instead);
2. ranks the corpus edits of the same concept and direction by how similar the sentence
   each one replaced is to that sentence (or, for an appended sentence, how similar the
   edited text was to the query);
3. puts each of the top-K edits' new sentence in place of the text's sentence.

The K texts differ from the query only where the concept is expressed, so the classifier's
outputs on them read the effect of the concept *in this text*, which a matched neighbour
(another text, other words) cannot. No LLM, no encoder: TF-IDF similarity and one logistic
regression per concept, fit on the pool in seconds; K classifier calls per query, like
`generate`. What it cannot do: edit a concept spread over several sentences, or one that
shares its sentence with another concept (that sentence's other content changes too).
"""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy import sparse
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression

from explainers.concepts import Intervention
from explainers.data.pool import Pool
from explainers.errors import MissingResource
from explainers.labels import source_value
from explainers.registry import Resources, register
from explainers.types import Counterfactual, CounterfactualExplainer

_SENTENCE_END = re.compile(r"(?<=[.!?])\s+|\n+")
# Beyond this many counterfactuals per query the gain is small and the classifier calls are not.
DEFAULT_MAX_K = 20
# A source value whose edits add a new sentence this often (rather than rewrite one) reads as
# "the concept is not mentioned": CEBaB's `unknown` is 31-50%, its other values 0-5%.
ABSENT_INSERT_SHARE = 0.2


def sentences(text: str) -> list[str]:
    return [s.strip() for s in _SENTENCE_END.split(text.strip()) if s.strip()]


@dataclass(frozen=True)
class SentenceEdit:
    """One pool edit that rewrote (at most) one sentence: `removed` -> `inserted` ("" = none)."""

    removed: str
    inserted: str
    base_row: int


class SentenceEdits:
    """The pool's one-sentence edits per (concept, source, target), and a concept-sentence scorer.

    Built from `pool.pairs`; a pair whose edit rewrote more than one sentence teaches the
    scorer which sentences carry the concept but is not used as an edit to transplant.
    """

    def __init__(self, pool: Pool, *, seed: int = 0) -> None:
        if not pool.pairs:
            raise MissingResource("method 'splice' needs counterfactual pairs in the pool, and it has none")
        self.pool = pool
        self.edits: dict[tuple[str, str, str], list[SentenceEdit]] = defaultdict(list)
        carried: dict[str, list[tuple[str, int]]] = defaultdict(list)
        for b, e, concept in pool.pairs:
            before, after = sentences(pool.texts[b]), sentences(pool.texts[e])
            removed = [s for s in before if s not in after]
            inserted = [s for s in after if s not in before]
            source, target = pool.labels[b].get(concept), pool.labels[e].get(concept)
            if source is None or target is None or source == target:
                continue
            if len(removed) <= 1 and len(inserted) <= 1 and (removed or inserted):
                edit = SentenceEdit(removed[0] if removed else "", inserted[0] if inserted else "", b)
                self.edits[(concept, source, target)].append(edit)
            carried[concept] += [(s, 1) for s in removed + inserted]
            carried[concept] += [(s, 0) for s in before if s in after]
        if not self.edits:
            raise MissingResource("method 'splice' found no one-sentence edits among the pool's pairs")
        # (concept, value) pairs whose edits mostly add a sentence: the value means "not mentioned".
        inserts: dict[tuple[str, str], list[bool]] = defaultdict(list)
        for (concept, source, _), cell in self.edits.items():
            inserts[(concept, source)] += [not e.removed for e in cell]
        self.absent = {key for key, flags in inserts.items() if np.mean(flags) >= ABSENT_INSERT_SHARE}
        # Words seen once are noise in a corpus of thousands; in a handful of texts they are all there is.
        min_df = 2 if len(pool.texts) >= 50 else 1
        self.vectorizer = TfidfVectorizer(ngram_range=(1, 2), min_df=min_df, sublinear_tf=True)
        self.vectorizer.fit(pool.texts)
        self.scorers: dict[str, LogisticRegression] = {}
        for concept, rows in carried.items():
            y = np.array([label for _, label in rows])
            if len(set(y.tolist())) < 2:
                continue
            x = self.vectorizer.transform([s for s, _ in rows])
            self.scorers[concept] = LogisticRegression(C=4.0, max_iter=2000, random_state=seed).fit(x, y)
        # Per cell, the texts each edit is ranked by: the sentence it replaced, and its whole base text.
        self._keys: dict[tuple[str, str, str, bool], sparse.csr_matrix] = {}

    def cell(self, concept: str, source: str, target: str) -> list[SentenceEdit]:
        """This direction's edits; any source's edits to `target` when this direction has none."""
        found = self.edits.get((concept, source, target))
        if found:
            return found
        return [e for (c, _, t), edits in self.edits.items() if c == concept and t == target for e in edits]

    def locate(
        self, parts: list[str], text: str, concept: str, source: str
    ) -> tuple[int | None, sparse.csr_matrix]:
        """The sentence that most carries `concept` (None where the edit should append), and the
        TF-IDF row to rank the edits by: that sentence's, or the whole text's when appending.

        A text whose concept has an "absent" value (edits from it mostly add a sentence, as
        CEBaB's `unknown` does) has no sentence to replace.
        """
        scorer = self.scorers.get(concept)
        if scorer is None or not parts or (concept, source) in self.absent:
            return None, self.vectorizer.transform([text])
        rows = self.vectorizer.transform(parts)
        at = int(np.argmax(scorer.predict_proba(rows)[:, 1]))
        return at, rows[at]

    def rank(
        self, concept: str, source: str, target: str, query: sparse.csr_matrix, by_sentence: bool
    ) -> list[tuple[SentenceEdit, float]]:
        """This direction's edits, most similar first: by the sentence each replaced (`by_sentence`)
        or by its whole base text, against the `query` row from `locate`."""
        edits = self.cell(concept, source, target)
        if not edits:
            return []
        key = (concept, source, target, by_sentence)
        if key not in self._keys:
            self._keys[key] = self.vectorizer.transform(
                [
                    (e.removed or self.pool.texts[e.base_row]) if by_sentence else self.pool.texts[e.base_row]
                    for e in edits
                ]
            ).tocsr()
        sims = (self._keys[key] @ query.T).toarray().ravel()
        order = np.argsort(-sims, kind="stable")
        return [(edits[i], float(sims[i])) for i in order]


class SpliceExplainer(CounterfactualExplainer):
    """Counterfactuals of the query made by putting the corpus's own one-sentence edits in place."""

    name = "splice"
    nested_top_k = True  # one ranked list of edits, cut at K

    def __init__(
        self,
        edits: SentenceEdits,
        *,
        taggers: Any | None = None,
        max_k: int = DEFAULT_MAX_K,
        aggregation: str = "mean",
        similarity_threshold: float | None = None,
    ) -> None:
        super().__init__(aggregation=aggregation, similarity_threshold=similarity_threshold)
        self.edits = edits
        self.taggers = taggers
        self.max_k = max_k

    def counterfactuals(
        self,
        text: str,
        intervention: Intervention,
        top_k: int,
        *,
        base_labels: Mapping[str, str] | None = None,
    ) -> tuple[list[Counterfactual], dict[str, Any]]:
        self.edits.pool.schema.validate(intervention)
        concept, target = intervention.concept, intervention.target
        source = source_value(text, intervention, base_labels, self.taggers, self.name)
        details: dict[str, Any] = {"source": source, "max_k": self.max_k}
        if source == target:
            return [], {**details, "note": "the concept already has the target value; effect is zero"}
        parts = sentences(text)
        at, query = self.edits.locate(parts, text, concept, source)
        ranked = self.edits.rank(concept, source, target, query, by_sentence=at is not None)
        out: list[Counterfactual] = []
        # Equal texts from different edits stay: an edit many annotators made weighs more.
        for edit, sim in ranked:
            new = [edit.inserted] if edit.inserted else []
            spliced = " ".join(parts[:at] + new + parts[at + 1 :] if at is not None else parts + new)
            if not spliced or spliced == text:
                continue
            ids = self.edits.pool.ids
            out.append(
                Counterfactual(
                    spliced,
                    similarity=sim,
                    source_id=ids[edit.base_row] if ids else str(edit.base_row),
                )
            )
            if len(out) >= min(top_k, self.max_k):
                break
        details["replaced_sentence"] = parts[at] if at is not None else None
        details["edits_available"] = len(ranked)
        if not out:
            details["note"] = f"no corpus edits for {concept} {source}->{target}; effect reported as zero"
        return out, details


@register(
    "splice",
    "The query with its concept sentence replaced by the corpus's own one-sentence edits "
    "(same concept and direction, nearest first); scored by the classifier",
    options=("aggregation", "similarity_threshold", "splice_max_k"),
)
def make_splice(resources: Resources, **options: Any) -> SpliceExplainer:
    return _splice(resources, options, "splice")


@register(
    "splice_median",
    "splice with the per-label median of the counterfactuals' predictions (robust to edits that "
    "flip a saturated classifier)",
    options=("similarity_threshold", "splice_max_k"),  # the aggregation is the median
)
def make_splice_median(resources: Resources, **options: Any) -> SpliceExplainer:
    explainer = _splice(resources, {**options, "aggregation": "median"}, "splice_median")
    explainer.name = "splice_median"
    return explainer


def _splice(resources: Resources, options: dict[str, Any], method: str) -> SpliceExplainer:
    pool = resources.need("pool", method)
    # splice and splice_median (auto's uncalibrated default) read the same edits: built once per
    # domain (3.5 CPU s on CEBaB), not once per method.
    cache_key = f"splice_edits:{resources.seed}"
    edits = resources.memo.get(cache_key)
    if edits is None or edits.pool is not pool:
        edits = SentenceEdits(pool, seed=resources.seed)
        resources.memo[cache_key] = edits
    kw: dict[str, Any] = {}
    if "aggregation" in options:
        kw["aggregation"] = str(options["aggregation"])
    if "similarity_threshold" in options:
        kw["similarity_threshold"] = float(options["similarity_threshold"])
    return SpliceExplainer(
        edits, taggers=resources.taggers, max_k=int(options.get("splice_max_k", DEFAULT_MAX_K)), **kw
    )
