"""Held-out pairs of a pool: origin folds, fold pools, and every method's estimates on them.

A pool's counterfactual pairs are ground truth for any classifier: for a pair (base, edit)
the true ICaCE is f(edit) - f(base). To measure a method honestly on them, the pool it
searches must not hold the pair's own texts, nor any other text of the same origin (an
edit of the same review would be a near-copy of the answer). So origins are split into
folds; the pairs of fold f are scored against the pool of every text whose origin is not
in f, and a method's estimate for a pair never sees that pair's review group.
"""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from explainers.classifiers.base import Classifier
from explainers.concepts import Intervention
from explainers.data.pool import Pool
from explainers.progress import Stages
from explainers.registry import MissingResource, Resources, build_explainer, options_for
from explainers.types import explain_batch

# Methods whose estimate does not depend on K: scored once, reused for every K.
K_INDEPENDENT = frozenset({"zero", "conexp", "s_learner", "random_proba"})


@dataclass(frozen=True)
class HeldOutPair:
    """A pool pair (row indices into the pool) and the fold its origin belongs to."""

    base: int
    cf: int
    concept: str
    source: str
    target: str
    fold: int
    origin: str

    @property
    def direction(self) -> str:
        return f"{self.source}->{self.target}"


def origin_folds(origins: Sequence[str], folds: int, seed: int = 0) -> dict[str, int]:
    """Fold of every origin: a seeded shuffle of the distinct origins dealt round-robin."""
    if folds < 2:
        raise ValueError("calibration needs at least 2 folds")
    uniq = sorted(set(origins))
    perm = np.random.default_rng(seed).permutation(len(uniq))
    return {uniq[i]: int(k % folds) for k, i in enumerate(perm)}


def pool_origins(pool: Pool) -> list[str]:
    """The pool's origins; a pool without them treats every text as its own origin."""
    return list(pool.origins) if pool.origins is not None else [str(i) for i in range(len(pool))]


def heldout_pairs(pool: Pool, fold_of: Mapping[str, int]) -> list[HeldOutPair]:
    """Every pool pair whose two texts share a fold (a pair across folds is dropped), with its direction."""
    origins = pool_origins(pool)
    out = []
    for b, cf, concept in pool.pairs:
        fb, fc = fold_of[origins[b]], fold_of[origins[cf]]
        src, tgt = pool.labels[b].get(concept), pool.labels[cf].get(concept)
        if fb != fc or src is None or tgt is None or src == tgt:
            continue
        out.append(HeldOutPair(int(b), int(cf), concept, src, tgt, fb, origins[b]))
    return out


def stratified_sample(pairs: Sequence[HeldOutPair], limit: int | None, seed: int = 0) -> list[HeldOutPair]:
    """At most `limit` pairs, each (concept, direction) cell keeping a proportional share (at least one)."""
    if limit is None or limit >= len(pairs):
        return list(pairs)
    cells: dict[tuple[str, str], list[int]] = defaultdict(list)
    for i, p in enumerate(pairs):
        cells[(p.concept, p.direction)].append(i)
    rng = np.random.default_rng(seed)
    chosen: list[int] = []
    for key in sorted(cells):
        idx = cells[key]
        take = max(1, int(round(limit * len(idx) / len(pairs))))
        chosen += [idx[j] for j in rng.permutation(len(idx))[:take]]
    return [pairs[i] for i in sorted(chosen)]


def restrict_space(space: Any, pool: Pool, rows: Sequence[int]) -> Any:
    """A concept space over `pool` (= the space's pool restricted to `rows`), reusing its vectors and heads.

    The heads stay as trained (on the whole pool): re-training them per fold would be the
    stricter protocol; `calibrate(space_for_pool=...)` lets a caller do that.
    """
    from explainers.matching.space import ConceptSpace

    rows = list(map(int, rows))
    out = ConceptSpace(
        pool,
        space.encoder,
        heads=space.heads,
        encoders=space.encoders,
        meta=dict(space.meta),
        index_kind=space.index_kind,
        approx_threshold=space.approx_threshold,
        base_vectors=space.base_vectors()[rows],
    )
    for c in pool.schema.names:
        if c in space.vectors:
            out.vectors[c] = space.vectors[c][rows]
    out.build_indices()
    out.directory = getattr(space, "directory", None)
    return out


