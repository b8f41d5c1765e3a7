"""Matching pools built from CEBaB splits.

The matching baselines and the trained-space methods search a labelled corpus for texts
with the target concept value. On CEBaB that corpus is a training split (by default
`train_inclusive`, which holds the human edits, so it also yields in-pool counterfactual
pairs for pair-transfer and space training). Identical texts appear more than once in
CEBaB (an edit that reproduced another text); they are kept once so a matcher never
returns the same text twice and similarities are not double counted.
"""

from __future__ import annotations

import os
from collections.abc import Collection, Iterable

from explainers.concepts import CEBAB_SCHEMA, ConceptSchema
from explainers.data.cebab import Review, build_pairs, load_split
from explainers.data.pool import Pool

DEFAULT_POOL_SPLIT = "train_inclusive"


def pool_from_reviews(
    reviews: Iterable[Review], schema: ConceptSchema = CEBAB_SCHEMA, exclude_texts: Collection[str] = ()
) -> Pool:
    """A deduplicated `Pool` (first occurrence of each text wins) with its in-pool pairs.

    `exclude_texts` are left out (a benchmark removes its own texts, so a matcher can
    never return the true counterfactual; on CEBaB dev that is 6 short generic texts).
    """
    exclude = set(exclude_texts)
    reviews = [r for r in reviews if r.text not in exclude]
    index_of_text: dict[str, int] = {}
    index_of_review: dict[str, int] = {}
    texts: list[str] = []
    labels: list[dict[str, str]] = []
    ids: list[str] = []
    origins: list[str] = []
    originals: list[bool] = []
    for r in reviews:
        if r.text in index_of_text:
            index_of_review[r.id] = index_of_text[r.text]
            continue
        i = len(texts)
        index_of_text[r.text] = index_of_review[r.id] = i
        texts.append(r.text)
        clean = r.clean_labels()
        labels.append({c: clean.get(c, "unknown") for c in schema.names})
        ids.append(r.id)
        origins.append(r.original_id)
        originals.append(r.is_original)
    pairs: list[tuple[int, int, str]] = []
    seen: set[tuple[int, int, str]] = set()
    for p in build_pairs(reviews):
        b, c = index_of_review[p.base.id], index_of_review[p.counterfactual.id]
        key = (b, c, p.concept)
        # A duplicate text keeps its first labels; drop pairs that no longer change the concept.
        if labels[b][p.concept] == labels[c][p.concept] or key in seen:
            continue
        seen.add(key)
        pairs.append(key)
    return Pool(
        texts=texts, labels=labels, schema=schema, ids=ids, origins=origins, pairs=pairs, originals=originals
    )


def cebab_pool(
    split: str | os.PathLike[str] = DEFAULT_POOL_SPLIT,
    data_dir: str | os.PathLike[str] | None = None,
    schema: ConceptSchema = CEBAB_SCHEMA,
    exclude_texts: Collection[str] = (),
) -> Pool:
    """The pool for a CEBaB split name or split file path, without `exclude_texts`."""
    return pool_from_reviews(load_split(split, data_dir), schema, exclude_texts)
