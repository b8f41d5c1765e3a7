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
`generate`.

Two options, declared at registration, set what one rewrite covers (measured on CEBaB dev and
the movie domain in benchmarks/results/splice_multisentence.md):

- `splice_unit`: `sentence` splices whole sentences; `clause` (the default) cuts sentences after a
  comma or semicolon and before "but", so a concept that shares its sentence with another
  ("Great food, but the waiter was rude.") is rewritten without the other's words (tfidf-lr dev
  macro L2 / Cos 0.2124 / 0.4320 -> 0.2001 / 0.4082 at K=20, every concept better, movies unchanged);
- `splice_scope`: `one` (the default) rewrites the piece that most carries the concept; `two` and
  `all` rewrite further pieces the scorer reads as carrying it, each with its own nearest edits.
  Measured worse for every concept (the extra pieces carry other concepts too, and a guess at how
  far a human edit would reach misses more often than it hits); kept for other corpora;
- `splice_edit_pieces`: the most pieces a corpus edit may have rewritten to be transplanted. At 1
  only one-piece edits serve; at 2 an edit that rewrote two pieces (CEBaB's food edits are the
  longest: 37% of them rewrite two or more sentences) is transplanted whole, its new pieces joined
  in place of the query's one piece: more of what the human wrote, where the one-piece edits
  supply too little of it.

What it still cannot do: reach as far as a human edit that rewrites several sentences (CEBaB's
food edits, the longest: its remaining gap to the other concepts); `splice_edit_pieces` brings
such edits' text in, not their reach.
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
from explainers.errors import MissingResource, UnknownOption
from explainers.labels import source_value
from explainers.registry import Resources, register
from explainers.types import Counterfactual, CounterfactualExplainer

_SENTENCE_END = re.compile(r"(?<=[.!?])\s+|\n+")
# A piece after a comma needs this many words to be a clause of its own (a subject, a verb and
# something said): below it, it lists more of the same judgement and stays with the piece before.
MIN_CLAUSE_WORDS = 3
_CLAUSE_END = re.compile(r"(?<=[,;])\s+|\s+(?=but\s)", re.IGNORECASE)
# Beyond this many counterfactuals per query the gain is small and the classifier calls are not.
DEFAULT_MAX_K = 20
# A source value whose edits add a new sentence this often (rather than rewrite one) reads as
# "the concept is not mentioned": CEBaB's `unknown` is 31-50%, its other values 0-5%.
ABSENT_INSERT_SHARE = 0.2
# How many of a text's sentences `splice` rewrites: "one" (the one that most carries the concept),
# "two" (that one and the next if it too reads as carrying it), "all" (every carrying sentence).
SCOPES = ("one", "two", "all")
DEFAULT_SCOPE = "one"
# A sentence "carries" a concept when the scorer gives it at least this probability (the scorer is a
# logistic regression on edited vs untouched sentences, so 0.5 is its own decision boundary).
CARRY_P = 0.5


def sentences(text: str) -> list[str]:
    return [s.strip() for s in _SENTENCE_END.split(text.strip()) if s.strip()]


def clauses(text: str) -> list[str]:
    """The text's sentences, each cut further after a comma or semicolon and before "but": CEBaB
    reviews often judge several concepts in one sentence ("Great food, but the waiter was rude."),
    and a clause is the smallest piece an edit of one of them rewrites."""
    out: list[str] = []
    for sentence in sentences(text):
        pieces = [c.strip() for c in _CLAUSE_END.split(sentence) if c.strip()]
        for i, piece in enumerate(pieces):
            # A comma before a short piece lists attributes of one judgement ("a moving, nuanced
            # performance"), it does not start a clause: such a piece stays with the one before.
            if i and not piece.lower().startswith("but ") and len(piece.split()) < MIN_CLAUSE_WORDS:
                out[-1] = f"{out[-1]} {piece}"
            else:
                out.append(piece)
    return out


def fit_into(piece: str, replaced: str) -> str:
    """`piece` (a transplanted clause or sentence) shaped to stand where `replaced` stood: the
    replaced piece's closing punctuation, and a lower-case start where it continued a sentence."""
    core = piece.rstrip(" .,;:!?")
    if not core:
        return ""
    end = replaced[len(replaced.rstrip(" .,;:!?")) :].strip()
    if replaced[:1].islower() and core[:1].isupper() and not core.startswith(("I ", "I'")):
        core = core[0].lower() + core[1:]
    elif replaced[:1].isupper():
        core = core[0].upper() + core[1:]
    return core + end


