"""The one retry path (`explainers.outbound`): bounded, deadline-aware, never retrying a denial or a 4xx.

The endpoint is a real HTTP server on 127.0.0.1 that answers 503 with a long Retry-After (or
400) and counts the requests it got.
"""

from __future__ import annotations

import http.server
import threading
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from explainers import outbound
from explainers.errors import (
    OutboundDenied,
    UpstreamMalformed,
    UpstreamRejected,
    UpstreamTimeout,
    UpstreamUnavailable,
)
from explainers.net import OutboundPolicy, PolicyTransport


@pytest.fixture(scope="module")
def server() -> Iterator[tuple[str, list[str]]]:
    hits: list[str] = []

    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args: object) -> None:
            pass

        def do_POST(self) -> None:  # noqa: N802
            self.rfile.read(int(self.headers.get("content-length") or 0))
            hits.append(self.path)
            status = 400 if self.path == "/bad" else 503
            self.send_response(status)
            self.send_header("retry-after", "30")
            self.send_header("content-length", "2")
            self.end_headers()
            self.wfile.write(b"{}")

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}", hits
    httpd.shutdown()


@pytest.mark.parametrize("retries", [-1, outbound.MAX_RETRIES + 1, True])
def test_retries_are_bounded(retries: int) -> None:
    with pytest.raises(ValueError, match="retries"):
        outbound.RetryPolicy(retries=retries)


def test_a_denial_is_raised_at_once_and_never_retried(server: tuple[str, list[str]]) -> None:
    url, hits = server
    before = len(hits)
    client = httpx.Client(transport=PolicyTransport(OutboundPolicy()))  # loopback denied
    with pytest.raises(OutboundDenied):
        outbound.send(client, "POST", url + "/x", policy=outbound.RetryPolicy(retries=5), name="t")
    assert len(hits) == before
    assert not isinstance(OutboundDenied("x"), httpx.TransportError)


def test_a_4xx_is_not_retried(server: tuple[str, list[str]]) -> None:
    url, hits = server
    before = len(hits)
    with httpx.Client() as c, pytest.raises(UpstreamRejected):
        outbound.send(c, "POST", url + "/bad", policy=outbound.RetryPolicy(retries=5), name="t")
    assert len(hits) == before + 1


def test_retry_after_is_capped_and_the_deadline_ends_the_call(server: tuple[str, list[str]]) -> None:
    url, hits = server
    before = len(hits)
    started = time.monotonic()
    policy = outbound.RetryPolicy(retries=5, retry_after_max_s=0.2)
    with httpx.Client() as c, pytest.raises(UpstreamUnavailable, match="6 attempts"):
        outbound.send(c, "POST", url + "/busy", policy=policy, name="t")
    assert len(hits) == before + 6 and time.monotonic() - started < 5  # 30 s Retry-After capped at 0.2 s
    # Under a request deadline of 1 s, an uncapped 30 s Retry-After means: no retry, give up now.
    started = time.monotonic()
    with (
        httpx.Client() as c,
        outbound.deadline(1.0),
        pytest.raises(UpstreamUnavailable, match="no time left"),
    ):
        outbound.send(c, "POST", url + "/busy", policy=outbound.RetryPolicy(retries=5), name="t")
    assert time.monotonic() - started < 1.0


def test_an_expired_deadline_sends_nothing(server: tuple[str, list[str]]) -> None:
    url, hits = server
    before = len(hits)
    with httpx.Client() as c, outbound.deadline(0.001), pytest.raises(UpstreamTimeout):
        time.sleep(0.01)
        outbound.send(c, "POST", url + "/busy", policy=outbound.RetryPolicy(), name="t")
    assert len(hits) == before


# ---- the wire (issue #20): wall clock per attempt, byte cap, finite JSON, slot wait ----------
def _raw_server(port: int, reply: bytes, drip_s: float = 0.0) -> tuple[Any, list[float]]:
    """A raw socket server on `port` that sends `reply` (byte by byte every `drip_s` if set); records how
    long each connection stayed open."""
    from tests.test_chaos_upstreams import RawUpstream

    def handle(conn: Any, _body: bytes, _up: Any) -> None:
        if drip_s:
            for b in reply:
                conn.sendall(bytes([b]))
                time.sleep(drip_s)
        else:
            conn.sendall(reply)

    up = RawUpstream(port, handle)
    return up, [s[1] - s[0] for s in up.spans]


