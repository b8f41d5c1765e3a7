"""Chaos: misbehaving upstreams against a live service (issue #20, "a slow upstream takes a replica out").

Every upstream here is a real server on 127.0.0.1 (`RawUpstream`: a raw-socket server, because
the faults are below what an HTTP framework lets a handler do: a body dripped one byte at a
time after a long Content-Length, 100 MB without a Content-Length, a connection reset, a hang).
The service is a real uvicorn process (`tests.service_server.service`) with the minimal
embedded defaults; its deadlines are shortened through settings so the module runs in about a
minute. Each test asserts: nothing lost (every request and every job row gets exactly one
answer), nothing twice, health honest while it happens, and recovery within a bound.
"""

from __future__ import annotations

import contextlib
import json
import random
import socket
import struct
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.servers import Server
from tests.service_server import service, store_env

pytestmark = pytest.mark.chaos

MINIMAL = {
    "CACE_DEFAULT_POOL": "",
    "CACE_DEFAULT_TAGGERS": "false",
    "CACE_DEFAULT_SPACE": "false",
}
LABELS = ["1", "2", "3", "4", "5"]
IV = {"concept": "service", "target": "Positive", "source": "Negative"}
# Ports of this module's upstreams (the range given to this work: 9300-9399).
DRIP_PORT, BIG_PORT, FLAP_PORT, LOGPROB_PORT = 9311, 9312, 9313, 9314

Handler = Callable[[socket.socket, bytes, "RawUpstream"], None]


class RawUpstream:
    """A raw TCP server speaking just enough HTTP/1.1: reads one request, hands the socket to `handler`.

    It records each connection's lifetime (`spans`: opened, closed-by-peer-or-done), so a test can
    tell how long the service kept reading from it.
    """

    def __init__(self, port: int, handler: Handler) -> None:
        self.handler = handler
        self.spans: list[tuple[float, float]] = []
        self.requests: list[bytes] = []
        self.lock = threading.Lock()
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", port))
        self.sock.listen(256)
        self.port = port
        self.url = f"http://127.0.0.1:{port}"
        self._stop = False
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while not self._stop:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        opened = time.monotonic()
        try:
            body = read_request(conn)
            with self.lock:
                self.requests.append(body)
            self.handler(conn, body, self)
        except OSError:
            pass  # the service closed the connection: the point of most of these tests
        finally:
            with self.lock:
                self.spans.append((opened, time.monotonic()))
            with contextlib.suppress(OSError):
                conn.close()

    def close(self) -> None:
        self._stop = True
        with contextlib.suppress(OSError):
            self.sock.shutdown(socket.SHUT_RDWR)  # wakes the accept loop, so the port is free at once
        with contextlib.suppress(OSError):
            self.sock.close()


def read_request(conn: socket.socket) -> bytes:
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = conn.recv(65536)
        if not chunk:
            raise OSError("peer closed before a request")
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value.strip())
    while len(body) < length:
        chunk = conn.recv(65536)
        if not chunk:
            break
        body += chunk
    return body


def respond(conn: socket.socket, status: int, body: bytes) -> None:
    reason = {200: "OK", 500: "Internal Server Error"}.get(status, "X")
    conn.sendall(
        f"HTTP/1.1 {status} {reason}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n".encode()
        + body
    )


def reset(conn: socket.socket) -> None:
    """Close with RST (SO_LINGER 0): the connection reset a crashing model server gives."""
    conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    conn.close()


def hf_scores(texts: list[str]) -> bytes:
    return json.dumps([[{"label": lab, "score": 0.2} for lab in LABELS] for _ in texts]).encode()


def explain(
    srv: Server, timeout: float = 30, client: httpx.Client | None = None, **fields: Any
) -> httpx.Response:
    body = {
        "text": "The food was fine but the waiter ignored us.",
        "intervention": IV,
        "classifier": "tfidf-lr",
        "method": "zero",
        "top_k": 2,
        **fields,
    }
    if client is not None:
        return client.post(srv.base_url + "/v1/explanations", json=body, timeout=timeout)
    return httpx.post(srv.base_url + "/v1/explanations", json=body, timeout=timeout)


def warm(srv: Server) -> None:
    """First explanations build the method registry; get past that before timing anything."""
    deadline = time.monotonic() + 120
    while explain(srv).status_code != 200:
        assert time.monotonic() < deadline, "the service never explained with tfidf-lr"
        time.sleep(0.5)


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS")


def problem(r: httpx.Response, *statuses: int) -> dict[str, Any]:
    assert r.status_code in statuses, (r.status_code, r.text[:500])
    assert r.headers["content-type"].startswith("application/problem+json"), r.headers
    return r.json()


