"""The one retry path every outbound HTTP client (classifier adapters, LLM backends) uses.

Why one helper: two hand-written loops drifted apart (one retried a policy denial, one had
no upper bound and backed off for half an hour). Here, once:

* bounded attempts: `retries` is at most `MAX_RETRIES` (so at most `MAX_RETRIES + 1` requests);
* exponential backoff with jitter (`backoff_s * 2**attempt`, capped at `backoff_max_s`, times
  a random factor in [0.5, 1]);
* `Retry-After` (seconds or an HTTP date) is honoured, capped at `retry_after_max_s`;
* a total deadline: the call's own `total_s`, and never later than the deadline of the
  request being served (`deadline()` sets it; the service sets it to the request timeout), so
  no thread keeps calling out after the client got its answer;
* what is retried: connection errors, timeouts, 429 and 5xx. Never a policy denial
  (`OutboundDenied`), never another 4xx (the same request gets the same answer) and never a
  response refused for its size or encoding.

And the wire itself, through `GuardedTransport` (every client's transport; the service's URL
policy transport is one):

* a WALL-CLOCK deadline per attempt, body included. httpx's timeouts are per socket operation,
  so an upstream that sends one byte a second never trips a 30 s read timeout and holds the
  caller for as long as its Content-Length lasts. Here every socket read, write, connect and
  TLS handshake gets at most the time left until the attempt's deadline (the client's connect +
  read timeout, and never past the call's total or the request's deadline), and fails with a
  timeout once it has passed;
* a byte cap on every response (`max_response_bytes`): a Content-Length over it is refused
  before the body is read, and a body without one is counted as it streams and cut off there
  (`ResponseTooLarge`, a malformed answer: 502 in the service). Responses are asked for with
  ``Accept-Encoding: identity`` and a compressed one is refused, so the bytes counted are the
  bytes kept (a 1 MB gzip bomb cannot become 1 GB after the cap);
* JSON from an upstream is parsed by `parse_json`: NaN, Infinity and numbers that overflow to
  infinity are malformed answers, not values that reach the arithmetic.
"""

from __future__ import annotations

import contextlib
import contextvars
import email.utils
import json as jsonlib
import math
import random
import socket
import ssl
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import httpcore
import httpx

from explainers.errors import (
    OutboundDenied,
    UpstreamError,
    UpstreamMalformed,
    UpstreamRejected,
    UpstreamTimeout,
    UpstreamUnavailable,
    excerpt,
)

# The documented maximum of retries per call (attempts = retries + 1).
MAX_RETRIES = 5
RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})

# Bytes one upstream response may carry unless the transport is given another cap.
DEFAULT_MAX_RESPONSE_BYTES = 32 * 1024 * 1024

# Monotonic time by which the work on the current request must be done (None: no request deadline).
_deadline: contextvars.ContextVar[float | None] = contextvars.ContextVar(
    "cace_outbound_deadline", default=None
)
# Monotonic time by which the current attempt's bytes must be in; `send` sets it around each
# attempt and `DeadlineStream` caps every socket operation by it (None: outside `send`).
_wire_until: contextvars.ContextVar[float | None] = contextvars.ContextVar(
    "cace_outbound_wire_until", default=None
)


@contextlib.contextmanager
def deadline(seconds: float | None) -> Iterator[None]:
    """Outbound calls made inside this block (and threads started with its context) end by then."""
    if seconds is None or seconds <= 0:
        yield
        return
    until = time.monotonic() + seconds
    current = _deadline.get()
    token = _deadline.set(until if current is None else min(current, until))
    try:
        yield
    finally:
        _deadline.reset(token)


def set_deadline(seconds: float) -> contextvars.Token[float | None]:
    """Like `deadline()`, for ASGI middleware that must reset the token itself."""
    until = time.monotonic() + seconds
    current = _deadline.get()
    return _deadline.set(until if current is None else min(current, until))


def reset_deadline(token: contextvars.Token[float | None]) -> None:
    _deadline.reset(token)


def remaining() -> float | None:
    """Seconds left before the current request's deadline, or None when there is none."""
    until = _deadline.get()
    return None if until is None else until - time.monotonic()


def parse_retry_after(value: str | None, *, now: datetime | None = None) -> float | None:
    """Seconds to wait from a Retry-After header (delta-seconds or an HTTP date); None if absent/bad."""
    if not value:
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        pass
    else:
        return max(0.0, seconds) if seconds == seconds and seconds != float("inf") else None
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when is None:
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - (now or datetime.now(UTC))).total_seconds())


