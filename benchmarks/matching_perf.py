"""Matching performance: FAISS latency, build time, memory and recall; embedding throughput; explanation p50.

    python -m benchmarks.matching_perf [--sizes 10000,100000,1000000]

Pools of 10k / 100k / 1M vectors are synthetic but shaped like real ones: real MiniLM
embeddings of CEBaB texts plus Gaussian noise, renormalised (uniform random vectors in
384-d have no neighbourhood structure, so they would misstate approximate recall).
Latency is per query, single-threaded queries as the service issues them, excluding the
classifier. Results go to benchmarks/results/matching_perf.md.
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import numpy as np

from benchmarks.harness import RESULTS, ROOT
from explainers.matching.index import PartitionIndex, exact_topk, recall_at_k


def rss_mb() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS"):
                return int(line.split()[1]) / 1024
    return float("nan")


def synthetic(seed_vecs: np.ndarray, n: int, rng: np.random.Generator, noise: float = 0.35) -> np.ndarray:
    out = np.empty((n, seed_vecs.shape[1]), dtype=np.float32)
    for s in range(0, n, 100_000):
        m = min(100_000, n - s)
        x = seed_vecs[rng.integers(0, len(seed_vecs), size=m)]
        x = x + rng.normal(scale=noise / np.sqrt(seed_vecs.shape[1]) * 2, size=x.shape).astype(np.float32)
        out[s : s + m] = x / np.linalg.norm(x, axis=1, keepdims=True)
    return out


def pct(xs: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(xs) * 1000, q))


def index_rows(base: np.ndarray, sizes: list[int], n_queries: int) -> list[str]:
    import faiss

    faiss.omp_set_num_threads(2)
    rng = np.random.default_rng(0)
    rows = []
    for n in sizes:
        x = synthetic(base, n, rng)
        q = synthetic(base, n_queries, rng)
        exact = exact_topk(x, q, 10)
        for kind in ("flat", "auto") if n >= 50_000 else ("flat",):
            before = rss_mb()
            t = time.perf_counter()
            idx = PartitionIndex.build(x, kind=kind)
            build_s = time.perf_counter() - t
            mem = rss_mb() - before
            faiss.omp_set_num_threads(1)  # one query at a time, as a request does
            lat = []
            got = []
            for v in q:
                t = time.perf_counter()
                h = idx.search(v, 10)
                lat.append(time.perf_counter() - t)
                got.append(np.pad(h.ids, (0, 10 - len(h.ids)), constant_values=-1))
            faiss.omp_set_num_threads(2)
            rec = recall_at_k(np.stack(got), exact)
            rows.append(
                f"| {n:,} | {idx.kind} | {pct(lat, 50):.3f} | {pct(lat, 99):.3f} | {build_s:.1f} | "
                f"{max(mem, 0):.0f} | {rec:.3f} | {idx.info.get('breadth', '-')} |"
            )
            print(rows[-1], flush=True)
            del idx
        del x
    return rows


def embedding_rows(texts: list[str]) -> list[str]:
    from explainers.embeddings import Encoder

    enc = Encoder(use_disk_cache=False)
    model = enc.model
    model.encode(texts[:16])
    t = time.perf_counter()
    model.encode(texts, batch_size=64, normalize_embeddings=True, show_progress_bar=False)
    st = len(texts) / (time.perf_counter() - t)
    t = time.perf_counter()
    enc.encode(texts)
    ours_cold = len(texts) / (time.perf_counter() - t)
    t = time.perf_counter()
    enc.encode(texts)
    ours_warm = len(texts) / (time.perf_counter() - t)
    return [
        f"| sentence-transformers `encode` (batch 64) | {st:.0f} |",
        f"| `Encoder.encode`, texts not cached | {ours_cold:.0f} |",
        f"| `Encoder.encode`, texts cached | {ours_warm:,.0f} |",
    ]


def explanation_rows(
    base_texts: list[str], base_vecs: np.ndarray, n_pool: int, queries: list[str]
) -> list[str]:
    """Whole `match` explanations (K=10) with in-process tfidf-lr over a synthetic-vector pool of n_pool texts."""
    from explainers.concepts import CEBAB_SCHEMA, Intervention
    from explainers.data.pool import Pool
    from explainers.embeddings import Encoder
    from explainers.matching.explainers import MatchingExplainer
    from explainers.matching.space import ConceptSpace
    from explainers.reference import ensure_reference, load_reference

    rng = np.random.default_rng(1)
    pick = rng.integers(0, len(base_texts), size=n_pool)
    vals = ("Positive", "Negative", "unknown")
    labels = [
        {c: vals[int(v)] for c, v in zip(CEBAB_SCHEMA.names, rng.integers(0, 3, size=4), strict=True)}
        for _ in range(n_pool)
    ]
    pool = Pool([base_texts[i] for i in pick], labels, CEBAB_SCHEMA)
    vecs = synthetic(base_vecs, n_pool, rng)
    space = ConceptSpace(pool, Encoder(), base_vectors=vecs)
    space.build_indices()
    clf = load_reference(ensure_reference("tfidf-lr", ROOT / "var"))
    exp = MatchingExplainer(space)
    import faiss

    faiss.omp_set_num_threads(1)
    lab = {c: "Positive" for c in CEBAB_SCHEMA.names}
    iv = Intervention("food", "Negative", "Positive")
    rows = []
    for what, texts in (
        ("query embedding cached", queries),
        ("query embedded at request time", [q + f" (visit {i})" for i, q in enumerate(queries)]),
    ):
        lat = []
        for i, q in enumerate(texts):
            t = time.perf_counter()
            exp.explain(q, iv, clf, top_k=10, base_labels=lab)
            if i:  # the first call loads the models
                lat.append(time.perf_counter() - t)
        rows.append(
            f"| {n_pool:,} | match, K=10, tfidf-lr in process, {what} | {pct(lat, 50):.2f} | "
            f"{pct(lat, 99):.2f} | {len(lat)} |"
        )
    return rows


def main(argv=None) -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--sizes", default="10000,100000,1000000")
    p.add_argument("--queries", type=int, default=300)
    p.add_argument(
        "--seed-vectors",
        type=Path,
        default=None,
        help="a .npy of real embeddings to shape the synthetic pools (else: embed CEBaB train_inclusive)",
    )
    p.add_argument(
        "--index-only", action="store_true", help="only the FAISS rows (for a machine without the models)"
    )
    p.add_argument("--out", type=Path, default=RESULTS / "matching_perf.md")
    p.add_argument("--machine", default=f"{os.cpu_count()} CPU cores")
    args = p.parse_args(argv)
    if args.seed_vectors is not None:
        base = np.load(args.seed_vectors).astype(np.float32)
        base /= np.linalg.norm(base, axis=1, keepdims=True)
    else:
        from explainers.data.pools import cebab_pool
        from explainers.embeddings import Encoder

        pool = cebab_pool("train_inclusive")
        base = Encoder().encode(pool.texts)
    lines = [
        "# Matching performance",
        "",
        f"- machine: {args.machine}; FAISS single-threaded "
        "per query; synthetic pools = real CEBaB MiniLM vectors + noise, renormalised",
        "- latency excludes the classifier and the query embedding (vector in hand); recall@10 vs exact search "
        "on held-out synthetic queries; memory = RSS growth while building",
        "",
        "| pool | index | p50 ms | p99 ms | build s | memory MB | recall@10 | efSearch/nprobe |",
        "|---|---|---|---|---|---|---|---|",
    ]
    lines += index_rows(base, [int(s) for s in args.sizes.split(",")], args.queries)
    if args.index_only:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text("\n".join(lines) + "\n")
        print("\n".join(lines))
        return 0
    lines += [
        "",
        "## Embedding throughput (texts/s, all-MiniLM-L6-v2, CPU)",
        "",
        "| path | texts/s |",
        "|---|---|",
    ]
    lines += embedding_rows(pool.texts[:512])
    lines += [
        "",
        "## Whole explanation",
        "",
        "| pool | what | p50 ms | p99 ms | queries |",
        "|---|---|---|---|---|",
    ]
    queries = pool.texts[:101]
    Encoder().encode(queries)
    lines += explanation_rows(pool.texts, base, 100_000, queries)
    out = args.out
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    raise SystemExit(main())
