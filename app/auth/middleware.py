"""Authentication and rate limiting as ASGI middleware: 401/403 by key and scope, then 429.

Auth is off while no key exists (the embedded setup is a local tool on 127.0.0.1) and on as
soon as one does (stored, from the keys file, or `CACE_ADMIN_KEY`), or when
`CACE_AUTH_ENABLED=true`. With auth off, `/v1/keys` is refused: the first admin key is never
minted anonymously (bootstrap it with `python -m app.security create-key`, `CACE_ADMIN_KEY`
or `CACE_API_KEYS_FILE`). The key's id and scopes go into the request state, where the job
routes read the owner from.
"""

from __future__ import annotations

import math

from app.auth.keys import KeyStore
from app.limits import ASGIApp, Receive, Scope, Send, header, send_problem
from app.problems import STORE_DOWN, STORE_DOWN_DETAIL
from app.ratelimit import RateLimiter

PUBLIC_PATHS = frozenset(
    {"/healthz", "/readyz", "/metrics", "/docs", "/docs/oauth2-redirect", "/redoc", "/openapi.json"}
)
ADMIN_COLLECTIONS = ("/v1/classifiers", "/v1/llms", "/v1/domains")
BOOTSTRAP_HINT = (
    "create the first admin key with `python -m app.security create-key --name admin --scopes admin`, "
    "or set CACE_ADMIN_KEY or CACE_API_KEYS_FILE"
)


def required_scope(method: str, path: str) -> str | None:
    """The scope a request needs; None for public endpoints (probes, metrics, the API docs)."""
    if path in PUBLIC_PATHS or path == "/ui" or path.startswith("/ui/"):  # the UI page and its assets
        return None
    if path == "/v1/keys" or path.startswith("/v1/keys/"):
        return "admin"
    if method not in ("GET", "HEAD", "OPTIONS") and path.startswith(ADMIN_COLLECTIONS):
        return "admin"
    return "explain"


def presented_key(scope: Scope) -> str | None:
    auth = header(scope, b"authorization")
    if auth and auth[:7].lower() == "bearer ":
        return auth[7:].strip() or None
    return header(scope, b"x-api-key")


class AuthMiddleware:
    """401/403 by key and scope, then 429 + Retry-After from the key's token bucket."""

    def __init__(
        self, app: ASGIApp, keys: KeyStore, buckets: RateLimiter, always_on: bool, anonymous_rate: float = 0.0
    ) -> None:
        self.app = app
        self.keys = keys
        self.buckets = buckets
        self.always_on = always_on
        self.anonymous_rate = anonymous_rate

    def enabled(self) -> bool:
        return self.always_on or self.keys.active_count() > 0

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path = scope.get("path", "")
        need = required_scope(scope.get("method", "GET"), path)
        if need is None:
            await self.app(scope, receive, send)
            return
        state = scope.setdefault("state", {})
        identity: str
        rate: float | None = None
        token = presented_key(scope)
        try:
            enabled = self.enabled()
            rec = self.keys.lookup(token) if enabled and token else None
        except STORE_DOWN:
            # Keys live in the job store: while it is unreachable nobody can be checked (fail closed).
            await send_problem(
                send, 503, "Store unavailable", STORE_DOWN_DETAIL, kind="store-unavailable", path=path,
                headers=[("Retry-After", "5")],
            )  # fmt: skip
            return
        if enabled:
            if rec is None:
                detail = "missing API key" if not token else "unknown or revoked API key"
                await send_problem(
                    send,
                    401,
                    "Unauthorized",
                    detail + " (send Authorization: Bearer <key>)",
                    kind="unauthorized",
                    path=path,
                    headers=[("WWW-Authenticate", "Bearer")],
                )
                return
            if not rec.allows(need):
                await send_problem(
                    send,
                    403,
                    "Forbidden",
                    f"key {rec.id!r} lacks the {need!r} scope",
                    kind="forbidden",
                    path=path,
                )
                return
            state["api_key_id"] = rec.id
            state["api_key_admin"] = "admin" in rec.scopes
            identity, rate = f"key:{rec.id}", rec.rate_per_s
        else:
            if path == "/v1/keys" or path.startswith("/v1/keys/"):
                # Minting a key anonymously would make any caller admin.
                await send_problem(
                    send,
                    403,
                    "Forbidden",
                    f"no API key exists yet, so keys cannot be managed through the API; {BOOTSTRAP_HINT}",
                    kind="forbidden",
                    path=path,
                )
                return
            state["api_key_id"] = None
            state["api_key_admin"] = True  # auth off: a local tool, one user
            client = scope.get("client") or ("unknown", 0)
            identity, rate = f"ip:{client[0]}", self.anonymous_rate
        wait = self.buckets.take(identity, rate)
        if wait > 0:
            await send_problem(
                send,
                429,
                "Too many requests",
                f"rate limit exceeded for {identity.split(':')[0]}; retry in {wait:.2f} s",
                kind="rate-limited",
                path=path,
                headers=[("Retry-After", str(max(1, math.ceil(wait))))],
            )
            return
        await self.app(scope, receive, send)