@dataclass(frozen=True)
class RetryPolicy:
    """How one outbound call is retried; see the module docstring."""

    retries: int = 2
    backoff_s: float = 0.25
    backoff_max_s: float = 8.0
    retry_after_max_s: float = 30.0
    # Total seconds for the call, retries and waits included; None: only the request's deadline.
    total_s: float | None = None

    def __post_init__(self) -> None:
        if isinstance(self.retries, bool) or not 0 <= self.retries <= MAX_RETRIES:
            raise ValueError(f"retries must be between 0 and {MAX_RETRIES}, got {self.retries!r}")
        if self.backoff_s < 0 or self.backoff_max_s < 0 or self.retry_after_max_s < 0:
            raise ValueError("backoff and Retry-After caps must be >= 0")
        if self.total_s is not None and self.total_s <= 0:
            raise ValueError("total_s must be positive")

    def backoff(self, attempt: int) -> float:
        return min(self.backoff_max_s, self.backoff_s * (2**attempt)) * (0.5 + random.random() / 2)


@dataclass(frozen=True)
class Errors:
    """The exception classes a client raises, so callers keep catching their own names."""

    timeout: type[UpstreamError] = UpstreamTimeout
    unavailable: type[UpstreamError] = UpstreamUnavailable
    rejected: type[UpstreamError] = UpstreamRejected
    malformed: type[UpstreamError] = UpstreamMalformed


def _capped_timeout(base: httpx.Timeout, left: float | None) -> httpx.Timeout:
    if left is None:
        return base

    def cap(v: float | None) -> float:
        return max(0.001, left if v is None else min(v, left))

    return httpx.Timeout(
        connect=cap(base.connect), read=cap(base.read), write=cap(base.write), pool=cap(base.pool)
    )


def _attempt_until(base: httpx.Timeout, until: float | None) -> float | None:
    """When one attempt must be over, body included: connect + read timeout from now, and by `until`.

    The client's read timeout thus bounds the whole response of an attempt, not each socket read.
    """
    own = None
    if base.read is not None:
        own = time.monotonic() + (base.connect or 0.0) + base.read
    ends = [t for t in (own, until) if t is not None]
    return min(ends) if ends else None


# ---- the wire: wall-clock deadline per socket operation, byte cap per response ------------------
class ResponseRefused(UpstreamMalformed):
    """An upstream response refused before it is kept: too large, or in an encoding not asked for."""


class ResponseTooLarge(ResponseRefused):
    """An upstream response larger than the transport's `max_response_bytes`."""


def _time_left(exc: type[Exception], timeout: float | None) -> float | None:
    """`timeout` capped by the current attempt's wall-clock deadline; `exc` once it has passed."""
    until = _wire_until.get()
    if until is None:
        return timeout
    left = until - time.monotonic()
    if left <= 0:
        raise exc("the outbound call's wall-clock deadline passed")
    return left if timeout is None else min(timeout, left)


def _shutdown(sock: socket.socket) -> None:
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_RDWR)  # wakes a thread blocked in recv on this socket


class DeadlineStream(httpcore.NetworkStream):
    """A network stream whose every read and write ends by the attempt's wall-clock deadline.

    A read that returns one byte a second restarts a plain socket timeout forever; here each
    operation's timeout is what is left until the deadline, so the drip ends there. A TLS
    handshake is one call of many reads, so a timer shuts the socket down at the deadline.
    """

    def __init__(self, inner: httpcore.NetworkStream) -> None:
        self._inner = inner

    def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        return self._inner.read(max_bytes, _time_left(httpcore.ReadTimeout, timeout))

    def write(self, buffer: bytes, timeout: float | None = None) -> None:
        self._inner.write(buffer, _time_left(httpcore.WriteTimeout, timeout))

    def close(self) -> None:
        self._inner.close()

    def start_tls(
        self,
        ssl_context: ssl.SSLContext,
        server_hostname: str | None = None,
        timeout: float | None = None,
    ) -> httpcore.NetworkStream:
        t = _time_left(httpcore.ConnectTimeout, timeout)
        sock = self._inner.get_extra_info("socket")
        timer = threading.Timer(t, _shutdown, (sock,)) if t is not None and sock is not None else None
        if timer is not None:
            timer.daemon = True
            timer.start()
        try:
            return DeadlineStream(self._inner.start_tls(ssl_context, server_hostname, t))
        finally:
            if timer is not None:
                timer.cancel()

    def get_extra_info(self, info: str) -> Any:
        return self._inner.get_extra_info(info)


