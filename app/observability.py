"""Observability: Prometheus `/metrics`, request ids, and structured JSON logs.

`app.main.create_app` builds the `Metrics`, mounts `router(metrics)` and installs
`ObservabilityMiddleware` outermost, so latencies and status codes include requests that
the limits refused (413/429/503/504), which is what an operator needs to see overload.

What is measured and where:
* HTTP requests: latency histogram and counts by method, route template and status.
* Outbound classifier and LLM calls: every HTTP call goes through the outbound
  `PolicyTransport`; an observer records latency and errors, labelled by the registered
  name of the classifier/LLM or `inline` (never the caller's host: label values must stay
  bounded whatever URLs requests carry). The library itself never imports prometheus.
* Cache hit rate, in-process classifier calls, job queue depth: read from the runtime at
  scrape time by a custom collector (CachingClassifier stats, the job store), so nothing in
  the request path pays for them.

Each app gets its own CollectorRegistry, so tests can build many apps in one process.
"""

from __future__ import annotations

import contextvars
import json
import logging
import re
import sys
import time
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
from fastapi import APIRouter, FastAPI, Response
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from app.limits import ASGIApp, Message, Receive, Scope, Send, header

request_id: contextvars.ContextVar[str | None] = contextvars.ContextVar("cace_request_id", default=None)
access_log = logging.getLogger("cace.access")
_VALID_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")
LLM_PATHS = ("/chat/completions", "/completions", "/completion", "/generate", "/v1/embeddings")
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)


class JsonFormatter(logging.Formatter):
    """One JSON object per line, with the request id of the request being served (if any)."""

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "ts": round(record.created, 3),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        rid = getattr(record, "request_id", None) or request_id.get()
        if rid:
            out["request_id"] = rid
        for k in ("method", "path", "route", "status", "duration_ms", "api_key_id", "client"):
            v = getattr(record, k, None)
            if v is not None:
                out[k] = v
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        return json.dumps(out, default=str)


def configure_logging(fmt: str) -> None:
    """Route the root and uvicorn loggers through one stderr handler in the chosen format."""
    handler = logging.StreamHandler(sys.stderr)
    handler.set_name("cace")
    handler.setFormatter(
        JsonFormatter()
        if fmt == "json"
        else logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s")
    )
    root = logging.getLogger()
    # Replace plain stderr handlers (basicConfig's, ours from an earlier app); keep capture
    # handlers such as pytest's, which are subclasses.
    for h in list(root.handlers):
        if type(h) is logging.StreamHandler or h.get_name() == "cace":
            root.removeHandler(h)
    root.addHandler(handler)
    if root.level == logging.NOTSET or root.level > logging.INFO:
        root.setLevel(logging.INFO)
    for name in ("uvicorn", "uvicorn.error"):
        lg = logging.getLogger(name)
        lg.handlers = []
        lg.propagate = True
    # The access middleware logs every request with its id; uvicorn's own access log would duplicate it.
    logging.getLogger("uvicorn.access").disabled = True


