"""Shared HTTP machinery for every remote classifier adapter.

Each protocol (Open Inference V2, KServe V1, Hugging Face JSON, a custom template) only
says how to turn a batch of texts into a request body and how to read score rows back.
Everything that makes calling a model server safe and fast lives here once:
batching with a maximum batch size, a bounded number of batches in flight, connect/read
timeouts, retries with exponential backoff and jitter on connection errors, timeouts,
5xx and 429 (honouring Retry-After), mapping the endpoint's label order onto the
declared `labels`, softmax for endpoints that return logits, and a `MalformedResponse`
naming the endpoint and the defect whenever the answer is not n rows of C finite scores.

The `transport` hook lets the service plug in its outbound-URL policy
(`explainers.net.PolicyTransport`); a policy denial (`OutboundDenied`) is raised at once,
never retried.
"""

from __future__ import annotations

import contextvars
import threading
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import httpx
import numpy as np

from explainers import outbound
from explainers.classifiers.base import (
    ClassifierTimeout,
    ClassifierUnavailable,
    EndpointRejected,
    MalformedResponse,
    check_proba,
    softmax,
)
from explainers.errors import excerpt
from explainers.outbound import MAX_RETRIES, RETRY_STATUSES, parse_retry_after

__all__ = [
    "RETRY_STATUSES",
    "CallStats",
    "EndpointRejected",
    "HttpClassifier",
    "HttpOptions",
    "LabelMapper",
    "parse_retry_after",
]


@dataclass
class HttpOptions:
    """How to call an endpoint: limits, timeouts, retries and extra headers (e.g. auth)."""

    batch_size: int = 32
    max_concurrency: int = 4
    timeout_s: float = 30.0
    connect_timeout_s: float = 5.0
    retries: int = 3
    backoff_s: float = 0.25
    backoff_max_s: float = 8.0
    retry_after_max_s: float = 30.0
    headers: dict[str, str] = field(default_factory=dict)
    # Total seconds per request, retries included (None: timeouts x attempts, and the request's deadline).
    total_s: float | None = None
    # Most seconds a call waits for one of the endpoint's `max_concurrency` slots (and never past
    # the request's deadline); then it fails as a timeout instead of queueing behind a slow endpoint.
    slot_wait_s: float = 10.0

    def __post_init__(self) -> None:
        if self.batch_size < 1:
            raise ValueError("batch_size must be at least 1")
        if self.max_concurrency < 1:
            raise ValueError("max_concurrency must be at least 1")
        if not 0 <= self.retries <= MAX_RETRIES:
            raise ValueError(f"retries must be between 0 and {MAX_RETRIES}")
        if self.timeout_s <= 0 or self.connect_timeout_s <= 0:
            raise ValueError("timeouts must be positive")
        if self.slot_wait_s < 0:
            raise ValueError("slot_wait_s must be >= 0")

    def retry_policy(self) -> outbound.RetryPolicy:
        return outbound.RetryPolicy(
            retries=self.retries,
            backoff_s=self.backoff_s,
            backoff_max_s=self.backoff_max_s,
            retry_after_max_s=self.retry_after_max_s,
            total_s=self.total_s,
        )


@dataclass
class CallStats:
    """What the adapter did on the wire: requests sent, retries, texts scored, give-ups."""

    requests: int = 0
    retries: int = 0
    texts: int = 0
    failures: int = 0
    waited_s: float = 0.0

    def to_dict(self) -> dict[str, float]:
        return {
            "requests": self.requests,
            "retries": self.retries,
            "texts": self.texts,
            "failures": self.failures,
            "waited_s": round(self.waited_s, 3),
        }


def _number(x: Any, where: str, source: str) -> float:
    if isinstance(x, bool) or not isinstance(x, int | float):
        raise MalformedResponse(f"{source}: {where} is {x!r}, not a number")
    return float(x)


