"""A slow-loris upstream against a live service: health and normal explanations with and without it.

Starts `cace serve` (uvicorn subprocess, minimal embedded defaults) and two real upstreams on
127.0.0.1: a healthy classifier endpoint (hf protocol, answers at once) and a dripping one
(headers at once with a 1 MB Content-Length, then one byte every 0.2 s). In one run:

1. baseline: `/healthz` and `/readyz` probed every 50 ms, normal explanations (inline spec to
   the healthy endpoint, method zero) back to back, for `--phase-s` seconds;
2. attack: the same, while `--attackers` clients (100) each send explanations against the
   dripping endpoint in a closed loop (a new one as soon as the last is answered);
3. recovery: seconds from the attack's end until `/readyz` is 200 and a normal explanation succeeds.

Writes benchmarks/results/drip_attack.md (and prints it).

    .venv/bin/python benchmarks/drip_attack.py [--attackers 100] [--phase-s 20] [--timeout-s 5]
"""

from __future__ import annotations

import argparse
import os
import platform
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import httpx
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.service_server import service, store_env  # noqa: E402
from tests.test_chaos_upstreams import IV, LABELS, MINIMAL, RawUpstream, drip, hf_scores, respond  # noqa: E402

OUT = ROOT / "benchmarks" / "results" / "drip_attack.md"


def healthy(conn: socket.socket, body: bytes, _up: RawUpstream) -> None:
    import json

    texts = json.loads(body)["inputs"]
    respond(conn, 200, hf_scores(texts if isinstance(texts, list) else [texts]))


def pct(xs: list[float], q: float) -> float:
    return float(np.percentile(xs, q)) if xs else float("nan")


def phase(base_url: str, seconds: float, normal_spec: dict[str, Any], n_normal: list[int]) -> dict[str, Any]:
    """Probe health and run normal explanations for `seconds`; latencies in ms."""
    stop = threading.Event()
    health: dict[str, list[float]] = {"/healthz": [], "/readyz": []}
    health_status: Counter[str] = Counter()
    normal_ms: list[float] = []
    normal_status: Counter[int] = Counter()

    def probe() -> None:
        with httpx.Client(base_url=base_url, timeout=30) as c:
            while not stop.is_set():
                for path in health:
                    t = time.perf_counter()
                    try:
                        status = c.get(path).status_code
                    except httpx.HTTPError:
                        status = 0
                    health[path].append((time.perf_counter() - t) * 1000)
                    health_status[f"{path} {status}"] += 1
                time.sleep(0.05)

    def normal() -> None:
        i = 0
        while not stop.is_set():
            t = time.perf_counter()
            text = f"The food was fine but the waiter ignored us ({n_normal[0]}-{i})."
            try:
                status = post_explanation_to(base_url, normal_spec, text).status_code
            except httpx.HTTPError:
                status = 0
            normal_ms.append((time.perf_counter() - t) * 1000)
            normal_status[status] += 1
            i += 1
        n_normal[0] += 1

    threads = [threading.Thread(target=probe), threading.Thread(target=normal)]
    for t in threads:
        t.start()
    time.sleep(seconds)
    stop.set()
    for t in threads:
        t.join()
    return {
        "healthz_p50": pct(health["/healthz"], 50),
        "healthz_p99": pct(health["/healthz"], 99),
        "healthz_max": max(health["/healthz"], default=float("nan")),
        "readyz_p99": pct(health["/readyz"], 99),
        "readyz_max": max(health["/readyz"], default=float("nan")),
        "health_status": dict(health_status),
        "normal_p50": pct(normal_ms, 50),
        "normal_p99": pct(normal_ms, 99),
        "normal_n": len(normal_ms),
        "normal_status": dict(normal_status),
    }


