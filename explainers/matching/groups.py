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
    origin_code = {o: k for k, o in enumerate(dict.fromkeys(origins))}
    org = np.array([origin_code[o] for o in origins], dtype=np.int64)
    sigs = [_signature(lab, confounders) for lab in labels]
    tvals = [lab.get(treated, "unknown") for lab in labels]
    by_origin: dict[int, list[int]] = defaultdict(list)
    by_cell: dict[tuple[tuple[str, ...], str], list[int]] = defaultdict(list)
    for i in range(n):
        by_origin[int(org[i])].append(i)
        by_cell[(sigs[i], tvals[i])].append(i)
    cells = {k: np.asarray(v, dtype=np.int64) for k, v in by_cell.items()}
    values_of: dict[tuple[str, ...], list[str]] = defaultdict(list)
    for sig, tv in cells:
        values_of[sig].append(tv)
    out: list[QueryGroups] = []
    for q in range(n) if queries is None else queries:
        tq, cq, oq = tvals[q], sigs[q], int(org[q])
        t_idx, c_idx = [], []
        for j in by_origin[oq]:
            if j == q:
                continue
            changed = sum(a != b for a, b in zip(sigs[j], cq, strict=True))
            same_treated = tvals[j] == tq
            if not same_treated and changed == 0:
                t_idx.append(j)
            elif same_treated and changed == 1:
                c_idx.append(j)
        if not t_idx:
            continue
        parts = [cells[(cq, tv)] for tv in values_of[cq] if tv != tq]
        a_all = np.concatenate(parts) if parts else np.zeros(0, dtype=np.int64)
        a_all = a_all[org[a_all] != oq]
        a_idx = a_all if len(a_all) <= max_a else a_all[rng.choice(len(a_all), size=max_a, replace=False)]
        n_idx = _sample_n(n, org, oq, a_all, max_n, rng)
        out.append(QueryGroups(q, _arr(t_idx), _arr(c_idx), np.sort(a_idx), n_idx))
    return out


def _sample_n(
    n: int, org: np.ndarray, oq: int, a_all: np.ndarray, k: int, rng: np.random.Generator
) -> np.ndarray:
    """Up to k distinct texts of other origins that are not in A (all of them when few)."""
    banned = np.zeros(n, dtype=bool)
    banned[a_all] = True
    banned |= org == oq
    free = int(n - banned.sum())
    if free <= k:
        return np.flatnonzero(~banned).astype(np.int64)
    got: list[int] = []
    seen: set[int] = set()
    while len(got) < k:
        for i in rng.integers(0, n, size=4 * k).tolist():
            if not banned[i] and i not in seen:
                seen.add(i)
                got.append(i)
                if len(got) == k:
                    break
    return np.sort(np.asarray(got, dtype=np.int64))


def _arr(xs: Sequence[int]) -> np.ndarray:
    return np.asarray(list(xs), dtype=np.int64)


def group_sizes(groups: Sequence[QueryGroups]) -> dict[str, float]:
    """Mean group size per group name, a diagnostic kept in the space metadata."""
    if not groups:
        return {g: 0.0 for g in GROUP_NAMES}
    return {g: round(float(np.mean([len(x.group(g)) for x in groups])), 2) for g in GROUP_NAMES}
