"""Peak memory of a million-line JSONL upload, of its rows export, and of its CaCE summary.

A real `cace serve` (SQLite job store, no job workers so the items stay as uploaded) receives
a JSONL file of N lines through /v1/effects/upload; its RSS is sampled every 20 ms from /proc
while the upload streams into the store, and again while /v1/jobs/{id}/rows.jsonl streams all
rows out. For the export, every item is first marked done with a realistic result row by one
SQL UPDATE (a synthetic fill: processing a million texts is hours of CPU on this box). The
CaCE summary over those rows (the function the job finalizer runs, reading rows a page at a
time) is measured in this process with tracemalloc.

    .venv/bin/python -m benchmarks.large_upload [--lines 1000000]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import threading
import time
import tracemalloc
from pathlib import Path

from benchmarks.harness import RESULTS
from explainers.data.cebab import load_split

PARAMS = {"intervention": {"concept": "service", "target": "Negative"}, "method": "pt_match", "top_k": 10}
RESULT = {
    "id": None,
    "status": "done",
    "source": "Positive",
    "source_inferred": True,
    "labels": ["1", "2", "3", "4", "5"],
    "icace": [0.0123, -0.0456, 0.0012, 0.0234, 0.0087],
    "base_prediction": [0.01, 0.02, 0.07, 0.3, 0.6],
    "n_counterfactuals": 10,
}


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


class Sampler:
    """Peak RSS of a process while a block runs (sampled every 20 ms)."""

    def __init__(self, pid: int) -> None:
        self.pid, self.peak, self._stop = pid, 0.0, threading.Event()

    def __enter__(self) -> Sampler:
        self.before = rss_mb(self.pid)
        self.peak = self.before
        self._t = threading.Thread(target=self._run, daemon=True)
        self._t.start()
        return self

    def _run(self) -> None:
        while not self._stop.wait(0.02):
            self.peak = max(self.peak, rss_mb(self.pid))

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._t.join()
        self.after = rss_mb(self.pid)


def write_jsonl(path: Path, n: int) -> int:
    texts = list(dict.fromkeys(r.text for r in load_split("dev")))
    with open(path, "w", encoding="utf-8") as f:
        for i in range(n):
            f.write(json.dumps({"text": f"{texts[i % len(texts)]} (#{i})", "id": f"r{i}"}) + "\n")
    return path.stat().st_size


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--lines", type=int, default=1_000_000)
    ap.add_argument("--out", type=Path, default=RESULTS / "large_upload.md")
    args = ap.parse_args(argv)

    import httpx
    import sqlalchemy as sa

    from app.jobs.handlers import summarize
    from app.schemas import EffectsParams
    from app.store import Store
    from benchmarks.harness.service import service

    started = time.time()
    with tempfile.TemporaryDirectory(prefix="large-upload-") as d:
        tmp = Path(d)
        size = write_jsonl(tmp / "texts.jsonl", args.lines)
        url = f"sqlite:///{tmp / 'jobs.sqlite'}"
        env = {
            "CACE_DATABASE_URL": url,
            "CACE_JOB_WORKERS": "0",
            "CACE_MAX_BODY_BYTES": str(4 * size),
            "CACE_MAX_UPLOAD_TEXTS": str(args.lines),
            "OMP_NUM_THREADS": "1",
        }
        with service(env) as srv, httpx.Client(base_url=srv.base_url, timeout=3600) as c:
            pid = srv.proc.pid
            with Sampler(pid) as up, open(tmp / "texts.jsonl", "rb") as f:
                t = time.perf_counter()
                r = c.post(
                    "/v1/effects/upload",
                    data={"params": json.dumps(PARAMS)},
                    files={"file": ("texts.jsonl", f, "application/x-ndjson")},
                )
                upload_s = time.perf_counter() - t
            r.raise_for_status()
            job_id = r.json()["id"]
            total = c.get(f"/v1/jobs/{job_id}").json()["total"]
            store = Store(url)
            with store.engine.begin() as conn:  # the synthetic fill (see the docstring)
                conn.execute(
                    sa.text(
                        "UPDATE cace_job_items SET status='done', result=:r, finished_at=:t WHERE job_id=:j"
                    ),
                    {"r": json.dumps(RESULT), "t": time.time(), "j": job_id},
                )
            with Sampler(pid) as down:
                t = time.perf_counter()
                n_rows = 0
                with c.stream("GET", f"/v1/jobs/{job_id}/rows.jsonl") as resp:
                    for line in resp.iter_lines():
                        n_rows += bool(line)
                export_s = time.perf_counter() - t
            tracemalloc.start()
            t = time.perf_counter()
            summary = summarize(
                EffectsParams.model_validate(PARAMS), store.iter_item_rows(job_id, with_payload=False)
            )
            summary_s = time.perf_counter() - t
            _, summary_peak = tracemalloc.get_traced_memory()
            tracemalloc.stop()
            store.close()
    assert total == args.lines and n_rows == args.lines and summary["summary"]["n_texts"] == args.lines
    lines = [
        "# Large inputs: a JSONL upload, its rows export and its CaCE summary",
        "",
        f"{args.lines:,} lines ({size / 2**20:.0f} MiB of JSONL, one {{text, id}} object per line) uploaded to a real "
        "`cace serve` (SQLite store, no job workers). Server RSS sampled every 20 ms from /proc. The export runs "
        "after every item was marked done with a realistic result by one SQL UPDATE (synthetic fill: processing "
        "the texts would take hours here). The CaCE summary is the finalizer's `summarize` over the stored rows, "
        "read a page at a time, measured with tracemalloc in the benchmark process.",
        "",
        "| step | time s | RSS before MiB | peak RSS MiB | peak growth MiB |",
        "|---|---:|---:|---:|---:|",
        f"| upload {args.lines:,} lines into the store | {upload_s:.1f} | {up.before:.0f} | {up.peak:.0f} | "
        f"{up.peak - up.before:.0f} |",
        f"| export {n_rows:,} rows as rows.jsonl | {export_s:.1f} | {down.before:.0f} | {down.peak:.0f} | "
        f"{down.peak - down.before:.0f} |",
        f"| CaCE summary (bootstrap CI, 1000 resamples) | {summary_s:.1f} | | | {summary_peak / 2**20:.0f} "
        "(tracemalloc peak) |",
        "",
        f"Run took {(time.time() - started) / 60:.1f} min on {time.strftime('%Y-%m-%d')}, on a 2-core box shared "
        "with other sessions.",
        "",
    ]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text("\n".join(lines))
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