class Metrics:
    """The service's Prometheus metrics, on one registry."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter(
            "cace_http_requests_total",
            "HTTP requests by route and status",
            ["method", "route", "status"],
            registry=r,
        )
        self.latency = Histogram(
            "cace_http_request_duration_seconds",
            "HTTP request latency",
            ["method", "route"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.inflight = Gauge("cace_http_requests_in_progress", "HTTP requests being served", registry=r)
        self.outbound_latency = Histogram(
            "cace_outbound_request_duration_seconds",
            "Latency of outbound classifier/LLM HTTP calls (to response headers)",
            ["kind", "target"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.outbound_errors = Counter(
            "cace_outbound_errors_total",
            "Outbound classifier/LLM calls that failed (transport error, denial or 5xx)",
            ["kind", "target", "error"],
            registry=r,
        )

    def observe_outbound(
        self,
        request: httpx.Request,
        seconds: float,
        response: httpx.Response | None,
        error: BaseException | None,
    ) -> None:
        ext = request.extensions
        kind = ext.get("cace_kind") or ("llm" if request.url.path.endswith(LLM_PATHS) else "classifier")
        # The registered name or "inline" (set by app.specs); never the URL's host, which callers choose.
        target = str(ext.get("cace_label") or "inline")
        self.outbound_latency.labels(kind, target).observe(seconds)
        if error is not None:
            self.outbound_errors.labels(kind, target, type(error).__name__).inc()
        elif response is not None and response.status_code >= 500:
            self.outbound_errors.labels(kind, target, f"http_{response.status_code}").inc()


class RuntimeCollector(Collector):
    """Scrape-time view of the runtime: classifier caches, in-process calls, job queue, shed requests."""

    def __init__(self, app: FastAPI) -> None:
        self.app = app

    def _classifiers(self) -> Iterator[tuple[str, Any]]:
        rt = getattr(self.app.state, "runtime", None)
        if rt is None:
            return
        seen: set[int] = set()
        for mapping in (getattr(rt, "builtin_classifiers", {}), getattr(rt, "_classifiers", {})):
            for name, clf in list(mapping.items()):
                if id(clf) not in seen:
                    seen.add(id(clf))
                    yield str(name), clf

    def collect(self) -> Iterator[Any]:
        hits = CounterMetricFamily(
            "cace_classifier_cache_hits", "Texts answered from the prediction cache", labels=["classifier"]
        )
        misses = CounterMetricFamily(
            "cace_classifier_cache_misses",
            "Texts sent to the classifier (cache misses)",
            labels=["classifier"],
        )
        rate = GaugeMetricFamily(
            "cace_classifier_cache_hit_ratio", "Cache hits / lookups since start", labels=["classifier"]
        )
        calls = CounterMetricFamily(
            "cace_classifier_http_requests",
            "HTTP requests sent by classifier adapters",
            labels=["classifier"],
        )
        fails = CounterMetricFamily(
            "cace_classifier_http_failures", "Classifier adapter calls that failed", labels=["classifier"]
        )
        for name, clf in self._classifiers():
            stats = getattr(clf, "stats", None)
            st = stats() if callable(stats) else None
            if st is not None and hasattr(st, "hits"):
                hits.add_metric([name], st.hits)
                misses.add_metric([name], st.misses)
                rate.add_metric([name], st.hit_rate)
            inner = getattr(clf, "inner", None) or getattr(clf, "classifier", None)
            ist = getattr(inner, "stats", None)
            ist = ist() if callable(ist) else None
            if ist is not None and hasattr(ist, "requests"):
                calls.add_metric([name], ist.requests)
                fails.add_metric([name], getattr(ist, "failures", 0))
        yield from (hits, misses, rate, calls, fails)
        rt = getattr(self.app.state, "runtime", None)
        store = getattr(rt, "store", None)
        if store is not None and hasattr(store, "active_jobs"):
            depth = GaugeMetricFamily("cace_job_queue_depth", "Jobs queued or running")
            try:
                depth.add_metric([], store.active_jobs())
            except Exception:  # a scrape must not fail because the database blinked
                depth.add_metric([], float("nan"))
            yield depth
        shed = CounterMetricFamily("cace_requests_shed", "Requests refused with 503 by the in-flight cap")
        shed.add_metric([], getattr(getattr(self.app.state, "slots", None), "shed", 0))
        yield shed


def _route_template(scope: Scope) -> str:
    route = scope.get("route")
    path = getattr(route, "path_format", None) or getattr(route, "path", None)
    return path or "unmatched"


class ObservabilityMiddleware:
    """Request id in/out (X-Request-ID), a JSON access log line, and the HTTP metrics."""

    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        given = header(scope, b"x-request-id")
        rid = given if given and _VALID_ID.match(given) else uuid.uuid4().hex
        token = request_id.set(rid)
        scope.setdefault("state", {})["request_id"] = rid
        status = 500
        started = time.perf_counter()
        scope["state"]["received_at"] = started  # answers' timings count from here

        async def tagged(msg: Message) -> None:
            nonlocal status
            if msg["type"] == "http.response.start":
                status = msg["status"]
                msg["headers"] = [*msg.get("headers", []), (b"x-request-id", rid.encode())]
            await send(msg)

        self.metrics.inflight.inc()
        try:
            await self.app(scope, receive, tagged)
        finally:
            self.metrics.inflight.dec()
            took = time.perf_counter() - started
            method, route = scope.get("method", ""), _route_template(scope)
            self.metrics.requests.labels(method, route, str(status)).inc()
            self.metrics.latency.labels(method, route).observe(took)
            client = scope.get("client")
            access_log.info(
                "%s %s %s",
                method,
                scope.get("path", ""),
                status,
                extra={
                    "request_id": rid,
                    "method": method,
                    "path": scope.get("path", ""),
                    "route": route,
                    "status": status,
                    "duration_ms": round(took * 1000, 2),
                    "api_key_id": scope.get("state", {}).get("api_key_id"),
                    "client": client[0] if client else None,
                },
            )
            request_id.reset(token)


def build_metrics(app: FastAPI) -> Metrics:
    """The app's metrics registry, with the scrape-time runtime collector."""
    metrics = Metrics()
    metrics.registry.register(RuntimeCollector(app))
    return metrics


def router(metrics: Metrics) -> APIRouter:
    """`GET /metrics` (Prometheus text format; public, not in the OpenAPI spec)."""
    r = APIRouter()

    @r.get("/metrics", include_in_schema=False)
    def prometheus_metrics() -> Response:
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    return r
