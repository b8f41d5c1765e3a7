"""Bounded load test of the live service on loopback: throughput, p50/p99, errors, overload behaviour.

Starts the real service (`cace serve` under uvicorn, in its own process) with the embedded
reference classifier and a CEBaB pool, then runs scenarios of concurrent clients sending
`POST /v1/explanations` (method `approx`, K=5, labels given so no tagger is needed):

* steady:   a few clients, within capacity: the latency a caller sees normally;
* overload: 50 clients for 60 s against an in-flight cap: the service must shed the excess
            with 503 + Retry-After at once, never let requests time out, and stay healthy;
* ratelimit: 50 clients sharing one API key limited to 20 req/s: 429 + Retry-After.

During every scenario a probe hits /healthz once a second, to show liveness under load.
Clients do not retry, so every refusal is counted. Writes a markdown report to
benchmarks/results/load.md (or --out).

    .venv/bin/python -m benchmarks.load                 # all scenarios (~2.5 min on 2 cores)
    .venv/bin/python -m benchmarks.load --quick         # shorter runs
    .venv/bin/python -m benchmarks.load --url http://host:8000 --scenarios steady
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from benchmarks.harness import RESULTS, ROOT

TEXTS = [
    "The food was delicious but the waiter ignored us for twenty minutes.",
    "Great service and a cozy atmosphere, although the pasta was bland.",
    "Loud music, rude staff, and the steak was overcooked.",
    "Lovely quiet place; the sushi was fresh and the staff attentive.",
]
LABELS = {"food": "Positive", "service": "Negative", "ambiance": "unknown", "noise": "unknown"}


@dataclass
class Scenario:
    name: str
    clients: int
    seconds: float
    env: dict[str, str] = field(default_factory=dict)
    key_rate: float | None = None  # create an API key with this rate limit and use it
    note: str = ""


@dataclass
class Result:
    scenario: Scenario
    statuses: Counter = field(default_factory=Counter)
    latencies_ok: list[float] = field(default_factory=list)
    latencies_all: list[float] = field(default_factory=list)
    errors: Counter = field(default_factory=Counter)
    retry_after: set[str] = field(default_factory=set)
    health: list[tuple[int, float]] = field(default_factory=list)
    wall: float = 0.0
    shed_metric: float | None = None
    alive_after: bool = False


def pct(xs: list[float], q: float) -> float:
    if not xs:
        return float("nan")
    s = sorted(xs)
    return s[min(len(s) - 1, max(0, round(q / 100 * (len(s) - 1))))]


def body(i: int) -> dict:
    return {
        "text": TEXTS[i % len(TEXTS)],
        "method": "approx",
        "top_k": 5,
        "intervention": {"concept": "service", "target": "Positive", "source": "Negative"},
        "base_labels": LABELS,
    }


async def client(c: httpx.AsyncClient, res: Result, deadline: float, idx: int) -> None:
    i = idx
    while time.monotonic() < deadline:
        t = time.perf_counter()
        try:
            r = await c.post("/v1/explanations", json=body(i))
        except httpx.TimeoutException:
            res.errors["client timeout (30 s)"] += 1
            continue
        except httpx.HTTPError as e:
            res.errors[type(e).__name__] += 1
            await asyncio.sleep(0.05)
            continue
        took = time.perf_counter() - t
        res.statuses[r.status_code] += 1
        res.latencies_all.append(took)
        if r.status_code == 200:
            res.latencies_ok.append(took)
        elif "retry-after" in r.headers:
            res.retry_after.add(r.headers["retry-after"])
            # A polite client would wait Retry-After; these do not, to keep the pressure on.
        i += 1


async def probe(c: httpx.AsyncClient, res: Result, deadline: float) -> None:
    while time.monotonic() < deadline:
        t = time.perf_counter()
        try:
            r = await c.get("/healthz")
            res.health.append((r.status_code, time.perf_counter() - t))
        except httpx.HTTPError:
            res.health.append((0, time.perf_counter() - t))
        await asyncio.sleep(1.0)


def shed_total(base: str) -> float | None:
    try:
        text = httpx.get(base + "/metrics", timeout=10).text
    except httpx.HTTPError:
        return None
    for line in text.splitlines():
        if line.startswith("cace_requests_shed_total"):
            return float(line.split()[-1])
    return None


async def run_scenario(base: str, sc: Scenario, headers: dict[str, str]) -> Result:
    res = Result(sc)
    shed_before = shed_total(base) or 0.0
    # One pooled client with a connection per simulated client: building 50 httpx clients
    # (each with its own TLS context) would load the generator, not the service.
    limits = httpx.Limits(max_connections=sc.clients, max_keepalive_connections=sc.clients)
    async with (
        httpx.AsyncClient(base_url=base, timeout=30.0, headers=headers, limits=limits) as c,
        httpx.AsyncClient(base_url=base, timeout=10.0) as p,
    ):
        start = time.monotonic()
        deadline = start + sc.seconds
        await asyncio.gather(
            probe(p, res, deadline), *(client(c, res, deadline, i) for i in range(sc.clients))
        )
        res.wall = time.monotonic() - start
    after = shed_total(base)
    res.shed_metric = None if after is None else after - shed_before
    try:
        res.alive_after = httpx.get(base + "/healthz", timeout=10).status_code == 200
    except httpx.HTTPError:
        res.alive_after = False
    return res


@contextlib.contextmanager
def service(env: dict[str, str], data_dir: Path, port: int, log: Path) -> Iterator[str]:
    """The real service in its own process group; yields its base URL once /readyz says ready."""
    full = {
        **os.environ,
        "OMP_NUM_THREADS": "2",
        "TOKENIZERS_PARALLELISM": "false",
        "HF_HUB_OFFLINE": "1",
        "CACE_DATA_DIR": str(data_dir),
        "CACE_DEFAULT_TAGGERS": "false",
        "CACE_DEFAULT_SPACE": "false",
        "CACE_LOG_FORMAT": "json",
        **env,
    }
    py = ROOT / ".venv" / "bin" / "python"
    with open(log, "wb") as fh:
        proc = subprocess.Popen(
            [
                str(py if py.exists() else sys.executable),
                "-m",
                "app.cli",
                "serve",
                "--port",
                str(port),
                "--log-level",
                "warning",
            ],
            cwd=ROOT,
            env=full,
            stdout=fh,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 600
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"service exited: {log.read_text()[-3000:]}")
            with contextlib.suppress(httpx.HTTPError, ValueError):
                r = httpx.get(base + "/readyz", timeout=5)
                # Wait for the optional components too (the encoder loads in the background and
                # would otherwise compete for the CPU during the first scenario seconds).
                states = {c.get("status") for c in r.json().get("components", {}).values()}
                if r.status_code == 200 and not states & {"pending", "loading"}:
                    break
            if time.monotonic() > deadline:
                raise TimeoutError("service not ready in 600 s")
            time.sleep(0.5)
        yield base
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, 15)
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, 9)
            proc.wait(5)


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def fmt_ms(x: float) -> str:
    return "–" if x != x else f"{x * 1000:.0f}"


def report(results: list[Result], meta: dict[str, str]) -> str:
    lines = [
        "# Load test: POST /v1/explanations on loopback",
        "",
        f"Machine: {meta['machine']}; service: {meta['service']}. Workload: {meta['workload']}.",
        "",
        "| scenario | clients | s | requests | ok/s | 200 | 429 | 503 | 504 | other | client errors "
        "| p50 ok ms | p99 ok ms | p50 all ms | p99 all ms | max ms | Retry-After | /healthz p99 ms "
        "| alive after |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        n = sum(r.statuses.values())
        other = n - sum(r.statuses[c] for c in (200, 429, 503, 504))
        health_ok = [t for s, t in r.health if s == 200]
        lines.append(
            f"| {r.scenario.name} | {r.scenario.clients} | {r.wall:.0f} | {n} | {r.statuses[200] / r.wall:.1f} "
            f"| {r.statuses[200]} | {r.statuses[429]} | {r.statuses[503]} | {r.statuses[504]} | {other} "
            f"| {sum(r.errors.values())} | {fmt_ms(pct(r.latencies_ok, 50))} | {fmt_ms(pct(r.latencies_ok, 99))} "
            f"| {fmt_ms(pct(r.latencies_all, 50))} | {fmt_ms(pct(r.latencies_all, 99))} "
            f"| {fmt_ms(max(r.latencies_all) if r.latencies_all else float('nan'))} "
            f"| {','.join(sorted(r.retry_after)) or '–'} "
            f"| {fmt_ms(pct(health_ok, 99))} ({len(health_ok)}/{len(r.health)} ok) | {'yes' if r.alive_after else 'NO'} |"
        )
    lines += ["", "Scenario settings:", ""]
    for r in results:
        env = " ".join(f"{k}={v}" for k, v in r.scenario.env.items())
        extra = f"; key rate {r.scenario.key_rate:g}/s" if r.scenario.key_rate else ""
        shed = f"; server-side shed counter +{r.shed_metric:.0f}" if r.shed_metric is not None else ""
        errs = f"; client errors: {dict(r.errors)}" if r.errors else ""
        lines.append(f"- **{r.scenario.name}**: {r.scenario.note} ({env or 'defaults'}{extra}{shed}{errs})")
    lines += [
        "",
        "What to look for: under overload the excess is refused at once with 503 + Retry-After and "
        "over the key's rate with 429 + Retry-After; no request times out (client errors 0, no 504), "
        "/healthz keeps answering, and the process is alive afterwards. Latencies are end to end on a "
        "machine whose load average is in the header: when it is far above the CPU count, every process "
        "(the service's event loop and the load generator included) waits for CPU, which inflates the "
        "admitted requests' p99 and slows the rate at which refusals are produced. Capacity comes from "
        "more replicas (HPA) or processes, not from a larger in-flight cap.",
        "",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--url", help="target an already running service instead of starting one")
    ap.add_argument("--scenarios", default="steady,overload,ratelimit")
    ap.add_argument("--quick", action="store_true", help="10 s per scenario")
    ap.add_argument(
        "--data-dir", type=Path, default=Path(os.environ.get("CACE_TEST_DATA_DIR", ROOT / "var" / "test"))
    )
    ap.add_argument("--pool", default="train_inclusive", help="CEBaB split for the pool (CACE_DEFAULT_POOL)")
    ap.add_argument("--out", type=Path, default=RESULTS / "load.md")
    args = ap.parse_args(argv)
    quick = args.quick
    scenarios = {
        "steady": Scenario(
            "steady",
            4,
            10 if quick else 20,
            {"CACE_MAX_INFLIGHT": "16"},
            note="4 clients, in-flight cap 16: within capacity",
        ),
        "overload": Scenario(
            "overload",
            50,
            10 if quick else 60,
            {"CACE_MAX_INFLIGHT": "4"},
            note="50 clients against an in-flight cap of 4 (2 cores): the excess must be shed",
        ),
        "ratelimit": Scenario(
            "ratelimit",
            50,
            10 if quick else 20,
            {"CACE_MAX_INFLIGHT": "64"},
            key_rate=20.0,
            note="50 clients sharing one API key limited to 20 req/s",
        ),
    }
    chosen = [scenarios[s.strip()] for s in args.scenarios.split(",") if s.strip()]
    results: list[Result] = []
    load_before = os.getloadavg()
    tmp = Path(tempfile.mkdtemp(prefix="cace-load-"))
    for sc in chosen:
        headers: dict[str, str] = {}
        if args.url:
            base_cm = contextlib.nullcontext(args.url.rstrip("/"))
        else:
            env = {
                "CACE_DEFAULT_POOL": args.pool,
                "CACE_DATABASE_URL": f"sqlite:///{tmp / (sc.name + '.sqlite')}",
                "CACE_RATE_LIMIT_PER_S": "0",
                **sc.env,
            }
            base_cm = service(env, args.data_dir, free_port(), tmp / f"{sc.name}.log")
        with base_cm as base:
            if sc.key_rate:
                r = httpx.post(
                    base + "/v1/keys",
                    json={"name": f"load-{sc.name}", "scopes": ["explain"], "rate_limit_per_s": sc.key_rate},
                    timeout=30,
                )
                r.raise_for_status()
                headers = {"Authorization": f"Bearer {r.json()['key']}"}
            warm = httpx.post(base + "/v1/explanations", json=body(0), headers=headers, timeout=60)
            if warm.status_code != 200:
                raise SystemExit(f"warm-up request failed: {warm.status_code} {warm.text[:500]}")
            print(f"running {sc.name}: {sc.clients} clients for {sc.seconds:g} s", file=sys.stderr)
            res = asyncio.run(run_scenario(base, sc, headers))
            results.append(res)
            print(
                json.dumps(
                    {
                        "scenario": sc.name,
                        "statuses": dict(res.statuses),
                        "errors": dict(res.errors),
                        "p50_ok": pct(res.latencies_ok, 50),
                        "p99_ok": pct(res.latencies_ok, 99),
                    }
                ),
                file=sys.stderr,
            )
    load = os.getloadavg()
    meta = {
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs shared with other work (load average "
        f"{load_before[0]:.1f} before, {load[0]:.1f} after; the load generator runs on the same "
        f"CPUs), Python {platform.python_version()}",
        "service": f"one uvicorn process, reference tfidf-lr classifier in-process, CEBaB {args.pool} pool"
        if not args.url
        else args.url,
        "workload": "approx, K=5, intervention service Negative->Positive, labels given, "
        f"{len(TEXTS)} rotating texts, no client retries, client timeout 30 s",
    }
    md = report(results, meta)
    print(md)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(md)
    failed = [r.scenario.name for r in results if sum(r.errors.values()) or not r.alive_after]
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