class DeadlineBackend(httpcore.SyncBackend):
    """httpcore's socket backend with `DeadlineStream`s: connects and every later I/O end by the deadline."""

    def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.NetworkStream:
        t = _time_left(httpcore.ConnectTimeout, timeout)
        return DeadlineStream(super().connect_tcp(host, port, t, local_address, socket_options))


def install_backend(transport: httpx.HTTPTransport | httpx.AsyncHTTPTransport, backend: Any) -> None:
    """Put `backend` under `transport`'s connection pool (httpx has no public hook for it)."""
    pool = getattr(transport, "_pool", None)
    if pool is None or not hasattr(pool, "_network_backend"):
        raise RuntimeError(
            "this httpx/httpcore version does not expose the connection pool's network backend"
        )
    pool._network_backend = backend


class CappedStream(httpx.SyncByteStream):
    """A response body that raises `ResponseTooLarge` once more than `limit` bytes have arrived."""

    def __init__(self, inner: httpx.SyncByteStream, limit: int, url: httpx.URL) -> None:
        self._inner = inner
        self._limit = limit
        self._url = url

    def __iter__(self) -> Iterator[bytes]:
        seen = 0
        for chunk in self._inner:
            seen += len(chunk)
            if seen > self._limit:
                raise ResponseTooLarge(
                    f"the response from {self._url.host} exceeds {self._limit} bytes; the rest was not read"
                )
            yield chunk

    def close(self) -> None:
        self._inner.close()


class GuardedTransport(httpx.HTTPTransport):
    """An httpx transport with the wire bounds of this module (see its docstring).

    Every outbound client uses one: the classifier adapters and LLM backends default to a
    `GuardedTransport()`, and the service's URL-policy transport (`explainers.net.PolicyTransport`)
    is one. `max_response_bytes` caps each response body (``CACE_UPSTREAM_MAX_BYTES`` in the service).
    """

    def __init__(self, *, max_response_bytes: int = DEFAULT_MAX_RESPONSE_BYTES, **kwargs: Any) -> None:
        if max_response_bytes < 1:
            raise ValueError("max_response_bytes must be at least 1")
        super().__init__(**kwargs)
        self.max_response_bytes = max_response_bytes
        install_backend(self, self._network_backend())

    def _network_backend(self) -> httpcore.NetworkBackend:
        return DeadlineBackend()

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        # The bytes counted must be the bytes kept: no compressed body that inflates past the cap.
        request.headers["Accept-Encoding"] = "identity"
        response = super().handle_request(request)
        try:
            encoding = response.headers.get("content-encoding", "identity").strip().lower()
            if encoding not in ("", "identity"):
                raise ResponseRefused(
                    f"the response from {request.url.host} is {encoding!r}-encoded although "
                    "identity was asked for; refused (its size after decoding is unknown)"
                )
            declared = response.headers.get("content-length", "")
            if declared.strip().isdigit() and int(declared) > self.max_response_bytes:
                raise ResponseTooLarge(
                    f"the response from {request.url.host} declares {int(declared)} bytes; "
                    f"the limit is {self.max_response_bytes}"
                )
        except ResponseRefused:
            response.close()
            raise
        assert isinstance(response.stream, httpx.SyncByteStream)
        response.stream = CappedStream(response.stream, self.max_response_bytes, request.url)
        return response


def guarded(transport: httpx.BaseTransport | None) -> httpx.BaseTransport:
    """`transport`, or a fresh `GuardedTransport` when the caller gave none."""
    return transport if transport is not None else GuardedTransport()


def _no_constant(name: str) -> Any:
    raise ValueError(f"the JSON holds {name}, which is not a number")


def _finite_float(text: str) -> float:
    x = float(text)
    if not math.isfinite(x):
        raise ValueError(f"the JSON holds {text[:40]}, which overflows to infinity")
    return x


def parse_json(content: bytes | str) -> Any:
    """Parse an upstream JSON body; ValueError for NaN, Infinity or a number that overflows to infinity.

    Why: Python's json accepts all three, and an infinity in a score or logprob turns into a
    NaN or an OverflowError far from where it came in.
    """
    return jsonlib.loads(content, parse_constant=_no_constant, parse_float=_finite_float)


def token_count(x: Any) -> int:
    """A token count an upstream reports, as a sane int (0 when it is not a count to believe).

    Why bounded: a count of 1e308 or a 5,000-digit integer would overflow a database column or
    a cost sum far from where it came in.
    """
    if isinstance(x, bool) or not isinstance(x, int | float) or not 0 <= x < 2**31:
        return 0
    return int(x)