UNITS = {"sentence": sentences, "clause": clauses}
DEFAULT_UNIT = "clause"
# The most pieces (units) a corpus edit may have rewritten to serve as one transplant; more than
# this and the edit reaches further than one piece of the query can hold.
DEFAULT_EDIT_PIECES = 1
MAX_EDIT_PIECES = 3


def checked_edit_pieces(value: Any) -> int:
    """`splice_edit_pieces` as a number from 1 to MAX_EDIT_PIECES (a config file may give "2")."""
    if not isinstance(value, bool):
        try:
            pieces = int(value)
        except (TypeError, ValueError):
            pass
        else:
            if 1 <= pieces <= MAX_EDIT_PIECES:
                return pieces
    raise UnknownOption(f"splice_edit_pieces must be an integer from 1 to {MAX_EDIT_PIECES}, not {value!r}")


@dataclass(frozen=True)
class SentenceEdit:
    """One pool edit that rewrote (at most) `edit_pieces` pieces: `removed` -> `inserted` ("" =
    none; several pieces joined by a space)."""

    removed: str
    inserted: str
    base_row: int


class SentenceEdits:
    """The pool's small edits per (concept, source, target), and a concept-sentence scorer.

    Built from `pool.pairs`; a pair whose edit rewrote more than `edit_pieces` pieces teaches
    the scorer which pieces carry the concept but is not used as an edit to transplant.
    """

    def __init__(
        self, pool: Pool, *, seed: int = 0, unit: str = DEFAULT_UNIT, edit_pieces: int = DEFAULT_EDIT_PIECES
    ) -> None:
        if not pool.pairs:
            raise MissingResource("method 'splice' needs counterfactual pairs in the pool, and it has none")
        if unit not in UNITS:
            raise UnknownOption(f"splice_unit must be one of {', '.join(UNITS)}, not {unit!r}")
        edit_pieces = checked_edit_pieces(edit_pieces)
        self.pool = pool
        self.unit = unit
        self.edit_pieces = edit_pieces
        self.split = UNITS[unit]
        self.edits: dict[tuple[str, str, str], list[SentenceEdit]] = defaultdict(list)
        carried: dict[str, list[tuple[str, int]]] = defaultdict(list)
        for b, e, concept in pool.pairs:
            before, after = self.split(pool.texts[b]), self.split(pool.texts[e])
            removed = [s for s in before if s not in after]
            inserted = [s for s in after if s not in before]
            source, target = pool.labels[b].get(concept), pool.labels[e].get(concept)
            if source is None or target is None or source == target:
                continue
            if len(removed) <= 1 and len(inserted) <= 1 and (removed or inserted):
                edit = SentenceEdit(removed[0] if removed else "", inserted[0] if inserted else "", b)
                self.edits[(concept, source, target)].append(edit)
            elif inserted and max(len(removed), len(inserted)) <= edit_pieces:
                # A longer edit serves whole: its new pieces, in their order, stand where one piece stood.
                self.edits[(concept, source, target)].append(
                    SentenceEdit(" ".join(removed), " ".join(inserted), b)
                )
            carried[concept] += [(s, 1) for s in removed + inserted]
            carried[concept] += [(s, 0) for s in before if s in after]
        if not self.edits:
            raise MissingResource("method 'splice' found no small edits among the pool's pairs")
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

    def carriers(
        self, parts: list[str], concept: str, at: int, scope: str
    ) -> list[tuple[int, sparse.csr_matrix]]:
        """The sentences besides `at` that `scope` rewrites too, most concept-laden first, each with
        its TF-IDF row (its own edits are ranked by it): none for "one"; those the scorer reads as
        carrying the concept (p >= CARRY_P) for "all", the first of them for "two"."""
        scorer = self.scorers.get(concept)
        if scope == "one" or scorer is None or len(parts) < 2:
            return []
        rows = self.vectorizer.transform(parts)
        p = scorer.predict_proba(rows)[:, 1]
        order = [int(i) for i in np.argsort(-p, kind="stable") if int(i) != at and p[i] >= CARRY_P]
        if scope == "two":
            order = order[:1]
        return [(i, rows[i]) for i in order]

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
        scope: str = DEFAULT_SCOPE,
        aggregation: str = "mean",
        similarity_threshold: float | None = None,
    ) -> None:
        super().__init__(aggregation=aggregation, similarity_threshold=similarity_threshold)
        if scope not in SCOPES:
            raise UnknownOption(f"splice_scope must be one of {', '.join(SCOPES)}, not {scope!r}")
        self.edits = edits
        self.taggers = taggers
        self.max_k = max_k
        self.scope = scope

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
        details: dict[str, Any] = {"source": source, "max_k": self.max_k, "scope": self.scope}
        if source == target:
            return [], {**details, "note": "the concept already has the target value; effect is zero"}
        parts = self.edits.split(text)
        # Clauses are transplanted mid-sentence: each takes the punctuation and case of the one it replaces.
        shape = self.edits.unit != "sentence"
        at, query = self.edits.locate(parts, text, concept, source)
        ranked = self.edits.rank(concept, source, target, query, by_sentence=at is not None)
        # The other sentences carrying the concept get their own nearest edits, walked in step with the
        # first sentence's: the k-th text rewrites each of them with its k-th edit (a concept praised in
        # two sentences and criticised in one reads as mixed, not as the target).
        more = self.edits.carriers(parts, concept, at, self.scope) if at is not None else []
        also = [
            (i, [e for e, _ in self.edits.rank(concept, source, target, row, by_sentence=True)])
            for i, row in more
        ]
        out: list[Counterfactual] = []
        # Equal texts from different edits stay: an edit many annotators made weighs more.
        for n, (edit, sim) in enumerate(ranked):
            if at is None:
                added = fit_into(edit.inserted, "A.") if shape else edit.inserted
                spliced = " ".join(parts + ([added] if added else []))
            else:
                new = list(parts)
                new[at] = fit_into(edit.inserted, parts[at]) if shape else edit.inserted
                for i, edits_i in also:
                    piece = edits_i[n % len(edits_i)].inserted
                    new[i] = fit_into(piece, parts[i]) if shape else piece
                spliced = " ".join(s for s in new if s)
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
        if more:
            details["also_replaced"] = [parts[i] for i, _ in more]
        details["edits_available"] = len(ranked)
        if not out:
            details["note"] = f"no corpus edits for {concept} {source}->{target}; effect reported as zero"
        return out, details