@dataclass
class HeldOutScores:
    """Every method's estimate at every K on the held-out pairs, with the truth and the pairs' facts."""

    pairs: list[HeldOutPair]
    truths: np.ndarray  # (n, C)
    base: np.ndarray  # (n, C) the classifier's prediction on each pair's base text
    estimates: dict[tuple[str, int], np.ndarray]  # (method, K) -> (n, C)
    unavailable: dict[str, str] = field(default_factory=dict)
    wall_s: dict[str, float] = field(default_factory=dict)

    @property
    def concepts(self) -> list[str]:
        return [p.concept for p in self.pairs]

    @property
    def directions(self) -> list[str]:
        return [p.direction for p in self.pairs]

    @property
    def groups(self) -> list[str]:
        return [p.origin for p in self.pairs]


def score_heldout(
    classifier: Classifier,
    resources: Resources,
    pairs: Sequence[HeldOutPair],
    fold_of: Mapping[str, int],
    methods: Sequence[str],
    ks: Sequence[int],
    *,
    folds: int,
    space_for_pool: Callable[[Pool, Sequence[int]], Any] | None = None,
    options: Mapping[str, Any] | None = None,
    log: Callable[[str], None] | None = None,
    stages: Stages | None = None,
) -> HeldOutScores:
    """Score `methods` at `ks` on `pairs`; fold f's pairs are estimated against the pool minus fold f.

    `classifier` should be a caching wrapper that has already scored the pool: every call
    here is then a cache hit. A method that cannot be built (a missing resource) is
    recorded in `unavailable` and left out.
    """
    pool = resources.pool
    if pool is None:
        raise MissingResource("calibration needs a pool with counterfactual pairs")
    origins = pool_origins(pool)
    preds = np.asarray(classifier.predict_proba(pool.texts), float)
    truths = (
        np.stack([preds[p.cf] - preds[p.base] for p in pairs]) if pairs else np.zeros((0, preds.shape[1]))
    )
    base = np.stack([preds[p.base] for p in pairs]) if pairs else np.zeros((0, preds.shape[1]))
    estimates = {(m, k): np.zeros_like(truths) for m in methods for k in ks}
    unavailable: dict[str, str] = {}
    wall: dict[str, float] = defaultdict(float)
    steps, step = max(1, folds * len(methods)), 0
    for f in range(folds):
        idx = [i for i, p in enumerate(pairs) if p.fold == f]
        if not idx:
            continue
        rows = [i for i in range(len(pool)) if fold_of[origins[i]] != f]
        sub = pool.subset(rows)
        space = resources.space
        if space is not None:
            space = space_for_pool(sub, rows) if space_for_pool else restrict_space(space, sub, rows)
        res = replace(
            resources,
            pool=sub,
            space=space,
            extra={k: v for k, v in resources.extra.items() if not k.startswith("_") and k != "calibration"},
        )
        for m in methods:
            step += 1
            if stages is not None:  # the running stage (scoring) advances one method of one fold at a time
                stages.update((step - 1) / steps, f"fold {f + 1}/{folds}: {m}")
            if m in unavailable:
                continue
            try:
                explainer = build_explainer(m, res, **options_for(m, options or {}))
            except (MissingResource, KeyError, ValueError) as e:
                unavailable[m] = f"{type(e).__name__}: {e}"
                continue
            started = time.perf_counter()
            queries = [pool.texts[pairs[i].base] for i in idx]
            interventions = [Intervention(pairs[i].concept, pairs[i].target, pairs[i].source) for i in idx]
            labels = [pool.labels[pairs[i].base] for i in idx]
            for k in [ks[0]] if m in K_INDEPENDENT else ks:
                # Batched where the method can (one classifier call for every new text of the fold).
                found = explain_batch(explainer, queries, interventions, classifier, k, base_labels=labels)
                estimates[(m, k)][idx] = np.stack([e.icace for e in found])
            if m in K_INDEPENDENT:
                for k in ks[1:]:
                    estimates[(m, k)][idx] = estimates[(m, ks[0])][idx]
            wall[m] += time.perf_counter() - started
            if log:
                log(f"  fold {f}: {m} on {len(idx)} pairs in {time.perf_counter() - started:.1f} s")
    for m in unavailable:
        for k in ks:
            estimates.pop((m, k), None)
    return HeldOutScores(list(pairs), truths, base, estimates, unavailable, dict(wall))
