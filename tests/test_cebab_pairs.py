"""CEBaB pairs, pools and stratified subsets on the real split files."""

from __future__ import annotations

from collections import Counter

import pytest

from explainers.bench.runner import benchmark_texts, select_pairs
from explainers.data.cebab import build_pairs, load_split, pair_counts
from explainers.data.pools import pool_from_reviews


@pytest.fixture(scope="module")
def dev_pairs():
    return build_pairs(load_split("dev"))


@pytest.fixture(scope="module")
def train_reviews():
    return load_split("train_inclusive")


def test_dev_pair_counts(dev_pairs) -> None:
    assert len(dev_pairs) == 3898
    assert pair_counts(dev_pairs) == {"food": 1300, "service": 1052, "ambiance": 848, "noise": 698}


def test_dev_pairs_cover_six_directions_per_concept(dev_pairs) -> None:
    cells = Counter((p.concept, p.direction) for p in dev_pairs)
    for concept in ("food", "service", "ambiance", "noise"):
        assert len([d for c, d in cells if c == concept]) == 6
    assert all(p.source != p.target for p in dev_pairs)


def test_pool_is_deduplicated_and_keeps_pairs(train_reviews) -> None:
    reviews = train_reviews
    pool = pool_from_reviews(reviews)
    assert len(pool) == len({r.text for r in reviews}) == len(set(pool.texts))
    assert len(pool.ids) == len(pool.origins) == len(pool)
    # Pairs point at texts with the source and target labels of the edited concept.
    assert all(pool.labels[b][concept] != pool.labels[c][concept] for b, c, concept in pool.pairs)
    # Nearly all pairs stay within one original review (a duplicated text keeps its first origin).
    same_origin = sum(pool.origins[b] == pool.origins[c] for b, c, _ in pool.pairs)
    assert same_origin >= 0.99 * len(pool.pairs)
    assert len(pool.pairs) > 20000
    assert all(set(lab) == {"food", "service", "ambiance", "noise"} for lab in pool.labels)


def test_pool_excludes_benchmark_texts(dev_pairs, train_reviews) -> None:
    texts = benchmark_texts(dev_pairs)
    full = pool_from_reviews(train_reviews)
    clean = pool_from_reviews(train_reviews, exclude_texts=texts)
    leaked = set(full.texts) & texts
    assert leaked, "CEBaB dev shares a few short texts with train_inclusive"
    assert not set(clean.texts) & texts
    assert len(clean) == len(full) - len(leaked)


def test_select_pairs_is_stratified_and_deterministic(dev_pairs) -> None:
    sub = select_pairs(dev_pairs, 120, seed=3)
    assert len(sub) == 120
    assert sub == select_pairs(dev_pairs, 120, seed=3)
    assert sub != select_pairs(dev_pairs, 120, seed=4)
    cells = {(p.concept, p.direction) for p in sub}
    assert len(cells) == 24  # every (concept, direction) cell is represented
    counts = pair_counts(sub)
    assert counts["food"] > counts["noise"]  # proportional to the full set
    tiny = select_pairs(dev_pairs, 5, seed=0)
    assert len(tiny) == 5
    assert select_pairs(dev_pairs, None) == dev_pairs