@register(
    "splice",
    "The query with its concept clause (or sentence: splice_unit) replaced by the corpus's own "
    "one-clause edits (same concept and direction, nearest first); scored by the classifier",
    options=(
        "aggregation",
        "similarity_threshold",
        "splice_edit_pieces",
        "splice_max_k",
        "splice_scope",
        "splice_unit",
    ),
)
def make_splice(resources: Resources, **options: Any) -> SpliceExplainer:
    return _splice(resources, options, "splice")


@register(
    "splice_median",
    "splice with the per-label median of the counterfactuals' predictions (robust to edits that "
    "flip a saturated classifier)",
    # The aggregation is the median.
    options=("similarity_threshold", "splice_edit_pieces", "splice_max_k", "splice_scope", "splice_unit"),
)
def make_splice_median(resources: Resources, **options: Any) -> SpliceExplainer:
    explainer = _splice(resources, {**options, "aggregation": "median"}, "splice_median")
    explainer.name = "splice_median"
    return explainer


def _splice(resources: Resources, options: dict[str, Any], method: str) -> SpliceExplainer:
    pool = resources.need("pool", method)
    unit = str(options.get("splice_unit", DEFAULT_UNIT))
    # Read before the cache key, so "2" from a config file and 2 share one index.
    pieces = checked_edit_pieces(options.get("splice_edit_pieces", DEFAULT_EDIT_PIECES))
    # One index per (unit, edit size) (the edits and the scorer differ), shared by every method of
    # the domain that reads it: splice and splice_median (auto's uncalibrated default) built it once
    # each before (3.5 CPU s apiece on CEBaB at a first start).
    cache_key = f"splice_edits:{unit}:{pieces}:{resources.seed}"
    edits = resources.memo.get(cache_key)
    if edits is None or edits.pool is not pool:
        edits = SentenceEdits(pool, seed=resources.seed, unit=unit, edit_pieces=pieces)
        resources.memo[cache_key] = edits
    kw: dict[str, Any] = {}
    if "aggregation" in options:
        kw["aggregation"] = str(options["aggregation"])
    if "similarity_threshold" in options:
        kw["similarity_threshold"] = float(options["similarity_threshold"])
    return SpliceExplainer(
        edits,
        taggers=resources.taggers,
        max_k=int(options.get("splice_max_k", DEFAULT_MAX_K)),
        scope=str(options.get("splice_scope", DEFAULT_SCOPE)),
        **kw,
    )