class LabelMapper:
    """Turns one score row from the endpoint into a row in the declared label order.

    A row is either positional (a list of numbers in `endpoint_labels` order), a mapping
    label -> score, or a list of {"label", "score"} objects (Hugging Face; sorted by score,
    so each row has its own order). `label_map` renames endpoint labels first (e.g.
    "LABEL_0" -> "1").
    """

    def __init__(
        self,
        labels: Sequence[str],
        endpoint_labels: Sequence[str] | None = None,
        label_map: Mapping[str, str] | None = None,
        *,
        source: str,
    ) -> None:
        self.labels = [str(x) for x in labels]
        if len(set(self.labels)) != len(self.labels):
            raise ValueError(f"{source}: duplicate labels in {self.labels}")
        self.label_map = {str(k): str(v) for k, v in (label_map or {}).items()}
        self.index = {lab: i for i, lab in enumerate(self.labels)}
        self.source = source
        self.positional = self._order(endpoint_labels) if endpoint_labels is not None else None

    def _order(self, endpoint_labels: Sequence[Any]) -> list[int]:
        names = [self.label_map.get(str(x), str(x)) for x in endpoint_labels]
        unknown = [n for n in names if n not in self.index]
        if unknown:
            raise MalformedResponse(
                f"{self.source}: unknown labels {unknown}; declared labels are {self.labels}"
                " (add a label_map if the endpoint names them differently)"
            )
        missing = [lab for lab in self.labels if lab not in names]
        if missing or len(names) != len(self.labels):
            raise MalformedResponse(
                f"{self.source}: endpoint labels {names} do not match declared labels "
                f"{self.labels} (missing {missing})"
            )
        return [self.index[n] for n in names]

    def row(self, raw: Any, i: int, row_labels: Sequence[Any] | None = None) -> np.ndarray:
        out = np.full(len(self.labels), np.nan)
        where = f"row {i}"
        if isinstance(raw, Mapping):
            pairs = [(k, v) for k, v in raw.items()]
        elif isinstance(raw, list) and raw and all(isinstance(x, Mapping) for x in raw):
            pairs = []
            for x in raw:
                if "label" not in x or "score" not in x:
                    raise MalformedResponse(f"{self.source}: {where} has an entry without label/score: {x!r}")
                pairs.append((x["label"], x["score"]))
        elif isinstance(raw, list):
            order = self._order(row_labels) if row_labels is not None else self.positional
            if order is None:
                order = list(range(len(self.labels)))
            if len(raw) != len(self.labels):
                raise MalformedResponse(
                    f"{self.source}: {where} has {len(raw)} scores, expected "
                    f"{len(self.labels)} (labels {self.labels})"
                )
            for j, v in enumerate(raw):
                out[order[j]] = _number(v, f"{where} score {j}", self.source)
            return out
        else:
            raise MalformedResponse(
                f"{self.source}: {where} is {type(raw).__name__} {raw!r:.80}, "
                "expected a list of scores or label->score pairs"
            )
        seen: set[str] = set()
        for lab, v in pairs:
            name = self.label_map.get(str(lab), str(lab))
            if name not in self.index:
                raise MalformedResponse(
                    f"{self.source}: {where} has unknown label {name!r}; declared labels are "
                    f"{self.labels} (add a label_map if the endpoint names them differently)"
                )
            if name in seen:
                raise MalformedResponse(f"{self.source}: {where} repeats label {name!r}")
            seen.add(name)
            out[self.index[name]] = _number(v, f"{where} score for {name!r}", self.source)
        missing = [lab for lab in self.labels if lab not in seen]
        if missing:
            raise MalformedResponse(
                f"{self.source}: {where} has no score for labels {missing}; if the endpoint "
                "returns only the top label, ask it for all scores (top_k=None)"
            )
        return out

    def matrix(
        self, rows: Any, n: int, row_labels: Sequence[Sequence[Any]] | Sequence[Any] | None = None
    ) -> np.ndarray:
        """(n, C) raw scores in declared order; `row_labels` is one label list for all rows or one per row."""
        if not isinstance(rows, list):
            raise MalformedResponse(
                f"{self.source}: expected a list of {n} score rows, got {type(rows).__name__}"
            )
        if len(rows) != n:
            raise MalformedResponse(f"{self.source}: sent {n} texts but got {len(rows)} score rows")
        per_row = row_labels is not None and len(row_labels) > 0 and isinstance(row_labels[0], list)
        return np.array(
            [
                self.row(r, i, (row_labels[i] if per_row else row_labels) if row_labels is not None else None)
                for i, r in enumerate(rows)
            ],
            dtype=np.float64,
        ).reshape(n, len(self.labels))