def _send(url: str, read_s: float = 30.0, **policy: Any) -> httpx.Response:
    with httpx.Client(
        timeout=httpx.Timeout(read_s, connect=1.0), transport=outbound.GuardedTransport(**policy)
    ) as c:
        return outbound.send(c, "POST", url, json={}, policy=outbound.RetryPolicy(retries=0), name="t")


@pytest.mark.parametrize(
    "reply",
    [
        b"HTTP/1.1 200 OK\r\nContent-Length: 100000\r\n\r\n" + b" " * 100000,  # a dripping body
        b"HTTP/1.1 200 OK\r\nX-Pad: " + b"a" * 100000,  # dripping headers
    ],
    ids=["body", "headers"],
)
def test_a_dripping_upstream_is_cut_off_by_the_attempts_wall_clock(reply: bytes) -> None:
    up, _ = _raw_server(9350, reply, drip_s=0.05)
    try:
        started = time.monotonic()
        with pytest.raises(UpstreamTimeout, match="wall clock"):
            _send(up.url, read_s=1.0)  # each read returns within 0.05 s: a per-read timeout never fires
        assert time.monotonic() - started < 2.5  # connect 1 s + read 1 s, not 5,000 s of drip
        time.sleep(0.3)
        assert up.spans and max(b - a for a, b in up.spans) < 2.5  # and the socket was let go
    finally:
        up.close()


def test_a_request_deadline_cuts_a_drip_too() -> None:
    up, _ = _raw_server(9351, b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n" + b" " * 1000, drip_s=0.05)
    try:
        started = time.monotonic()
        with outbound.deadline(0.5), pytest.raises(UpstreamTimeout):
            _send(up.url, read_s=30.0)
        assert time.monotonic() - started < 1.5
    finally:
        up.close()


@pytest.mark.parametrize(
    ("reply", "match"),
    [
        (b"HTTP/1.1 200 OK\r\nContent-Length: 99999999\r\n\r\n[", "declares 99999999 bytes"),
        (
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
            + b"4000\r\n"
            + b"1" * 0x4000
            + b"\r\n" * 1,
            "exceeds 10000 bytes",
        ),
        (b"HTTP/1.1 200 OK\r\nContent-Encoding: gzip\r\nContent-Length: 2\r\n\r\n[]", "'gzip'-encoded"),
    ],
    ids=["declared", "streamed", "compressed"],
)
def test_responses_past_the_byte_cap_or_compressed_are_malformed(reply: bytes, match: str) -> None:
    up, _ = _raw_server(9352, reply)
    try:
        with pytest.raises(UpstreamMalformed, match=match):
            _send(up.url, max_response_bytes=10000)
    finally:
        up.close()


@pytest.mark.parametrize(
    "raw", ['{"a": NaN}', '{"a": Infinity}', '{"a": -Infinity}', '{"a": 1e999}', '{"a": 1' + "0" * 5000 + "}"]
)
def test_parse_json_refuses_non_finite_numbers(raw: str) -> None:
    with pytest.raises(ValueError):
        outbound.parse_json(raw)
    assert outbound.parse_json('{"a": 1e308, "b": -2.5}') == {"a": 1e308, "b": -2.5}


def test_waiting_for_an_endpoint_slot_is_bounded() -> None:
    sem = threading.BoundedSemaphore(1)
    sem.acquire()
    started = time.monotonic()
    with (
        pytest.raises(UpstreamTimeout, match="no free connection slot"),
        outbound.slot(sem, wait_s=0.3, name="t"),
    ):
        pass
    assert 0.25 < time.monotonic() - started < 1.0
    with outbound.deadline(0.1), pytest.raises(UpstreamTimeout):  # never past the request's deadline
        with outbound.slot(sem, wait_s=30, name="t"):
            pass
    sem.release()
    with outbound.slot(sem, wait_s=0, name="t"):
        assert not sem.acquire(blocking=False)
    assert sem.acquire(blocking=False)
