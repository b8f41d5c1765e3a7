"""Service latency and job throughput over real HTTP.

Starts `cace serve` (uvicorn subprocess) on the embedded defaults and measures:
- POST /v1/explanations latency (p50/p99) for pt_match and match, K=5, tfidf-lr in-process;
- an effects job over N CEBaB dev texts: texts/s from submission to `succeeded`, on SQLite and PostgreSQL.
Prints a markdown table and writes it to benchmarks/results/service_latency.md.

    .venv/bin/python -m benchmarks.service_latency [--n-requests 100] [--n-texts 300]
"""

from __future__ import annotations

import argparse
import os
import platform
import tempfile
import time
from pathlib import Path

import httpx
import numpy as np

from benchmarks.harness import RESULTS
from benchmarks.harness.service import drop_pg_prefix, service, store_env
from explainers.data.cebab import load_split


def texts(n: int) -> list[str]:
    out: list[str] = []
    for r in load_split("dev"):
        if r.text not in out:
            out.append(r.text)
        if len(out) == n:
            break
    return out


def latency(c: httpx.Client, method: str, sample: list[str]) -> dict[str, float]:
    times = []
    for t in sample:
        started = time.perf_counter()
        r = c.post(
            "/v1/explanations",
            json={
                "text": t,
                "method": method,
                "top_k": 5,
                "intervention": {"concept": "food", "target": "Negative"},
            },
        )
        r.raise_for_status()
        times.append((time.perf_counter() - started) * 1000)
    return {"p50": float(np.percentile(times, 50)), "p99": float(np.percentile(times, 99)), "n": len(times)}


def job_rate(c: httpx.Client, sample: list[str]) -> float:
    started = time.perf_counter()
    r = c.post(
        "/v1/effects",
        json={
            "texts": sample,
            "method": "pt_match",
            "top_k": 5,
            "mode": "job",
            "intervention": {"concept": "food", "target": "Negative"},
        },
    )
    r.raise_for_status()
    job_id = r.json()["id"]
    while c.get(f"/v1/jobs/{job_id}").json()["status"] not in ("succeeded", "failed", "cancelled"):
        time.sleep(0.1)
    return len(sample) / (time.perf_counter() - started)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--n-requests", type=int, default=100)
    ap.add_argument("--n-texts", type=int, default=300)
    args = ap.parse_args(argv)
    sample = texts(max(args.n_requests, args.n_texts))
    rows = []
    for backend in ("sqlite", "postgresql"):
        with tempfile.TemporaryDirectory() as tmp:
            env = store_env(backend, Path(tmp))
            try:
                with service(env) as srv, httpx.Client(base_url=srv.base_url, timeout=120) as c:
                    if backend == "sqlite":
                        for method in ("pt_match", "match"):
                            latency(c, method, sample[:5])  # warm the caches
                            lat = latency(c, method, sample[: args.n_requests])
                            rows.append(
                                f"| POST /v1/explanations {method}, K=5 | {lat['n']} requests | "
                                f"p50 {lat['p50']:.1f} ms, p99 {lat['p99']:.1f} ms |"
                            )
                    rate = job_rate(c, sample[: args.n_texts])
                    rows.append(
                        f"| effects job pt_match K=5, {backend} store | {args.n_texts} texts | "
                        f"{rate:.1f} texts/s end to end |"
                    )
            finally:
                if backend == "postgresql":
                    drop_pg_prefix(env["CACE_TABLE_PREFIX"])
    table = "\n".join(
        [
            "# Service latency and job throughput",
            "",
            f"Machine: {platform.machine()}, {os.cpu_count()} CPUs (shared with other work while measured); "
            "classifier tfidf-lr in-process; 2 job worker threads; one uvicorn process.",
            "",
            "| what | size | result |",
            "|---|---|---|",
            *rows,
            "",
        ]
    )
    print(table)
    out = RESULTS / "service_latency.md"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(table)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
