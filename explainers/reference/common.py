"""What every reference classifier shares: the rating labels and the rated reviews of a split."""

from __future__ import annotations

from explainers.data.cebab import Review

LABELS = ["1", "2", "3", "4", "5"]
REFERENCE_MODELS = ("tfidf-lr", "minilm-ft")


def rated(reviews: list[Review]) -> tuple[list[str], list[str]]:
    keep = [r for r in reviews if r.review_majority in LABELS]
    return [r.text for r in keep], [r.review_majority for r in keep]
