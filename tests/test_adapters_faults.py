"""HTTP adapter behaviour under real faults, against a real misbehaving server on 127.0.0.1.

The server (benchmarks/harness/model_servers/misbehaving.py) is a real uvicorn process that fails on
purpose; it counts requests per test key, so retries, Retry-After and batching are
checked from the server's side, not just from the client's counters.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator

import httpx
import numpy as np
import pytest

from benchmarks.harness.model_servers.launch import misbehaving_server
from benchmarks.harness.model_servers.misbehaving import LABELS, logits, proba
from benchmarks.harness.servers import Server, free_port
from explainers.classifiers.base import ClassifierUnavailable, MalformedResponse
from explainers.classifiers.hf import HFClassifier
from explainers.classifiers.http import EndpointRejected, HttpOptions
from explainers.classifiers.spec import build_classifier

TEXTS = ["the pasta was amazing", "slow service", "noisy and cramped", "a fine meal", "bad"]
FAST = dict(backoff_s=0.01, backoff_max_s=0.05)


@pytest.fixture(scope="module")
def server() -> Iterator[Server]:
    with misbehaving_server() as s:
        yield s


def route(server: Server, mode: str, **query: object) -> tuple[str, str]:
    key = uuid.uuid4().hex[:8]
    qs = "&".join(f"{k}={v}" for k, v in query.items())
    return f"{server.base_url}/{mode}/{key}" + (f"?{qs}" if qs else ""), key


def calls(server: Server, key: str) -> dict:
    return httpx.get(f"{server.base_url}/calls/{key}").json()


def expected(texts: list[str]) -> np.ndarray:
    return np.array([proba(t) for t in texts])


def test_healthy_endpoint_matches_server_scores(server: Server) -> None:
    url, key = route(server, "ok")
    with HFClassifier(url, LABELS) as clf:
        out = clf.predict_proba(TEXTS)
    np.testing.assert_allclose(out, expected(TEXTS), atol=1e-12)
    assert calls(server, key)["count"] == 1


def test_server_down_is_unavailable_after_retries() -> None:
    url = f"http://127.0.0.1:{free_port()}/predict"
    clf = HFClassifier(url, LABELS, options=HttpOptions(retries=2, **FAST))
    with pytest.raises(ClassifierUnavailable) as e:
        clf.predict_proba(TEXTS)
    msg = str(e.value)
    assert url in msg and "3 attempts" in msg and "connection failed" in msg
    stats = clf.stats()
    assert (stats.requests, stats.retries, stats.failures) == (3, 2, 1)


def test_timeout_on_slow_endpoint_is_retried_then_unavailable(server: Server) -> None:
    url, key = route(server, "slow", s=3)
    clf = HFClassifier(url, LABELS, options=HttpOptions(timeout_s=0.4, retries=1, **FAST))
    started = time.monotonic()
    with pytest.raises(ClassifierUnavailable, match="timed out") as e:
        clf.predict_proba(TEXTS)
    assert time.monotonic() - started < 5  # two 0.4 s attempts, not two 3 s waits
    assert "read 0.4s" in str(e.value)
    assert calls(server, key)["count"] == 2


def test_500_then_success_retries_and_returns_the_right_scores(server: Server) -> None:
    url, key = route(server, "flaky", n=2, status=500)
    clf = HFClassifier(url, LABELS, options=HttpOptions(retries=3, **FAST))
    out = clf.predict_proba(TEXTS)
    np.testing.assert_allclose(out, expected(TEXTS), atol=1e-12)
    assert calls(server, key)["count"] == 3
    assert clf.stats().retries == 2


def test_persistent_503_names_status_and_body(server: Server) -> None:
    url, key = route(server, "flaky", n=99, status=503)
    clf = HFClassifier(url, LABELS, options=HttpOptions(retries=1, **FAST))
    with pytest.raises(ClassifierUnavailable, match="HTTP 503: internal error, try again"):
        clf.predict_proba(TEXTS)
    assert calls(server, key)["count"] == 2


@pytest.mark.parametrize("date", [False, True], ids=["seconds", "http-date"])
def test_429_honours_retry_after(server: Server, date: bool) -> None:
    query = {"n": 1, "after": 1, **({"date": 1} if date else {})}
    url, key = route(server, "ratelimit", **query)
    clf = HFClassifier(url, LABELS, options=HttpOptions(retries=2, **FAST))
    out = clf.predict_proba(TEXTS)
    np.testing.assert_allclose(out, expected(TEXTS), atol=1e-12)
    times = calls(server, key)["times"]
    assert len(times) == 2
    # The backoff alone would wait ~0.01 s; the gap shows the server's Retry-After was obeyed.
    assert times[1] - times[0] >= 0.9
    assert clf.stats().waited_s >= 0.9


def test_retry_after_is_capped(server: Server) -> None:
    url, key = route(server, "ratelimit", n=1, after=60)
    clf = HFClassifier(url, LABELS, options=HttpOptions(retries=1, retry_after_max_s=0.2, **FAST))
    started = time.monotonic()
    clf.predict_proba(TEXTS)
    assert time.monotonic() - started < 5
    assert calls(server, key)["count"] == 2


def test_400_is_not_retried(server: Server) -> None:
    url, key = route(server, "reject")
    clf = HFClassifier(url, LABELS, options=HttpOptions(retries=3, **FAST))
    with pytest.raises(EndpointRejected, match="HTTP 400.*inputs too long"):
        clf.predict_proba(TEXTS)
    assert calls(server, key)["count"] == 1


@pytest.mark.parametrize(
    ("mode", "message"),
    [
        ("badjson", r"non-JSON body .*gateway says hi"),
        ("short", r"sent 5 texts but got 4 score rows"),
        ("nan", r"NaN"),
        ("unknown", r"unknown label 'bogus'; declared labels are \['neg', 'neu', 'pos'\]"),
        ("top1", r"top-1 only"),
    ],
)
def test_malformed_responses_say_what_is_wrong(server: Server, mode: str, message: str) -> None:
    url, key = route(server, mode)
    texts = TEXTS if mode != "nan" else TEXTS[:1]
    clf = HFClassifier(url, LABELS, options=HttpOptions(retries=3, **FAST))
    with pytest.raises(MalformedResponse, match=message) as e:
        clf.predict_proba(texts)
    assert url.split("?")[0] in str(e.value) or clf.name in str(e.value)
    assert calls(server, key)["count"] == 1  # a malformed answer is not retried


def test_logits_are_softmaxed_and_undeclared_logits_are_caught(server: Server) -> None:
    url, _ = route(server, "logits")
    out = HFClassifier(url, LABELS, logits=True).predict_proba(TEXTS)
    np.testing.assert_allclose(out, expected(TEXTS), atol=1e-12)
    raw = np.array([logits(t) for t in TEXTS])
    assert not np.allclose(raw.sum(axis=1), 1)
    with pytest.raises(MalformedResponse, match="declare logits=true|negative|sum to 1"):
        HFClassifier(url, LABELS, logits=False).predict_proba(TEXTS)


def test_label_order_follows_declared_labels(server: Server) -> None:
    url, _ = route(server, "ok")
    out = HFClassifier(url, ["pos", "neg", "neu"]).predict_proba(TEXTS)
    np.testing.assert_allclose(out, expected(TEXTS)[:, [2, 0, 1]], atol=1e-12)
    renamed = HFClassifier(
        url,
        ["negative", "neutral", "positive"],
        label_map={"neg": "negative", "neu": "neutral", "pos": "positive"},
    )
    np.testing.assert_allclose(renamed.predict_proba(TEXTS), expected(TEXTS), atol=1e-12)


def test_batches_are_capped_and_counted_at_the_server(server: Server) -> None:
    url, key = route(server, "ok")
    texts = [f"review number {i} " + "a" * i for i in range(10)]
    clf = HFClassifier(url, LABELS, options=HttpOptions(batch_size=4, max_concurrency=1))
    out = clf.predict_proba(texts)
    np.testing.assert_allclose(out, expected(texts), atol=1e-12)  # order kept across batches
    assert calls(server, key)["batch_sizes"] == [4, 4, 2]


def test_concurrency_is_bounded(server: Server) -> None:
    url, key = route(server, "slow", s=0.5)
    texts = [f"t{i}" for i in range(8)]
    clf = HFClassifier(url, LABELS, options=HttpOptions(batch_size=2, max_concurrency=2))
    started = time.monotonic()
    out = clf.predict_proba(texts)
    elapsed = time.monotonic() - started
    np.testing.assert_allclose(out, expected(texts), atol=1e-12)
    rec = calls(server, key)
    # Two batches in flight at once at the server, never more; 4 x 0.5 s two at a time takes >= 1 s.
    assert rec["count"] == 4 and rec["max_inflight"] == 2
    assert elapsed >= 0.9


def test_per_text_requests_when_endpoint_takes_one_string(server: Server) -> None:
    url, key = route(server, "ok")
    out = HFClassifier(url, LABELS, batch=False).predict_proba(TEXTS[:3])
    np.testing.assert_allclose(out, expected(TEXTS[:3]), atol=1e-12)
    assert calls(server, key)["batch_sizes"] == [1, 1, 1]


def test_spec_built_classifier_caches_predictions(server: Server) -> None:
    url, key = route(server, "ok")
    clf = build_classifier(
        {"protocol": "hf", "url": url, "labels": LABELS, "batch_size": 2, "max_concurrency": 1}
    )
    first = clf.predict_proba(TEXTS[:3])
    again = clf.predict_proba(TEXTS[:3] + ["a new one"])
    np.testing.assert_allclose(again[:3], first, atol=0)
    assert calls(server, key)["batch_sizes"] == [2, 1, 1]  # only the new text went out the second time
    s = clf.stats()
    assert (s.hits, s.misses) == (3, 4)


def test_concurrency_bound_holds_across_callers(server: Server) -> None:
    from concurrent.futures import ThreadPoolExecutor

    url, key = route(server, "slow", s=0.3)
    clf = HFClassifier(url, LABELS, options=HttpOptions(batch_size=4, max_concurrency=2))
    with ThreadPoolExecutor(5) as pool:
        outs = list(pool.map(lambda i: clf.predict_proba([f"caller {i}"]), range(5)))
    np.testing.assert_allclose(np.vstack(outs), expected([f"caller {i}" for i in range(5)]), atol=1e-12)
    rec = calls(server, key)
    assert rec["count"] == 5 and rec["max_inflight"] == 2


def test_auth_headers_from_spec_reach_the_server(server: Server) -> None:
    url, key = route(server, "auth")
    spec = {"protocol": "hf", "url": url, "labels": LABELS, "retries": 2}
    with pytest.raises(EndpointRejected, match="HTTP 401.*bearer token"):
        build_classifier(spec).predict_proba(TEXTS)
    out = build_classifier({**spec, "headers": {"Authorization": "Bearer t0ken"}}).predict_proba(TEXTS)
    np.testing.assert_allclose(out, expected(TEXTS), atol=1e-12)
    assert calls(server, key)["count"] == 2  # the 401 was not retried


def test_outbound_policy_transport_plugs_in(server: Server) -> None:
    from explainers.net import OutboundDenied, OutboundPolicy, PolicyTransport

    url, key = route(server, "ok")
    spec = {"protocol": "hf", "url": url, "labels": LABELS, "retries": 3}
    denied = build_classifier(spec, transport=PolicyTransport(OutboundPolicy()))
    with pytest.raises(OutboundDenied):
        denied.predict_proba(TEXTS)
    allowed = build_classifier(spec, transport=PolicyTransport(OutboundPolicy.from_allow("127.0.0.1/32")))
    np.testing.assert_allclose(allowed.predict_proba(TEXTS), expected(TEXTS), atol=1e-12)
    assert calls(server, key)["count"] == 1  # the denied call never left the process, nor was retried
