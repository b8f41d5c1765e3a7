"""What the issue-20 probe corpus asked of a domain build, and what the upload caps let through.

The probe: 2,000 near-identical JSONL lines (~220 KB, far under the 10 MB body limit) over a few
origins, labels alternating so most same-origin texts differ in exactly one concept. Pairs are
made within an origin, all against all, so the pair count grows with the square of the group
size. Measured here, in process, on the library functions the service runs:

- `pool_from_rows` (the build's pairing step, unchanged): its time, pairs made, and the peak
  memory of the pairs list (tracemalloc), for the probe at 2, 4 and 8 origins;
- the caps the upload route now checks first (`check_labels_seen`, `check_corpus` with the
  default settings): the time to refuse, and the limit named.

Training on the pairs (heads, hit rate) is not run: its cost is proportional to the pairs and
was minutes at the probe's count; the caps stop the upload before any of it.

    .venv/bin/python benchmarks/domain_caps.py
"""

from __future__ import annotations

import json
import sys
import time
import tracemalloc
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from explainers.domains import infer_schema, pool_from_rows, validate_rows  # noqa: E402
from explainers.domains.limits import (  # noqa: E402
    CorpusLimits,
    CorpusTooLarge,
    check_corpus,
    check_labels_seen,
    count_pairs,
)
from explainers.jsonl import split_lines  # noqa: E402

OUT = ROOT / "benchmarks" / "results" / "domain_caps.md"


def probe(lines: int, origins: int) -> str:
    return "\n".join(
        json.dumps(
            {
                "text": f"The food was fine and the service slow, visit {i}.",
                "origin": f"o{i % origins}",
                "labels": {"food": "good" if i % 2 else "bad", "service": "bad" if i % 3 else "good"},
            }
        )
        for i in range(lines)
    )


def main() -> None:
    limits = CorpusLimits()
    rows_out = []
    for origins in (2, 4, 8):
        body = probe(2000, origins)
        rows = validate_rows(split_lines(body))
        schema = infer_schema(rows)
        tracemalloc.start()
        t = time.perf_counter()
        pool = pool_from_rows(rows, schema)
        pair_s = time.perf_counter() - t
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        t = time.perf_counter()
        counted = sum(count_pairs(rows, schema).values())
        count_s = time.perf_counter() - t
        t = time.perf_counter()
        try:
            check_labels_seen(rows, limits)
            check_corpus(rows, schema, limits)
            refused = "accepted"
        except CorpusTooLarge as e:
            refused = e.message.split(";")[1].strip()
        refuse_s = time.perf_counter() - t
        assert counted == len(pool.pairs)
        rows_out.append(
            f"| 2000 lines, {len(body.encode()) // 1024} KB, {origins} origins | {len(pool.pairs):,} | "
            f"{pair_s:.2f} s, {peak / 2**20:.0f} MiB peak | {count_s:.2f} s | {refuse_s * 1000:.0f} ms: {refused} |"
        )
        print(rows_out[-1], flush=True)
    OUT.write_text(
        "# Domain upload caps against the issue-20 probe corpus\n\n"
        "`.venv/bin/python benchmarks/domain_caps.py` (library functions in process, default caps: "
        f"{limits.domain_max_group_texts} texts per origin, {limits.domain_max_pairs:,} pairs, "
        f"{limits.domain_max_concepts} concepts, {limits.domain_max_values} values). Before the caps, "
        "each corpus was queued and built: pairing below, then heads and the hit rate over every pair. "
        "Now the upload is refused (422 naming the cap) after the checks timed in the last column. "
        "Pairing is timed with tracemalloc on (it slows allocation-heavy Python a few times), on a "
        "2-core machine shared with other work.\n\n"
        "| corpus | pairs the build made | pairing (`pool_from_rows`) | pairs counted (no pairs built) "
        "| refused by the caps |\n|---|---|---|---|---|\n" + "\n".join(rows_out) + "\n"
    )
    print(f"wrote {OUT}")


if __name__ == "__main__":
    main()
