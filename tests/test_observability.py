"""Metrics, request ids and JSON logs of the real service (uvicorn subprocess, HTTP)."""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterator
from http.server import ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest

from benchmarks.harness.servers import Server

# The KServe V1 predictor fixture is shared with the limit tests (one module-scoped server per module).
from tests.test_limits import predictor  # noqa: F401
from tests.test_security import service


@pytest.fixture(scope="module")
def svc(
    tmp_path_factory: pytest.TempPathFactory,
    tfidf_lr_dir: Path,
    test_data_dir: Path,
    predictor: ThreadingHTTPServer,  # noqa: F811 (the imported fixture)
) -> Iterator[Server]:
    tmp = tmp_path_factory.mktemp("obs")
    with service(
        tmp,
        test_data_dir,
        CACE_OUTBOUND_ALLOW="127.0.0.1/32",
        CACE_KSERVE_PREDICTOR_HOST=f"127.0.0.1:{predictor.server_address[1]}",
        CACE_KSERVE_LABELS="neg,pos",
    ) as srv:
        yield srv


def _metric(text: str, name: str, **labels: str) -> float:
    """The value of one sample in Prometheus text format (labels matched as a subset)."""
    total = None
    for line in text.splitlines():
        m = re.match(r"^([a-zA-Z_:][\w:]*)(\{(.*)\})? (\S+)$", line)
        if not m or m.group(1) != name:
            continue
        got = dict(re.findall(r'(\w+)="((?:[^"\\]|\\.)*)"', m.group(3) or ""))
        if all(got.get(k) == v for k, v in labels.items()):
            total = (total or 0.0) + float(m.group(4))
    if total is None:
        raise KeyError(f"{name}{labels} not in metrics")
    return total


def test_request_ids_in_and_out(svc: Server) -> None:
    r = httpx.get(svc.base_url + "/v1/jobs", headers={"X-Request-ID": "trace-abc.123"})
    assert r.headers["x-request-id"] == "trace-abc.123"
    r = httpx.get(svc.base_url + "/v1/jobs")
    assert re.fullmatch(r"[0-9a-f]{32}", r.headers["x-request-id"])
    r = httpx.get(svc.base_url + "/v1/jobs", headers={"X-Request-ID": "bad id\twith spaces"})
    assert re.fullmatch(r"[0-9a-f]{32}", r.headers["x-request-id"])  # untrusted junk is replaced
    r = httpx.post(svc.base_url + "/v1/explanations", json={"text": ""}, headers={"X-Request-ID": "err-1"})
    assert r.status_code == 422 and r.headers["x-request-id"] == "err-1"  # errors carry it too


def test_metrics_cover_requests_outbound_calls_cache_and_queue(svc: Server) -> None:
    url = svc.base_url
    for _ in range(3):
        assert (
            httpx.post(url + "/v1/models/tfidf-lr:predict", json={"instances": ["nice staff"]}).status_code
            == 200
        )
    assert (
        httpx.post(url + "/v1/models/fast:predict", json={"instances": ["a", "b"]}, timeout=30).status_code
        == 200
    )
    text = httpx.get(url + "/metrics").text
    route = "/v1/models/{name}:predict"
    assert _metric(text, "cace_http_requests_total", method="POST", route=route, status="200") >= 4
    assert _metric(text, "cace_http_request_duration_seconds_count", method="POST", route=route) >= 4
    assert (
        _metric(text, "cace_outbound_request_duration_seconds_count", kind="classifier", target="inline") >= 1
    )
    # Same text three times: one miss, then hits, so the hit ratio is visible.
    assert _metric(text, "cace_classifier_cache_hits_total", classifier="tfidf-lr") >= 2
    assert 0 < _metric(text, "cace_classifier_cache_hit_ratio", classifier="tfidf-lr") < 1
    assert _metric(text, "cace_job_queue_depth") >= 0
    assert _metric(text, "cace_requests_shed_total") == 0


def test_outbound_errors_are_counted(svc: Server) -> None:
    spec = {
        "protocol": "kserve-v1",
        "url": "http://127.0.0.1:9",
        "model": "m",
        "labels": ["a", "b"],
        "retries": 0,
    }
    assert (
        httpx.post(svc.base_url + "/v1/classifiers", json={"name": "closed-port", "spec": spec}).status_code
        == 201
    )
    r = httpx.post(svc.base_url + "/v1/models/closed-port:predict", json={"instances": ["x"]}, timeout=30)
    assert r.status_code == 502, r.text
    text = httpx.get(svc.base_url + "/metrics").text
    assert _metric(text, "cace_outbound_errors_total", kind="classifier", error="ConnectError") >= 1


def test_logs_are_json_lines_with_request_ids(svc: Server) -> None:
    httpx.get(svc.base_url + "/v1/jobs", headers={"X-Request-ID": "log-check-42"})
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        lines = [ln for ln in svc.log_text().splitlines() if ln.startswith("{")]
        access = [json.loads(ln) for ln in lines if "log-check-42" in ln]
        if access:
            break
        time.sleep(0.1)
    assert access, svc.log_text()[-2000:]
    rec = access[-1]
    assert rec["logger"] == "cace.access" and rec["status"] == 200 and rec["route"] == "/v1/jobs"
    assert rec["request_id"] == "log-check-42" and rec["duration_ms"] >= 0