def post_explanation_to(
    base_url: str, spec: dict[str, Any], text: str, timeout: float = 60
) -> httpx.Response:
    body = {"text": text, "intervention": IV, "classifier": spec, "method": "zero", "top_k": 2}
    return httpx.post(base_url + "/v1/explanations", json=body, timeout=timeout)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--attackers", type=int, default=100)
    ap.add_argument("--phase-s", type=float, default=20.0)
    ap.add_argument("--timeout-s", type=float, default=5.0, help="CACE_REQUEST_TIMEOUT_S of the service")
    ap.add_argument("--port", type=int, default=9340)
    args = ap.parse_args()

    good = RawUpstream(args.port + 1, healthy)
    slow = RawUpstream(args.port + 2, drip)
    normal_spec = {"protocol": "hf", "url": good.url + "/predict", "labels": LABELS}
    drip_spec = {"protocol": "hf", "url": slow.url + "/predict", "labels": LABELS, "timeout_s": 30}
    tmp = Path(tempfile.mkdtemp(prefix="drip-"))
    env = {
        **MINIMAL,
        **store_env("sqlite", tmp),
        "CACE_REQUEST_TIMEOUT_S": str(args.timeout_s),
        "CACE_MAX_INFLIGHT": "256",  # admit the whole attack: the replica's threads are under test
        "CACE_LOG_FORMAT": "text",
    }
    n_normal = [0]
    with service(env, port=args.port) as srv:
        deadline = time.monotonic() + 180
        while post_explanation_to(srv.base_url, normal_spec, "warm up").status_code != 200:
            assert time.monotonic() < deadline, "the service never explained"
            time.sleep(0.5)
        base = phase(srv.base_url, args.phase_s, normal_spec, n_normal)

        stop = threading.Event()
        attack_status: Counter[int] = Counter()
        attack_ms: list[float] = []
        lock = threading.Lock()

        def attacker(k: int) -> None:
            i = 0
            while not stop.is_set():
                t = time.perf_counter()
                try:
                    status = post_explanation_to(
                        srv.base_url, drip_spec, f"attack {k}-{i}", timeout=args.timeout_s + 60
                    ).status_code
                except httpx.HTTPError:
                    status = 0
                with lock:
                    attack_status[status] += 1
                    attack_ms.append((time.perf_counter() - t) * 1000)
                i += 1

        attackers = [threading.Thread(target=attacker, args=(k,)) for k in range(args.attackers)]
        for t in attackers:
            t.start()
        time.sleep(1.0)  # let the attack fill the endpoint's slots and the queue behind them
        under = phase(srv.base_url, args.phase_s, normal_spec, n_normal)
        stop.set()
        ended = time.monotonic()
        for t in attackers:
            t.join()
        drained_s = time.monotonic() - ended
        rec_start = time.monotonic()
        while True:
            ready = httpx.get(srv.base_url + "/readyz", timeout=30).status_code == 200
            ok = post_explanation_to(srv.base_url, normal_spec, "after the attack").status_code == 200
            if ready and ok:
                break
            time.sleep(0.1)
        recovery_s = time.monotonic() - rec_start
        held = [closed - opened for opened, closed in slow.spans]
        rss = int(Path(f"/proc/{srv.proc.pid}/status").read_text().split("VmRSS:")[1].split()[0]) // 1024
    good.close()
    slow.close()

    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=ROOT)
    lines = [
        "# Drip attack: health and normal explanations with and without a slow-loris upstream",
        "",
        f"`benchmarks/drip_attack.py --attackers {args.attackers} --phase-s {args.phase_s:g} "
        f"--timeout-s {args.timeout_s:g}`; commit {commit.stdout.strip() or '?'}; "
        f"{platform.machine()}, {os.cpu_count()} CPUs (shared with other work).",
        "",
        f"Service: minimal defaults, `CACE_REQUEST_TIMEOUT_S={args.timeout_s:g}`, `CACE_MAX_INFLIGHT=256`, "
        "other settings at their defaults (`CACE_UPSTREAM_SLOT_WAIT_S=5`). Normal explanations: method "
        "zero, an inline hf classifier at a healthy upstream on 127.0.0.1, back to back. Attack: "
        f"{args.attackers} clients in a closed loop against an upstream that sends a 1 MB Content-Length "
        "then one byte every 0.2 s (spec `timeout_s` 30, so no per-read timeout ever fires). "
        "Health probed every 50 ms."
        + (
            f" Default domain from the environment: `{os.environ['CACE_DEFAULT_DOMAIN']}` (method zero does not use it)."
            if os.environ.get("CACE_DEFAULT_DOMAIN")
            else ""
        ),
        "",
        "| phase | /healthz p50 ms | /healthz p99 ms | /healthz max ms | /readyz p99 ms | /readyz max ms "
        "| health answers | normal p50 ms | normal p99 ms | normal n | normal answers |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name, r in (("no attack", base), (f"{args.attackers} dripping requests", under)):
        lines.append(
            f"| {name} | {r['healthz_p50']:.1f} | {r['healthz_p99']:.1f} | {r['healthz_max']:.1f} "
            f"| {r['readyz_p99']:.1f} | {r['readyz_max']:.1f} | {r['health_status']} "
            f"| {r['normal_p50']:.1f} | {r['normal_p99']:.1f} | {r['normal_n']} | {r['normal_status']} |"
        )
    lines += [
        "",
        f"Attack requests answered: {sum(attack_status.values())} ({dict(attack_status)}); their latency "
        f"p50 {pct(attack_ms, 50):.0f} ms, max {max(attack_ms, default=0):.0f} ms. The dripping upstream "
        f"saw {len(held)} connections, each held by the service at most {max(held, default=0):.2f} s "
        f"(p50 {pct(held, 50):.2f} s).",
        f"After the attack: its clients drained in {drained_s:.1f} s; /readyz 200 and a normal "
        f"explanation succeeded {recovery_s:.2f} s later. Service RSS at the end: {rss} MB.",
        "",
    ]
    text = "\n".join(lines)
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(text)
    print(text)


if __name__ == "__main__":
    main()
