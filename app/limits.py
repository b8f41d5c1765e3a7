"""Request limits as ASGI middleware: body size (413), load shedding (503), per-request timeout (504).

Why middleware and not route code: these limits must hold for every route, including ones
added later, and must answer before any work starts (a 50 MB body is refused from its
Content-Length, a request over the in-flight cap is refused without touching the model).
Each refusal is a problem+json document that says which limit and its value, so a client
can tell a too-large request (fix the request) from an overloaded server (retry after
Retry-After). Field-level limits (text length, K, batch sizes) live in the request
schemas and routes, where the field's name is known.
"""

from __future__ import annotations

import json
import time
from collections.abc import Awaitable, Callable, Iterable, MutableMapping
from typing import Any

import anyio
from fastapi import HTTPException

from explainers import outbound

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

PROBLEM_TYPE = "https://cace.dev/problems/"
# Probes and scrapes must keep answering when the service is saturated.
EXEMPT_PATHS = frozenset({"/healthz", "/readyz", "/metrics"})


async def send_problem(
    send: Send,
    status: int,
    title: str,
    detail: str,
    *,
    kind: str,
    path: str = "",
    headers: Iterable[tuple[str, str]] = (),
    extra: dict[str, Any] | None = None,
) -> None:
    """Write a complete RFC 7807 response straight to the ASGI `send`."""
    body = {"type": PROBLEM_TYPE + kind, "title": title, "status": status, "detail": detail}
    if path:
        body["instance"] = path
    body.update(extra or {})
    raw = json.dumps(body).encode()
    hdrs = [(b"content-type", b"application/problem+json"), (b"content-length", str(len(raw)).encode())]
    hdrs += [(k.lower().encode(), v.encode()) for k, v in headers]
    await send({"type": "http.response.start", "status": status, "headers": hdrs})
    await send({"type": "http.response.body", "body": raw})


def header(scope: Scope, name: bytes) -> str | None:
    """A request header's value (the first one), or None."""
    for k, v in scope.get("headers", ()):
        if k.lower() == name:
            return v.decode("latin-1")
    return None


_header = header  # the old private name, for callers not yet moved


class Slots:
    """In-flight request slots, shared by the in-flight cap, the timeout and `/readyz`.

    A request holds a slot from admission until it ends. When it times out, the client gets
    its 504 and the slot is released at once; the route's thread (sync code cannot be
    cancelled) keeps running, and is tracked as *overdue* until it returns. Outbound calls end
    by the request's deadline (`explainers.outbound`), so overdue work should drain within
    moments; `/readyz` reports degraded while any is still running `grace_s` past its deadline.
    """

    def __init__(self, max_inflight: int, grace_s: float = 5.0) -> None:
        self.max_inflight = max_inflight
        self.grace_s = grace_s
        self._held: set[int] = set()
        self._overdue: dict[int, float] = {}  # token -> monotonic deadline it passed
        self._next = 0
        self.shed = 0

    @property
    def inflight(self) -> int:
        return len(self._held)

    def acquire(self) -> int | None:
        """A slot token, or None when the cap is reached (the caller sheds the request)."""
        if self.max_inflight > 0 and len(self._held) >= self.max_inflight:
            self.shed += 1
            return None
        self._next += 1
        self._held.add(self._next)
        return self._next

    def abandon(self, token: int | None, deadline: float) -> None:
        """The request timed out: free its slot now, and watch its still-running work."""
        if token is not None and token in self._held:
            self._held.discard(token)
            self._overdue[token] = deadline

    def finish(self, token: int | None) -> None:
        if token is not None:
            self._held.discard(token)
            self._overdue.pop(token, None)

    def stuck(self) -> int:
        """Timed-out requests whose work still runs more than `grace_s` after their deadline."""
        now = time.monotonic()
        return sum(1 for d in list(self._overdue.values()) if now > d + self.grace_s)


class BodyTooLarge(HTTPException):
    """Raised from `receive` when a body without (or lying about) Content-Length grows past the limit.

    An HTTPException so that FastAPI's body reader re-raises it instead of turning it into a 400,
    and the app's problem handler renders it as 413.
    """

    def __init__(self, limit: int) -> None:
        super().__init__(413, f"request body exceeds {limit} bytes (CACE_MAX_BODY_BYTES)")


