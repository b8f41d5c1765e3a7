"""A pool's own counterfactual pairs in the shape the benchmark runner reads.

CEBaB's `Pair` holds `Review`s whose `clean_labels()` maps anything but CEBaB's values to
unknown; a domain of its own values (the movie corpus's good/bad) keeps its labels as they are.
"""

from __future__ import annotations

from dataclasses import dataclass

from explainers.data.pool import Pool


@dataclass(frozen=True)
class PoolText:
    text: str
    labels: dict[str, str]

    def clean_labels(self) -> dict[str, str]:
        return dict(self.labels)


@dataclass(frozen=True)
class PoolPair:
    """`base` with `concept` changed from `source` to `target` gives `counterfactual` (a pool pair)."""

    base: PoolText
    counterfactual: PoolText
    concept: str
    source: str
    target: str

    @property
    def direction(self) -> str:
        return f"{self.source}->{self.target}"


def pool_pairs(pool: Pool) -> list[PoolPair]:
    """Every in-pool pair of `pool`, labels as the pool has them."""
    texts = [PoolText(t, dict(lab)) for t, lab in zip(pool.texts, pool.labels, strict=True)]
    return [
        PoolPair(texts[b], texts[c], con, pool.labels[b][con], pool.labels[c][con])
        for b, c, con in pool.pairs
    ]
