"""Limits against the real service: body size 413, field limits 422/413, timeout 504, shedding 503,
and the outbound policy wired into the classifier clients.

A KServe V1 predictor on 127.0.0.1 (a real HTTP server in this process) answers `fast` at
once and `slow` after a delay; the service fronts it through `CACE_KSERVE_PREDICTOR_HOST`,
with loopback allow-listed explicitly (`CACE_OUTBOUND_ALLOW=127.0.0.1/32`).
"""

from __future__ import annotations

import concurrent.futures
import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest

from benchmarks.harness.servers import Server
from tests.test_security import service

SLOW_S = 4.0


class _Predictor(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_POST(self) -> None:  # noqa: N802
        body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", "0"))))
        self.server.hits.append(self.path)  # type: ignore[attr-defined]
        if "/slow:" in self.path:
            time.sleep(SLOW_S)
        out = json.dumps({"predictions": [[0.25, 0.75] for _ in body["instances"]]}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(out)))
        self.end_headers()
        self.wfile.write(out)

    def log_message(self, *args: object) -> None:
        return


@pytest.fixture(scope="module")
def predictor() -> Iterator[ThreadingHTTPServer]:
    srv = ThreadingHTTPServer(("127.0.0.1", 0), _Predictor)
    srv.daemon_threads = True
    srv.hits = []  # type: ignore[attr-defined]
    threading.Thread(target=srv.serve_forever, args=(0.05,), daemon=True).start()
    yield srv
    srv.shutdown()
    srv.server_close()


@pytest.fixture(scope="module")
def svc(
    tmp_path_factory: pytest.TempPathFactory,
    tfidf_lr_dir: Path,
    test_data_dir: Path,
    predictor: ThreadingHTTPServer,
) -> Iterator[Server]:
    tmp = tmp_path_factory.mktemp("limits")
    with service(
        tmp,
        test_data_dir,
        CACE_MAX_BODY_BYTES="20000",
        CACE_MAX_TEXT_CHARS="200",
        CACE_MAX_TOP_K="10",
        CACE_MAX_INLINE_TEXTS="4",
        CACE_REQUEST_TIMEOUT_S="1.5",
        CACE_MAX_INFLIGHT="3",
        CACE_OUTBOUND_ALLOW="127.0.0.1/32",
        CACE_KSERVE_PREDICTOR_HOST=f"127.0.0.1:{predictor.server_address[1]}",
        CACE_KSERVE_LABELS="neg,pos",
    ) as srv:
        yield srv


def _is_problem(r: httpx.Response, status: int) -> dict:
    assert r.status_code == status, r.text
    assert r.headers["content-type"].startswith("application/problem+json")
    body = r.json()
    assert body["status"] == status and body["title"] and body["detail"]
    return body


def test_body_size_limit_from_content_length_and_from_the_stream(svc: Server) -> None:
    big = json.dumps({"text": "x" * 30000, "intervention": {"concept": "food", "target": "Negative"}})
    r = httpx.post(
        svc.base_url + "/v1/explanations", content=big, headers={"Content-Type": "application/json"}
    )
    assert "20000" in _is_problem(r, 413)["detail"]

    def chunks() -> Iterator[bytes]:  # no Content-Length: the limit must hold while reading
        yield b'{"text": "'
        for _ in range(30):
            yield b"y" * 1000
        yield b'"}'

    r = httpx.post(
        svc.base_url + "/v1/explanations", content=chunks(), headers={"Content-Type": "application/json"}
    )
    assert "20000" in _is_problem(r, 413)["detail"]


def test_field_limits_name_the_field(svc: Server) -> None:
    url = svc.base_url
    r = httpx.post(url + "/v1/models/tfidf-lr:predict", json={"instances": ["ok", "z" * 201]})
    assert "body.instances.1" in _is_problem(r, 422)["detail"]
    r = httpx.post(url + "/v1/models/tfidf-lr:predict", json={"instances": ["a"] * 5})
    assert "at most 4" in _is_problem(r, 413)["detail"]
    r = httpx.post(
        url + "/v1/explanations",
        json={"text": "t" * 201, "intervention": {"concept": "food", "target": "Negative"}},
    )
    assert "body.text" in _is_problem(r, 422)["detail"]
    r = httpx.post(
        url + "/v1/explanations",
        json={
            "text": "fine",
            "top_k": 11,
            "method": "approx",
            "intervention": {"concept": "food", "target": "Negative", "source": "Positive"},
        },
    )
    assert "body.top_k" in _is_problem(r, 422)["detail"]


def test_allow_listed_predictor_is_reachable(svc: Server, predictor: ThreadingHTTPServer) -> None:
    r = httpx.post(svc.base_url + "/v1/models/fast:predict", json={"instances": ["good food"]}, timeout=30)
    assert r.status_code == 200, r.text
    assert r.json() == {"predictions": [{"neg": 0.25, "pos": 0.75}]}
    assert any(h.startswith("/v1/models/fast:predict") for h in predictor.hits)


def test_slow_upstream_gives_504_not_a_hang(svc: Server) -> None:
    started = time.monotonic()
    r = httpx.post(svc.base_url + "/v1/models/slow:predict", json={"instances": ["x"]}, timeout=30)
    took = time.monotonic() - started
    assert _is_problem(r, 504)["type"].endswith("/request-timeout")
    assert took < SLOW_S


def test_overload_is_shed_with_503_and_retry_after(svc: Server) -> None:
    def call(_: int) -> httpx.Response:
        return httpx.post(svc.base_url + "/v1/models/slow:predict", json={"instances": ["x"]}, timeout=30)

    with concurrent.futures.ThreadPoolExecutor(8) as ex:
        results = list(ex.map(call, range(8)))
    codes = sorted(r.status_code for r in results)
    assert set(codes) <= {503, 504}, codes
    shed = [r for r in results if r.status_code == 503]
    assert len(shed) >= 8 - 3
    assert shed[0].headers["retry-after"] == "1"
    assert shed[0].json()["type"].endswith("/overloaded")
    # Probes are never shed.
    assert httpx.get(svc.base_url + "/healthz").status_code == 200


def test_denied_classifier_url_is_never_called(svc: Server) -> None:
    spec = {
        "protocol": "kserve-v1",
        "url": "http://169.254.169.254",
        "model": "m",
        "labels": ["neg", "pos"],
        "retries": 0,
    }
    # The shedding test before this one may still hold slow requests in flight: wait them out.
    deadline = time.monotonic() + SLOW_S * 3
    while True:
        r = httpx.post(svc.base_url + "/v1/classifiers", json={"name": "metadata-probe", "spec": spec})
        if r.status_code != 503 or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    if r.status_code == 201:  # registration may refuse it up front; if not, the call must be refused
        started = time.monotonic()
        r = httpx.post(
            svc.base_url + "/v1/models/metadata-probe:predict", json={"instances": ["x"]}, timeout=30
        )
        assert time.monotonic() - started < 1.5  # refused before any connection attempt
        assert r.status_code in (403, 502), r.text
    else:
        assert r.status_code in (403, 422), r.text
    assert "metadata" in r.json()["detail"]
