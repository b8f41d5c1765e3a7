"""FAISS indices over one partition of a concept space (the texts with concept c = value v).

Exact inner product (`IndexFlatIP`, vectors are unit so it is cosine) is the default: a
CEBaB-sized partition holds a few thousand vectors and a flat scan takes well under a
millisecond. Past `approx_threshold` vectors, `kind="auto"` builds an approximate index:
HNSW (graph; no training, good recall at small efSearch) or IVF (inverted lists; faster to
build at the million scale). The approximate index's search breadth is calibrated at build
time until recall@10 against exact search reaches `target_recall` on sampled queries, and
the measured recall is kept, so a saved index says how good it is.

Search takes an optional allow-list of row ids (confounder filtering) via FAISS's
IDSelector, a similarity threshold, and an optional near-duplicate cut that drops the
query itself when it is in the pool.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import faiss
import numpy as np

KINDS = ("auto", "flat", "hnsw", "ivf")
DEFAULT_APPROX_THRESHOLD = 50_000


@dataclass
class Hits:
    """Search results for one query: row ids into the partition and cosine similarities, best first."""

    ids: np.ndarray
    scores: np.ndarray


def _as_f32(x: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(np.asarray(x, dtype=np.float32))


def exact_topk(vectors: np.ndarray, queries: np.ndarray, k: int) -> np.ndarray:
    """Exact top-k ids by inner product, the reference recall is measured against."""
    flat = faiss.IndexFlatIP(vectors.shape[1])
    flat.add(_as_f32(vectors))
    return flat.search(_as_f32(queries), min(k, len(vectors)))[1]


def recall_at_k(approx: np.ndarray, exact: np.ndarray) -> float:
    """Mean fraction of the exact top-k that the approximate top-k also returns."""
    hits = [
        len(set(a[a >= 0].tolist()) & set(e[e >= 0].tolist())) / max(1, int((e >= 0).sum()))
        for a, e in zip(approx, exact, strict=True)
    ]
    return float(np.mean(hits)) if hits else 1.0


class PartitionIndex:
    """One FAISS index over unit vectors; ids are row numbers into the partition's vector array."""

    def __init__(self, index: faiss.Index, kind: str, info: dict | None = None) -> None:
        self.index: Any = index  # flat, HNSW or IVF: their attributes differ (efSearch, nprobe)
        self.kind = kind
        self.info = dict(info or {})

    def __len__(self) -> int:
        return int(self.index.ntotal)

    @classmethod
    def build(
        cls,
        vectors: np.ndarray,
        *,
        kind: str = "auto",
        approx_threshold: int = DEFAULT_APPROX_THRESHOLD,
        target_recall: float = 0.95,
        seed: int = 0,
    ) -> PartitionIndex:
        if kind not in KINDS:
            raise ValueError(f"unknown index kind {kind!r}; choose one of {KINDS}")
        x = _as_f32(vectors)
        if x.ndim != 2:
            raise ValueError(f"vectors must be (n, d), got shape {x.shape}")
        n, d = x.shape
        if kind == "auto":
            kind = "flat" if n < approx_threshold else ("hnsw" if n < 500_000 else "ivf")
        if kind == "flat" or n == 0:
            flat = faiss.IndexFlatIP(d)
            flat.add(x)
            return cls(flat, "flat", {"n": n, "recall_at_10": 1.0})
        # faiss's stubs type the index kinds apart; one variable holds either.
        index: Any
        if kind == "hnsw":
            index = faiss.IndexHNSWFlat(d, 32, faiss.METRIC_INNER_PRODUCT)
            index.hnsw.efConstruction = 80
            index.add(x)
        else:
            nlist = max(16, int(2 * np.sqrt(n)))
            quantizer = faiss.IndexFlatIP(d)
            index = faiss.IndexIVFFlat(quantizer, d, nlist, faiss.METRIC_INNER_PRODUCT)
            rng = np.random.default_rng(seed)
            train = x[rng.choice(n, size=min(n, 32 * nlist), replace=False)]
            index.train(train)
            index.add(x)
        out = cls(index, kind, {"n": n})
        out.calibrate(x, target_recall=target_recall, seed=seed)
        return out

    def _set_breadth(self, value: int) -> None:
        if self.kind == "hnsw":
            self.index.hnsw.efSearch = int(value)
        elif self.kind == "ivf":
            self.index.nprobe = int(value)

    def calibrate(
        self, x: np.ndarray, *, target_recall: float = 0.95, seed: int = 0, n_queries: int = 200
    ) -> None:
        """Raise efSearch / nprobe until recall@10 vs exact reaches the target on perturbed pool vectors."""
        rng = np.random.default_rng(seed)
        rows = x[rng.choice(len(x), size=min(n_queries, len(x)), replace=False)]
        q = rows + rng.normal(scale=0.05, size=rows.shape).astype(np.float32)
        q /= np.linalg.norm(q, axis=1, keepdims=True)
        exact = exact_topk(x, q, 10)
        ladder = [16, 32, 64, 128, 256, 512] if self.kind == "hnsw" else [4, 8, 16, 32, 64, 128, 256]
        recall = 0.0
        for breadth in ladder:
            self._set_breadth(breadth)
            recall = recall_at_k(self.index.search(_as_f32(q), 10)[1], exact)
            if recall >= target_recall:
                break
        self.info.update(
            {"breadth": breadth, "recall_at_10": round(recall, 4), "target_recall": target_recall}
        )

    def search(
        self,
        query: np.ndarray,
        k: int,
        *,
        allowed: np.ndarray | None = None,
        threshold: float | None = None,
        exclude_above: float | None = None,
    ) -> Hits:
        """Top-k rows for one query (d,), optionally only among `allowed` row ids.

        `threshold` drops hits with similarity below it; `exclude_above` drops near-duplicates
        of the query (similarity at or above it), e.g. the query itself when it is in the pool.
        """
        return self.search_batch(
            _as_f32(query).reshape(1, -1),
            k,
            allowed=allowed,
            threshold=threshold,
            exclude_above=exclude_above,
        )[0]

    def search_batch(
        self,
        queries: np.ndarray,
        k: int,
        *,
        allowed: np.ndarray | None = None,
        threshold: float | None = None,
        exclude_above: float | None = None,
    ) -> list[Hits]:
        """`search` for many queries (n, d) sharing one allow-list, in one FAISS call."""
        q = _as_f32(queries).reshape(-1, self.index.d)
        n = len(self)
        empty = Hits(np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.float32))
        if n == 0 or k <= 0 or len(q) == 0 or (allowed is not None and len(allowed) == 0):
            return [empty for _ in range(len(q))]
        extra = 4 if exclude_above is not None else 0
        kk = min(n if allowed is None else len(allowed), k + extra)
        params: Any = None
        if allowed is not None:
            sel = faiss.IDSelectorBatch(np.ascontiguousarray(allowed, dtype=np.int64))
            if self.kind == "hnsw":
                params = faiss.SearchParametersHNSW(sel=sel, efSearch=self.index.hnsw.efSearch)  # type: ignore[attr-defined]
            elif self.kind == "ivf":
                params = faiss.SearchParametersIVF(sel=sel, nprobe=self.index.nprobe)  # type: ignore[call-arg]
            else:
                params = faiss.SearchParameters(sel=sel)  # type: ignore[call-arg]
        all_scores, all_ids = self.index.search(q, kk, params=params)
        out = []
        for scores, ids in zip(all_scores, all_ids, strict=True):
            keep = ids >= 0
            if exclude_above is not None:
                keep &= scores < exclude_above
            if threshold is not None:
                keep &= scores >= threshold
            out.append(Hits(ids[keep][:k].astype(np.int64), scores[keep][:k]))
        return out

    def save(self, path: Path) -> None:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        faiss.write_index(self.index, str(path))
        path.with_suffix(".json").write_text(json.dumps({"kind": self.kind, **self.info}))

    @classmethod
    def load(cls, path: Path) -> PartitionIndex:
        path = Path(path)
        info = json.loads(path.with_suffix(".json").read_text())
        kind = info.pop("kind")
        out = cls(faiss.read_index(str(path)), kind, info)
        if "breadth" in info:
            out._set_breadth(info["breadth"])
        return out