@contextlib.contextmanager
def slot(
    semaphore: threading.Semaphore, *, wait_s: float, name: str, errors: Errors | None = None
) -> Iterator[None]:
    """Hold one of an endpoint's concurrency slots, waiting at most `wait_s` for it.

    Never past the request's deadline either: a caller queued behind a slow upstream gets a
    timeout (504 in the service) and its thread back, instead of waiting out every holder.
    """
    left = remaining()
    wait = max(0.0, wait_s if left is None else min(wait_s, left))
    if not semaphore.acquire(timeout=wait):
        raise (errors or Errors()).timeout(
            f"{name}: no free connection slot to the endpoint within {wait:.3g} s "
            "(its max_concurrency requests are all in flight)"
        )
    try:
        yield
    finally:
        semaphore.release()


def send(
    client: httpx.Client,
    method: str,
    url: str,
    *,
    policy: RetryPolicy,
    name: str,
    errors: Errors | None = None,
    json: Any = None,
    on_attempt: Callable[[int], None] | None = None,
    on_wait: Callable[[float], None] | None = None,
) -> httpx.Response:
    """Send one request with bounded retries; return the first response below 300, body read.

    Raises `OutboundDenied` at once, `errors.rejected` for a 4xx other than 429,
    `errors.malformed` for a response refused by the transport (too large, compressed), and
    `errors.timeout` / `errors.unavailable` when attempts or time run out. Each attempt ends by
    its wall-clock deadline, body included (see `GuardedTransport`). Messages quote at most a
    short sanitised excerpt of an upstream body.
    """
    errors = errors or Errors()
    started = time.monotonic()
    ends = [
        t for t in (_deadline.get(), started + policy.total_s if policy.total_s else None) if t is not None
    ]
    until = min(ends) if ends else None
    last, timed_out, attempts = "no attempt was made", False, 0
    for attempt in range(policy.retries + 1):
        left = None if until is None else until - time.monotonic()
        if left is not None and left <= 0:
            timed_out = True
            last = "the call's deadline passed"
            break
        attempts += 1
        if on_attempt is not None:
            on_attempt(attempt)
        retry_after: float | None = None
        timeout = _capped_timeout(client.timeout, left)
        wire = _wire_until.set(_attempt_until(client.timeout, until))
        try:
            resp = client.request(method, url, json=json, timeout=timeout)
        except OutboundDenied:
            raise  # a decision, not a fault: the same URL is refused every time
        except ResponseRefused as e:
            raise errors.malformed(f"{name}: {method} {url}: {e}") from None
        except httpx.TimeoutException as e:
            timed_out = True
            last = (
                f"timed out ({type(e).__name__}, connect {timeout.connect:g}s / read {timeout.read:g}s,"
                " wall clock for the whole response)"
            )
        except httpx.TransportError as e:
            timed_out, last = False, f"cannot reach the endpoint: connection failed ({type(e).__name__})"
        else:
            if resp.status_code < 300:
                return resp
            snippet = excerpt(resp.text)
            if resp.status_code not in RETRY_STATUSES:
                raise errors.rejected(
                    f"{name}: {method} {url} was rejected with HTTP {resp.status_code}: {snippet}"
                )
            timed_out, last = resp.status_code == 504, f"HTTP {resp.status_code}: {snippet}"
            after = parse_retry_after(resp.headers.get("retry-after"))
            if after is not None:
                retry_after = min(after, policy.retry_after_max_s)
        finally:
            _wire_until.reset(wire)
        if attempt == policy.retries:
            break
        wait = policy.backoff(attempt) if retry_after is None else retry_after
        if until is not None and time.monotonic() + wait >= until:
            last += f"; no time left for a retry within the deadline ({until - started:.1f} s)"
            break
        if on_wait is not None:
            on_wait(wait)
        time.sleep(wait)
    cls = errors.timeout if timed_out else errors.unavailable
    plural = "s" if attempts != 1 else ""
    raise cls(f"{name}: {method} {url} failed after {attempts} attempt{plural}; last: {last}")


__all__ = [
    "DEFAULT_MAX_RESPONSE_BYTES",
    "MAX_RETRIES",
    "RETRY_STATUSES",
    "CappedStream",
    "DeadlineBackend",
    "DeadlineStream",
    "Errors",
    "GuardedTransport",
    "ResponseRefused",
    "ResponseTooLarge",
    "RetryPolicy",
    "deadline",
    "guarded",
    "install_backend",
    "parse_json",
    "parse_retry_after",
    "remaining",
    "reset_deadline",
    "send",
    "set_deadline",
    "slot",
    "token_count",
]
