"""Query groups T / C / A / N for training a concept space (Gat et al., 2024, sec. 4).

For a query text q and a treated concept c, every other text in the pool falls in one group:

- T: same origin as q, c changed, every confounder unchanged (a true counterfactual);
- C: same origin, c unchanged, exactly one confounder changed (a counterfactual on the wrong concept);
- A: another origin, same confounder labels as q, c different from q's (an approximate counterfactual,
  what matching at explain time can hope to find);
- N: the rest.

The contrastive loss asks the space to rank T above C and A, and A above N (see `loss.py`).
Only queries with at least one T member train anything, so only those get groups. A and N
can be large; they are subsampled per query (seeded) to keep one epoch cheap.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

GROUP_NAMES = ("T", "C", "A", "N")


@dataclass
class QueryGroups:
    """Pool indices of each group for one query (arrays of int64, possibly empty)."""

    query: int
    T: np.ndarray
    C: np.ndarray
    A: np.ndarray
    N: np.ndarray

    def group(self, name: str) -> np.ndarray:
        return getattr(self, name)


def _signature(labels: Mapping[str, str], concepts: Sequence[str]) -> tuple[str, ...]:
    return tuple(labels.get(c, "unknown") for c in concepts)


def build_groups(
    labels: Sequence[Mapping[str, str]],
    origins: Sequence[str],
    treated: str,
    concepts: Sequence[str],
    *,
    max_a: int = 32,
    max_n: int = 32,
    seed: int = 0,
    queries: Sequence[int] | None = None,
) -> list[QueryGroups]:
    """Groups for every query (default: every text) that has a true counterfactual in the pool.

    `labels[i]` maps each concept to a value; `origins[i]` says which texts are edits of one
    another. `concepts` lists every concept in the schema, the treated one included.
    """
    if len(labels) != len(origins):
        raise ValueError("labels and origins differ in length")
    if treated not in concepts:
        raise ValueError(f"treated concept {treated!r} is not among {list(concepts)}")
    confounders = [c for c in concepts if c != treated]
    rng = np.random.default_rng(seed)
    n = len(labels)
    by_origin: dict[str, list[int]] = defaultdict(list)
    by_conf: dict[tuple[str, ...], list[int]] = defaultdict(list)
    for i in range(n):
        by_origin[origins[i]].append(i)
        by_conf[_signature(labels[i], confounders)].append(i)
    out: list[QueryGroups] = []
    for q in range(n) if queries is None else queries:
        lq, oq = labels[q], origins[q]
        tq, cq = lq.get(treated, "unknown"), _signature(lq, confounders)
        t_idx, c_idx = [], []
        for j in by_origin[oq]:
            if j == q:
                continue
            lj = labels[j]
            changed = sum(a != b for a, b in zip(_signature(lj, confounders), cq, strict=True))
            same_treated = lj.get(treated, "unknown") == tq
            if not same_treated and changed == 0:
                t_idx.append(j)
            elif same_treated and changed == 1:
                c_idx.append(j)
        if not t_idx:
            continue
        a_all = [j for j in by_conf[cq] if origins[j] != oq and labels[j].get(treated, "unknown") != tq]
        a_idx = _sample(a_all, max_a, rng)
        taken = set(t_idx) | set(c_idx) | set(a_all) | set(by_origin[oq])
        n_idx = _sample_excluding(n, taken, max_n, rng)
        out.append(QueryGroups(q, _arr(t_idx), _arr(c_idx), _arr(a_idx), _arr(n_idx)))
    return out


def _arr(xs: Sequence[int]) -> np.ndarray:
    return np.asarray(list(xs), dtype=np.int64)


def _sample(xs: list[int], k: int, rng: np.random.Generator) -> list[int]:
    if len(xs) <= k:
        return xs
    return [xs[i] for i in rng.choice(len(xs), size=k, replace=False)]


def _sample_excluding(n: int, taken: set[int], k: int, rng: np.random.Generator) -> list[int]:
    """Up to k distinct indices in [0, n) outside `taken`, by rejection (taken is small next to n)."""
    free = n - len(taken)
    if free <= k:
        return [i for i in range(n) if i not in taken]
    got: set[int] = set()
    while len(got) < k:
        for i in rng.integers(0, n, size=2 * k):
            if int(i) not in taken:
                got.add(int(i))
                if len(got) == k:
                    break
    return sorted(got)


def group_sizes(groups: Sequence[QueryGroups]) -> dict[str, float]:
    """Mean group size per group name, a diagnostic kept in the space metadata."""
    if not groups:
        return {g: 0.0 for g in GROUP_NAMES}
    return {g: round(float(np.mean([len(x.group(g)) for x in groups])), 2) for g in GROUP_NAMES}
