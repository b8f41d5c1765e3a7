"""CachingClassifier in front of the real tfidf-lr pipeline: same answers, fewer calls."""

from __future__ import annotations

from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from explainers.classifiers.cache import CachingClassifier


class Recording:
    """Passes calls to a real classifier and remembers which texts each call carried."""

    def __init__(self, inner) -> None:
        self.inner = inner
        self.calls: list[list[str]] = []
        self.name = "recording-tfidf"

    @property
    def labels(self) -> list[str]:
        return self.inner.labels

    def predict_proba(self, texts: Sequence[str]) -> np.ndarray:
        self.calls.append(list(texts))
        return self.inner.predict_proba(texts)


TEXTS = ["the food was great", "service was slow", "loud and crowded", "nice ambiance", "meh"]


def test_only_uncached_texts_are_sent_and_answers_match(tfidf_lr) -> None:
    rec = Recording(tfidf_lr)
    cache = CachingClassifier(rec)
    assert cache.labels == tfidf_lr.labels
    first = cache.predict_proba(TEXTS[:3] + [TEXTS[0]])
    second = cache.predict_proba(TEXTS)
    assert rec.calls == [TEXTS[:3], TEXTS[3:]]
    np.testing.assert_allclose(first, tfidf_lr.predict_proba(TEXTS[:3] + [TEXTS[0]]))
    np.testing.assert_allclose(second, tfidf_lr.predict_proba(TEXTS))
    s = cache.stats()
    assert (s.hits, s.misses, s.size) == (1 + 3, 3 + 2, 5)
    assert s.to_dict()["hit_rate"] == pytest.approx(4 / 9, abs=1e-4)


def test_all_cached_call_does_not_reach_inner(tfidf_lr) -> None:
    rec = Recording(tfidf_lr)
    cache = CachingClassifier(rec)
    cache.predict_proba(TEXTS)
    out = cache.predict_proba(TEXTS[::-1])
    assert len(rec.calls) == 1
    np.testing.assert_allclose(out, tfidf_lr.predict_proba(TEXTS[::-1]))
    out[:] = 0  # callers may scribble on their result without corrupting the cache
    np.testing.assert_allclose(cache.predict_proba(TEXTS), tfidf_lr.predict_proba(TEXTS))


def test_keys_separate_classifiers_and_lru_evicts(tfidf_lr) -> None:
    a = CachingClassifier(Recording(tfidf_lr), key="a", max_items=3)
    a.predict_proba(TEXTS[:3])
    a.predict_proba([TEXTS[0]])  # touch: TEXTS[0] is now most recent
    a.predict_proba([TEXTS[3]])  # evicts TEXTS[1], the least recently used
    assert a.stats().size == 3
    a.inner.calls.clear()
    a.predict_proba([TEXTS[0], TEXTS[1]])
    assert a.inner.calls == [[TEXTS[1]]]
    with pytest.raises(ValueError):
        CachingClassifier(tfidf_lr, max_items=0)


def test_thread_safe_under_concurrent_overlapping_calls(tfidf_lr) -> None:
    rec = Recording(tfidf_lr)
    cache = CachingClassifier(rec, max_items=50)
    texts = [f"review {i} " + "good " * (i % 7) + "bad " * (i % 3) for i in range(60)]
    expected = tfidf_lr.predict_proba(texts)

    def work(seed: int) -> bool:
        rng = np.random.default_rng(seed)
        for _ in range(20):
            idx = rng.choice(len(texts), size=8, replace=False)
            out = cache.predict_proba([texts[i] for i in idx])
            if not np.allclose(out, expected[idx]):
                return False
        return True

    with ThreadPoolExecutor(8) as pool:
        assert all(pool.map(work, range(8)))
    s = cache.stats()
    assert s.hits + s.misses == 8 * 20 * 8
    assert s.size <= 50
    assert sum(len(c) for c in rec.calls) == s.misses
