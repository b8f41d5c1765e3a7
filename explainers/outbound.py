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
  (`OutboundDenied`) and never another 4xx: the same request gets the same answer.
"""

from __future__ import annotations

import contextlib
import contextvars
import email.utils
import random
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import httpx

from explainers.errors import (
    OutboundDenied,
    UpstreamError,
    UpstreamRejected,
    UpstreamTimeout,
    UpstreamUnavailable,
    excerpt,
)

# The documented maximum of retries per call (attempts = retries + 1).
MAX_RETRIES = 5
RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})

# Monotonic time by which the work on the current request must be done (None: no request deadline).
_deadline: contextvars.ContextVar[float | None] = contextvars.ContextVar(
    "cace_outbound_deadline", default=None
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


def _capped_timeout(base: httpx.Timeout, left: float | None) -> httpx.Timeout:
    if left is None:
        return base

    def cap(v: float | None) -> float:
        return max(0.001, left if v is None else min(v, left))

    return httpx.Timeout(
        connect=cap(base.connect), read=cap(base.read), write=cap(base.write), pool=cap(base.pool)
    )


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
    """Send one request with bounded retries; return the first response below 300.

    Raises `OutboundDenied` at once, `errors.rejected` for a 4xx other than 429, and
    `errors.timeout` / `errors.unavailable` when attempts or time run out. Messages quote at
    most a short sanitised excerpt of an upstream body.
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
        try:
            resp = client.request(method, url, json=json, timeout=timeout)
        except OutboundDenied:
            raise  # a decision, not a fault: the same URL is refused every time
        except httpx.TimeoutException as e:
            timed_out = True
            last = f"timed out ({type(e).__name__}, connect {timeout.connect:g}s / read {timeout.read:g}s)"
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
    "MAX_RETRIES",
    "RETRY_STATUSES",
    "Errors",
    "RetryPolicy",
    "deadline",
    "parse_retry_after",
    "remaining",
    "reset_deadline",
    "send",
    "set_deadline",
]