class HttpClassifier:
    """Base of every HTTP adapter: subclasses build a request and read score rows.

    Subclasses implement `request(texts) -> (path_or_url, json_body)` and
    `scores(body, n) -> (n, C) raw scores in declared order` (usually through
    `self.mapper`). Everything else (batching, concurrency, retries, validation, softmax)
    is shared.
    """

    protocol = "http"

    def __init__(
        self,
        url: str,
        labels: Sequence[str],
        *,
        logits: bool = False,
        endpoint_labels: Sequence[str] | None = None,
        label_map: Mapping[str, str] | None = None,
        options: HttpOptions | None = None,
        transport: httpx.BaseTransport | None = None,
        name: str | None = None,
    ) -> None:
        if not labels:
            raise ValueError("a classifier needs at least one label")
        self.url = url.rstrip("/")
        self._labels = [str(x) for x in labels]
        self.logits = logits
        self.options = options or HttpOptions()
        self.name = name or f"{self.protocol}:{self.url}"
        self.mapper = LabelMapper(self._labels, endpoint_labels, label_map, source=self.name)
        o = self.options
        self._client = httpx.Client(
            timeout=httpx.Timeout(o.timeout_s, connect=o.connect_timeout_s),
            limits=httpx.Limits(
                max_connections=max(o.max_concurrency, 1) * 2,
                max_keepalive_connections=max(o.max_concurrency, 1),
            ),
            headers=o.headers,
            transport=outbound.guarded(transport),
            follow_redirects=False,
        )
        self._stats = CallStats()
        self._lock = threading.Lock()
        self._pool: ThreadPoolExecutor | None = None
        # Bounds requests in flight to this endpoint across all callers, not just within one call.
        self._slots = threading.BoundedSemaphore(o.max_concurrency)

    # -- protocol hooks -------------------------------------------------------------
    def request(self, texts: list[str]) -> tuple[str, Any]:
        raise NotImplementedError

    def scores(self, body: Any, n: int) -> np.ndarray:
        raise NotImplementedError

    # -- Classifier -------------------------------------------------------------------
    @property
    def labels(self) -> list[str]:
        return list(self._labels)

    def predict_proba(self, texts: Sequence[str]) -> np.ndarray:
        texts = [str(t) for t in texts]
        if not texts:
            return np.zeros((0, len(self._labels)))
        size = self.options.batch_size
        batches = [texts[i : i + size] for i in range(0, len(texts), size)]
        if len(batches) == 1 or self.options.max_concurrency == 1:
            parts = [self._predict_batch(b) for b in batches]
        else:
            ctx = contextvars.copy_context()  # the request's outbound deadline holds in the pool threads too
            parts = list(self._executor().map(lambda b: ctx.copy().run(self._predict_batch, b), batches))
        return np.concatenate(parts, axis=0)

    def stats(self) -> CallStats:
        with self._lock:
            return CallStats(**vars(self._stats))

    def close(self) -> None:
        self._client.close()
        if self._pool is not None:
            self._pool.shutdown(wait=False)

    def __enter__(self) -> HttpClassifier:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.url!r}, labels={self._labels})"

    # -- internals -----------------------------------------------------------------
    def _executor(self) -> ThreadPoolExecutor:
        with self._lock:
            if self._pool is None:
                self._pool = ThreadPoolExecutor(self.options.max_concurrency, thread_name_prefix="classifier")
            return self._pool

    def _predict_batch(self, texts: list[str]) -> np.ndarray:
        target, payload = self.request(texts)
        body = self.post(target, payload)
        raw = self.scores(body, len(texts))
        raw = np.asarray(raw, dtype=np.float64)
        if raw.shape != (len(texts), len(self._labels)):
            raise MalformedResponse(
                f"{self.name}: expected scores of shape {(len(texts), len(self._labels))}, got {raw.shape}"
            )
        if not np.all(np.isfinite(raw)):
            bad = sorted({int(i) for i in np.argwhere(~np.isfinite(raw))[:, 0]})
            raise MalformedResponse(f"{self.name}: scores contain NaN or infinity (rows {bad[:10]})")
        proba = softmax(raw) if self.logits else raw
        with self._lock:
            self._stats.texts += len(texts)
        return check_proba(proba, len(texts), len(self._labels), source=self.name)

    def _url(self, target: str) -> str:
        return target if target.startswith(("http://", "https://")) else self.url + target

    def _attempt(self, attempt: int) -> None:
        with self._lock:
            self._stats.requests += 1
            self._stats.retries += bool(attempt)

    def _waited(self, seconds: float) -> None:
        with self._lock:
            self._stats.waited_s += seconds

    def post(self, target: str, payload: Any) -> Any:
        """POST JSON through the shared retry path (`explainers.outbound`); return the decoded JSON body.

        Raises `OutboundDenied` at once (never retried), `EndpointRejected` for a 4xx, and
        `ClassifierTimeout` / `ClassifierUnavailable` when the bounded retries run out.
        """
        url = self._url(target)
        errors = outbound.Errors(
            timeout=ClassifierTimeout,
            unavailable=ClassifierUnavailable,
            rejected=EndpointRejected,
            malformed=MalformedResponse,
        )
        try:
            with outbound.slot(self._slots, wait_s=self.options.slot_wait_s, name=self.name, errors=errors):
                resp = outbound.send(
                    self._client,
                    "POST",
                    url,
                    json=payload,
                    policy=self.options.retry_policy(),
                    name=self.name,
                    errors=errors,
                    on_attempt=self._attempt,
                    on_wait=self._waited,
                )
        except ClassifierUnavailable:
            with self._lock:
                self._stats.failures += 1
            raise
        return self._json(resp, url)

    def _json(self, resp: httpx.Response, url: str) -> Any:
        try:
            return outbound.parse_json(resp.content)
        # ValueError: JSONDecodeError, UnicodeDecodeError, NaN/Infinity, digits past the int limit.
        except ValueError as e:
            raise MalformedResponse(
                f"{self.name}: POST {url} answered HTTP {resp.status_code} with non-JSON body "
                f"({type(e).__name__}: {excerpt(str(e), 80)}): {excerpt(resp.text)!r}"
            ) from e