class BodyLimitMiddleware:
    """413 for bodies over `max_bytes`: from Content-Length up front, or while streaming."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or self.max_bytes <= 0:
            await self.app(scope, receive, send)
            return
        declared = _header(scope, b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
            await send_problem(
                send,
                413,
                "Request too large",
                f"request body is {declared} bytes; the limit is {self.max_bytes} (CACE_MAX_BODY_BYTES)",
                kind="request-too-large",
                path=scope.get("path", ""),
                extra={"limit_bytes": self.max_bytes},
            )
            return
        seen = 0

        async def counted() -> Message:
            nonlocal seen
            msg = await receive()
            if msg["type"] == "http.request":
                seen += len(msg.get("body", b""))
                if seen > self.max_bytes:
                    raise BodyTooLarge(self.max_bytes)
            return msg

        await self.app(scope, counted, send)


class InflightLimitMiddleware:
    """Shed load: when `max_inflight` requests are already running, answer 503 + Retry-After at once.

    Refusing immediately keeps latency bounded for the requests that are admitted; queueing
    them instead would turn overload into client timeouts.
    """

    def __init__(
        self, app: ASGIApp, max_inflight: int = 0, retry_after_s: int = 1, slots: Slots | None = None
    ) -> None:
        self.app = app
        self.slots = slots or Slots(max_inflight)
        self.max_inflight = self.slots.max_inflight
        self.retry_after_s = retry_after_s

    @property
    def inflight(self) -> int:
        return self.slots.inflight

    @property
    def shed(self) -> int:
        return self.slots.shed

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope.get("path") in EXEMPT_PATHS:
            await self.app(scope, receive, send)
            return
        token = self.slots.acquire()
        if token is None:
            await send_problem(
                send,
                503,
                "Service overloaded",
                f"{self.inflight} requests are in progress (limit {self.max_inflight}); retry later",
                kind="overloaded",
                path=scope.get("path", ""),
                headers=[("Retry-After", str(self.retry_after_s))],
            )
            return
        scope.setdefault("state", {})["cace_slot"] = (self.slots, token)
        try:
            await self.app(scope, receive, send)
        finally:
            self.slots.finish(token)


class TimeoutMiddleware:
    """504 when no response has started within `timeout_s`.

    The route runs in its own task; this middleware waits for its response to start, up to
    the deadline. Sync routes run in worker threads that cannot be cancelled, so on timeout the
    504 goes out at once, whatever the route sends later is dropped, and the request's in-flight
    slot is released (`Slots.abandon`; the still-running thread is watched as overdue). The same
    deadline is set for the route's outbound calls (`explainers.outbound.deadline`), so retries
    stop when the client has its answer. The deadline stops counting once the response starts,
    so a long streamed download is not cut off mid-body.
    """

    def __init__(self, app: ASGIApp, timeout_s: float) -> None:
        self.app = app
        self.timeout_s = timeout_s

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or self.timeout_s <= 0 or scope.get("path") in EXEMPT_PATHS:
            await self.app(scope, receive, send)
            return
        responded = anyio.Event()
        timed_out = False
        error: Exception | None = None

        async def guarded(msg: Message) -> None:
            if timed_out:
                return
            if msg["type"] == "http.response.start":
                responded.set()
            await send(msg)

        async def run() -> None:
            nonlocal error
            try:
                await self.app(scope, receive, guarded)
            except Exception as e:  # re-raised below, outside the task group, so it is not wrapped
                if not timed_out:
                    error = e
            finally:
                responded.set()

        deadline = time.monotonic() + self.timeout_s
        token = outbound.set_deadline(self.timeout_s)  # copied into the route's task and threads
        try:
            async with anyio.create_task_group() as tg:
                tg.start_soon(run)
                with anyio.move_on_after(self.timeout_s):
                    await responded.wait()
                if not responded.is_set():
                    timed_out = True
                    await send_problem(
                        send,
                        504,
                        "Request timed out",
                        f"no response within {self.timeout_s:g} s (CACE_REQUEST_TIMEOUT_S)",
                        kind="request-timeout",
                        path=scope.get("path", ""),
                        extra={"timeout_s": self.timeout_s},
                    )
                    slots, slot = scope.get("state", {}).get("cace_slot", (None, None))
                    if slots is not None:
                        slots.abandon(slot, deadline)
        finally:
            outbound.reset_deadline(token)
        if error is not None:
            raise error
