"""The one retry path (`explainers.outbound`): bounded, deadline-aware, never retrying a denial or a 4xx.

The endpoint is a real HTTP server on 127.0.0.1 that answers 503 with a long Retry-After (or
400) and counts the requests it got.
"""

from __future__ import annotations

import http.server
import threading
import time
from collections.abc import Iterator

import httpx
import pytest

from explainers import outbound
from explainers.errors import OutboundDenied, UpstreamRejected, UpstreamTimeout, UpstreamUnavailable
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