# ---- a slow-loris upstream ----------------------------------------------------------------
def drip(conn: socket.socket, _body: bytes, _up: RawUpstream) -> None:
    """Headers at once with a long Content-Length, then one byte every 0.2 s: every read is quick."""
    conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 1000000\r\n\r\n[")
    for _ in range(1_000_000):
        time.sleep(0.2)
        conn.sendall(b" ")


@pytest.fixture(scope="module")
def drip_upstream() -> Iterator[RawUpstream]:
    up = RawUpstream(DRIP_PORT, drip)
    yield up
    up.close()


def test_slow_loris_upstream_cannot_take_the_replica_out_of_service(
    tmp_path: Path, drip_upstream: RawUpstream
) -> None:
    """100 concurrent explanations against a dripping classifier: each gets one problem answer by its
    deadline, the drip is read no longer than that, /healthz and /readyz answer 200 within 1 s
    throughout, and explanations with another classifier keep working."""
    timeout_s = 3.0
    env = {
        **MINIMAL,
        **store_env("sqlite", tmp_path),
        "CACE_REQUEST_TIMEOUT_S": str(timeout_s),
        "CACE_MAX_INFLIGHT": "256",  # admit the whole attack: threads, not shedding, are under test
        "CACE_UPSTREAM_SLOT_WAIT_S": "1",
    }
    spec = {"protocol": "hf", "url": drip_upstream.url + "/predict", "labels": LABELS, "timeout_s": 30}
    with service(env, port=9320) as srv:
        warm(srv)
        stop = threading.Event()
        probes: list[tuple[str, int, float]] = []
        unrelated: list[tuple[int, float]] = []

        def probe() -> None:
            with httpx.Client(base_url=srv.base_url, timeout=5) as c:
                while not stop.is_set():
                    for path in ("/healthz", "/readyz"):
                        t = time.monotonic()
                        try:
                            status = c.get(path).status_code
                        except httpx.TimeoutException:
                            status = 0
                        probes.append((path, status, time.monotonic() - t))
                    time.sleep(0.2)

        def normal() -> None:
            with httpx.Client() as c:
                while not stop.is_set():
                    t = time.monotonic()
                    unrelated.append((explain(srv, timeout=10, client=c).status_code, time.monotonic() - t))
                    time.sleep(0.2)

        # One pooled client for the attack: 100 clients each building a TLS context would measure the
        # test process, not the service.
        attack_client = httpx.Client(limits=httpx.Limits(max_connections=200, max_keepalive_connections=200))

        def attack(_: int) -> tuple[int, float, str]:
            t = time.monotonic()
            r = explain(srv, timeout=timeout_s + 20, client=attack_client, classifier=spec)
            return r.status_code, time.monotonic() - t, r.headers.get("content-type", "")

        watchers = [threading.Thread(target=probe), threading.Thread(target=normal)]
        for w in watchers:
            w.start()
        started = time.monotonic()
        with ThreadPoolExecutor(100) as pool:
            answers = list(pool.map(attack, range(100)))
        attack_client.close()
        attack_s = time.monotonic() - started
        time.sleep(1.0)
        stop.set()
        for w in watchers:
            w.join()

        # Nothing lost: every dripping request got exactly one problem answer, by its deadline.
        assert len(answers) == 100
        assert {s for s, _, _ in answers} <= {502, 504}, answers
        assert all(ct.startswith("application/problem+json") for _, _, ct in answers)
        # By the deadline plus what 100 concurrent requests cost on a shared 2-core machine (the drip
        # itself would last 55 hours).
        times = sorted(t for _, t, _ in answers)
        assert times[-1] < timeout_s + 8, times
        # The service stopped reading each drip by the deadline (it held the socket no longer).
        deadline_done = time.monotonic() + 5
        while len(drip_upstream.spans) < len(drip_upstream.requests) and time.monotonic() < deadline_done:
            time.sleep(0.2)
        held = [closed - opened for opened, closed in drip_upstream.spans]
        assert held and max(held) < timeout_s + 1.5, held
        # Health honest and prompt throughout; unrelated explanations kept working.
        assert probes and all(status == 200 for _, status, _ in probes), [p for p in probes if p[1] != 200]
        # Prompt: the target is 1 s; the bound leaves room for a loaded CI machine (the p99 on an idle
        # one is in benchmarks/results/drip_attack.md). Before the fix a probe waited for the drip.
        latencies = sorted(p[2] for p in probes)
        assert latencies[len(latencies) // 2] < 0.5 and latencies[-1] < 3.0, latencies[-10:]
        assert unrelated and all(status == 200 for status, _ in unrelated), unrelated
        assert sorted(t for _, t in unrelated)[len(unrelated) // 2] < 2.0, unrelated
        assert attack_s < timeout_s + 10, attack_s
        # Recovery: ready at once, and the replica explains as before.
        assert httpx.get(srv.base_url + "/readyz", timeout=1).status_code == 200
        assert explain(srv).status_code == 200


# ---- a 100 MB upstream body ---------------------------------------------------------------
HUNDRED_MB = 100 * 1024 * 1024


def big(conn: socket.socket, _body: bytes, up: RawUpstream) -> None:
    """100 MB of a valid-looking JSON list, chunked (no Content-Length to refuse up front)."""
    conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n")
    chunk = b"[" + b"0," * (512 * 1024 - 1) + b"0]"
    sent = 0
    while sent < HUNDRED_MB:
        conn.sendall(b"%x\r\n%s\r\n" % (len(chunk), chunk))
        sent += len(chunk)
    conn.sendall(b"0\r\n\r\n")


def big_declared(conn: socket.socket, _body: bytes, _up: RawUpstream) -> None:
    conn.sendall(
        f"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {HUNDRED_MB}\r\n\r\n".encode()
    )
    conn.sendall(b"[" + b"0" * 65536)
    time.sleep(5)


LIMIT = 1024 * 1024


@pytest.fixture(scope="module")
def svc(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """One service for the tests that need no special deadlines: a 1 MiB cap on upstream bodies."""
    env = {
        **MINIMAL,
        **store_env("sqlite", tmp_path_factory.mktemp("chaos")),
        "CACE_UPSTREAM_MAX_BYTES": str(LIMIT),
    }
    with service(env, port=9321) as srv:
        warm(srv)
        yield srv


def test_a_100_mb_upstream_body_is_a_502_at_the_cap_with_bounded_memory(svc: Server) -> None:
    chunked = RawUpstream(BIG_PORT, big)
    declared = RawUpstream(BIG_PORT + 10, big_declared)
    try:
        before = rss_mb(svc.proc.pid)
        for up in (chunked, declared):
            spec = {"protocol": "hf", "url": up.url + "/predict", "labels": LABELS, "retries": 0}
            with ThreadPoolExecutor(4) as pool:
                started = time.monotonic()
                answers = list(pool.map(lambda s: explain(svc, classifier=s), [spec] * 4))
                took = time.monotonic() - started
            for r in answers:
                body = problem(r, 502)
                assert "malformed" in body["type"], body
                assert str(LIMIT) in body["detail"], body
            assert took < 10, took
        grew = rss_mb(svc.proc.pid) - before
        # Eight 100 MB answers read whole would cost GBs; capped, they cost next to nothing.
        assert grew < 64, f"RSS grew by {grew:.0f} MB"
        assert httpx.get(svc.base_url + "/readyz", timeout=1).status_code == 200
        assert explain(svc).status_code == 200
    finally:
        chunked.close()
        declared.close()


# ---- an LLM classifier answering numbers that are not log-probabilities -------------------
class LogprobAnswer:
    """An OpenAI-compatible chat endpoint whose answer-position logprob is `value`, verbatim."""

    value = "-0.1"

    def __call__(self, conn: socket.socket, _body: bytes, _up: RawUpstream) -> None:
        top = f'[{{"token": " 1", "logprob": {self.value}}}, {{"token": " 2", "logprob": -2.0}}]'
        body = (
            '{"choices": [{"message": {"content": "1"}, "logprobs": {"content": [{"token": " 1", '
            f'"logprob": {self.value}, "top_logprobs": {top}}}]}}}}]}}'
        )
        respond(conn, 200, body.encode())


@pytest.fixture(scope="module")
def logprob_upstream() -> Iterator[tuple[RawUpstream, LogprobAnswer]]:
    answer = LogprobAnswer()
    up = RawUpstream(LOGPROB_PORT, answer)
    yield up, answer
    up.close()


@pytest.mark.parametrize("value", ["1e308", "1e999", "Infinity", "NaN", "-Infinity"])
def test_non_finite_or_impossible_logprobs_are_a_502_not_a_500(
    svc: Server, logprob_upstream: tuple[RawUpstream, LogprobAnswer], value: str
) -> None:
    up, answer = logprob_upstream
    spec = {"protocol": "openai-chat", "url": up.url + "/v1", "model": "m", "labels": ["1", "2"]}
    answer.value = "-0.1"
    assert explain(svc, classifier=spec).status_code == 200  # the same endpoint, sane numbers
    answer.value = value
    # Another text: the service caches scores per text, and this one must reach the upstream.
    body = problem(explain(svc, classifier=spec, text=f"The waiter was rude ({value})."), 502)
    assert "malformed" in body["type"], body
    assert "Traceback" not in svc.log_text()


# ---- a classifier that flaps between 200, 500, resets and hangs, in an effects job ---------
class Flapper:
    """Per request, by a seeded draw: 500, a reset, a hang past the client's timeout, or scores.

    A batch holding a text with POISON always gets a 500 (an input the model server chokes on):
    only those texts may fail; the texts batched with them must finish.
    """

    def __init__(self, seed: int = 7) -> None:
        self.rng = random.Random(seed)
        self.lock = threading.Lock()
        self.flapping = True
        self.scored: list[str] = []

    def __call__(self, conn: socket.socket, body: bytes, _up: RawUpstream) -> None:
        texts = json.loads(body)["inputs"]
        texts = texts if isinstance(texts, list) else [texts]
        with self.lock:
            draw = self.rng.random() if self.flapping else 1.0
        if any("POISON" in t for t in texts):
            respond(conn, 500, b'{"error": "cannot tokenize"}')
        elif draw < 0.15:
            respond(conn, 500, b'{"error": "overloaded"}')
        elif draw < 0.30:
            reset(conn)
        elif draw < 0.40:
            time.sleep(4)  # past the client's 1 s: the service gives up first
        else:
            with self.lock:
                self.scored += texts
            respond(conn, 200, hf_scores(texts))


@pytest.mark.parametrize("backend", ["sqlite"])
def test_flapping_classifier_fails_only_the_texts_it_fails_on(tmp_path: Path, backend: str) -> None:
    flapper = Flapper()
    up = RawUpstream(FLAP_PORT, flapper)
    env = {
        **MINIMAL,
        **store_env(backend, tmp_path),
        "CACE_JOB_CLAIM_BATCH": "16",
        "CACE_JOB_ITEM_TIMEOUT_S": "20",
        "CACE_JOB_MAX_ATTEMPTS": "3",
    }
    poison = {5, 21, 40}
    texts = [
        {"id": f"t{i}", "text": f"Review {i}: the waiter was slow{' POISON' if i in poison else ''}."}
        for i in range(48)
    ]
    spec = {
        "protocol": "hf",
        "url": up.url + "/predict",
        "labels": LABELS,
        "timeout_s": 1,
        "connect_timeout_s": 1,
        "retries": 2,
        "backoff_s": 0.05,
    }
    try:
        with service(env, port=9323) as srv:
            request = {
                "texts": texts,
                "intervention": IV,
                "classifier": spec,
                "method": "zero",
                "mode": "job",
            }
            started = time.monotonic()
            r = httpx.post(srv.base_url + "/v1/effects", json=request, timeout=30)
            assert r.status_code == 202, r.text
            job_id = r.json()["id"]
            job: dict[str, Any] = {}
            while time.monotonic() - started < 150:
                job = httpx.get(f"{srv.base_url}/v1/jobs/{job_id}", timeout=10).json()
                if job["status"] in ("succeeded", "failed", "cancelled"):
                    break
                assert httpx.get(srv.base_url + "/healthz", timeout=1).status_code == 200
                time.sleep(0.5)
            took = time.monotonic() - started
            assert job.get("status") == "succeeded", job
            rows = httpx.get(f"{srv.base_url}/v1/jobs/{job_id}/rows?limit=1000", timeout=10).json()["rows"]
            # Nothing lost, nothing twice: one row per text, in order.
            assert [row["id"] for row in rows] == [t["id"] for t in texts]
            failed = {int(row["id"][1:]) for row in rows if row["status"] == "failed"}
            # Only the texts the upstream always refuses failed; their batch mates finished.
            assert failed == poison, (failed, [row for row in rows if row["status"] == "failed"][:3])
            assert all(
                row["status"] in ("done", "unchanged") for row in rows if int(row["id"][1:]) not in poison
            )
            assert took < 120, took
            # Health stayed honest, and once the upstream is healthy again a job finishes at once.
            assert httpx.get(srv.base_url + "/readyz", timeout=1).status_code == 200
            flapper.flapping = False
            started = time.monotonic()
            clean = {
                **request,
                "texts": [t for t in texts if "POISON" not in t["text"]][:16],
                "mode": "inline",
            }
            r = httpx.post(srv.base_url + "/v1/effects", json=clean, timeout=30)
            assert r.status_code == 200, r.text
            assert time.monotonic() - started < 5
    finally:
        up.close()
