"""Security layer: API keys with scopes, per-key rate limits, request limits, and the outbound URL policy.

`install(app, settings)` is called by `app.main.create_app`. It

* sets `app.state.outbound_transport` to a deny-by-default `PolicyTransport` (allow-list from
  `CACE_OUTBOUND_ALLOW`), which the runtime hands to every classifier and LLM client, so no
  user-supplied URL reaches loopback, the cluster network or cloud metadata unless listed;
* adds the limits middleware (`app.limits`): body size 413, in-flight cap 503, timeout 504;
* adds authentication and rate limiting, and the `/v1/keys` admin routes.

Auth is off in the embedded setup (a local tool on 127.0.0.1) and turns on as soon as a key
exists (created through `/v1/keys`, `python -m app.security create-key`, or listed in
`CACE_API_KEYS_FILE`), or when `CACE_AUTH_ENABLED=true`. Keys are 256-bit random tokens, so
storing their SHA-256 is enough: there is nothing to brute-force, and a lookup is one indexed
query. Rate limits are token buckets per key (per client address while auth is off), in
each replica's memory by default, or shared by all replicas through Redis when
`CACE_RATE_LIMIT_REDIS_URL` is set (`app.ratelimit`).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import secrets
import threading
import time
import uuid
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from fastapi import APIRouter, FastAPI, Request
from pydantic import BaseModel, Field

from app.limits import (
    ASGIApp,
    BodyLimitMiddleware,
    InflightLimitMiddleware,
    Receive,
    Scope,
    Send,
    TimeoutMiddleware,
    _header,
    send_problem,
)
from app.problems import ApiError, problem_response
from app.ratelimit import RateLimiter, build_rate_limiter
from app.routes.common import problems
from app.settings import Settings
from explainers.net import OutboundDenied, OutboundPolicy, PolicyTransport

SCOPES = ("explain", "admin")
KEY_PREFIX = "cace_"
PUBLIC_PATHS = frozenset({"/healthz", "/readyz", "/metrics", "/docs", "/docs/oauth2-redirect", "/redoc",
                          "/openapi.json"})
ADMIN_COLLECTIONS = ("/v1/classifiers", "/v1/llms", "/v1/domains")


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def required_scope(method: str, path: str) -> str | None:
    """The scope a request needs; None for public endpoints (probes, metrics, the API docs)."""
    if path in PUBLIC_PATHS or path == "/ui" or path.startswith("/ui/"):  # the UI page and its assets
        return None
    if path == "/v1/keys" or path.startswith("/v1/keys/"):
        return "admin"
    if method not in ("GET", "HEAD", "OPTIONS") and path.startswith(ADMIN_COLLECTIONS):
        return "admin"
    return "explain"


@dataclass
class KeyRecord:
    id: str
    name: str
    scopes: list[str]
    rate_per_s: float | None
    created_at: float
    revoked_at: float | None = None
    source: str = "store"

    def allows(self, scope: str) -> bool:
        return scope in self.scopes or "admin" in self.scopes

    def public(self) -> dict[str, Any]:
        return asdict(self)


class KeyStore:
    """Hashed API keys in the service's SQL store (shared by replicas), plus read-only keys from a file.

    The file (`CACE_API_KEYS_FILE`, e.g. a mounted Kubernetes Secret) is a JSON list of
    ``{"name", "sha256", "scopes", "rate_per_s"?}``; it never holds plaintext keys.
    """

    CACHE_S = 2.0

    def __init__(self, engine: sa.Engine, prefix: str = "cace_", keys_file: Path | None = None,
                 metadata: sa.MetaData | None = None) -> None:
        self.engine = engine
        # On the service store's own MetaData when given, so `Store.drop_all()` removes this table too.
        md = metadata if metadata is not None else sa.MetaData()
        self.table = sa.Table(
            f"{prefix}api_keys", md,
            sa.Column("id", sa.String(32), primary_key=True),
            sa.Column("hash", sa.String(64), nullable=False, unique=True),
            sa.Column("name", sa.String(128), nullable=False),
            sa.Column("scopes", sa.String(128), nullable=False),
            sa.Column("rate_per_s", sa.Float, nullable=True),
            sa.Column("created_at", sa.Float, nullable=False),
            sa.Column("revoked_at", sa.Float, nullable=True),
            extend_existing=True,
        )
        self.table.create(engine, checkfirst=True)
        self.file_keys: dict[str, KeyRecord] = self._read_file(keys_file) if keys_file else {}
        self._lock = threading.Lock()
        self._cache: dict[str, tuple[float, KeyRecord | None]] = {}
        self._active: tuple[float, int] = (-math.inf, 0)

    @staticmethod
    def _read_file(path: Path) -> dict[str, KeyRecord]:
        out: dict[str, KeyRecord] = {}
        for i, e in enumerate(json.loads(Path(path).read_text())):
            digest = str(e["sha256"]).lower()
            if len(digest) != 64:
                raise ValueError(f"{path}: entry {i} needs a 64-hex-digit sha256 of the key")
            scopes = [s for s in e.get("scopes", ["explain"]) if s in SCOPES]
            out[digest] = KeyRecord(id=e.get("id") or f"file-{digest[:12]}", name=e.get("name", f"file-{i}"),
                                    scopes=scopes, rate_per_s=e.get("rate_per_s"), created_at=0.0, source="file")
        return out

    def _row(self, r: Any) -> KeyRecord:
        return KeyRecord(id=r.id, name=r.name, scopes=r.scopes.split(","), rate_per_s=r.rate_per_s,
                         created_at=r.created_at, revoked_at=r.revoked_at)

    def create(self, name: str, scopes: list[str], rate_per_s: float | None = None) -> tuple[KeyRecord, str]:
        """Make a key; the plaintext is returned once and never stored."""
        bad = [s for s in scopes if s not in SCOPES]
        if bad or not scopes:
            raise ValueError(f"scopes must be a non-empty subset of {SCOPES}, got {scopes}")
        plain = KEY_PREFIX + secrets.token_urlsafe(32)
        rec = KeyRecord(id=uuid.uuid4().hex[:16], name=name, scopes=sorted(set(scopes)), rate_per_s=rate_per_s,
                        created_at=time.time())
        with self.engine.begin() as c:
            c.execute(self.table.insert().values(id=rec.id, hash=hash_key(plain), name=name,
                                                 scopes=",".join(rec.scopes), rate_per_s=rate_per_s,
                                                 created_at=rec.created_at))
        self._invalidate()
        return rec, plain

    def revoke(self, key_id: str) -> bool:
        with self.engine.begin() as c:
            n = c.execute(self.table.update().where(self.table.c.id == key_id, self.table.c.revoked_at.is_(None))
                          .values(revoked_at=time.time())).rowcount
        self._invalidate()
        return bool(n)

    def list(self) -> list[KeyRecord]:
        with self.engine.connect() as c:
            rows = c.execute(self.table.select().order_by(self.table.c.created_at)).fetchall()
        return list(self.file_keys.values()) + [self._row(r) for r in rows]

    def lookup(self, plain: str) -> KeyRecord | None:
        """The active key for a presented token, or None. Cached briefly so a request costs no query."""
        digest = hash_key(plain)
        if digest in self.file_keys:
            return self.file_keys[digest]
        now = time.monotonic()
        with self._lock:
            hit = self._cache.get(digest)
        if hit and now - hit[0] < self.CACHE_S:
            return hit[1]
        with self.engine.connect() as c:
            r = c.execute(self.table.select().where(self.table.c.hash == digest,
                                                    self.table.c.revoked_at.is_(None))).first()
        rec = self._row(r) if r is not None else None
        with self._lock:
            if len(self._cache) > 10000:
                self._cache.clear()
            self._cache[digest] = (now, rec)
        return rec

    def active_count(self) -> int:
        now = time.monotonic()
        if now - self._active[0] < self.CACHE_S:
            return self._active[1]
        with self.engine.connect() as c:
            n = c.execute(sa.select(sa.func.count()).select_from(self.table)
                          .where(self.table.c.revoked_at.is_(None))).scalar_one()
        self._active = (now, int(n) + len(self.file_keys))
        return self._active[1]

    def _invalidate(self) -> None:
        with self._lock:
            self._cache.clear()
        self._active = (-math.inf, 0)


def presented_key(scope: Scope) -> str | None:
    auth = _header(scope, b"authorization")
    if auth and auth[:7].lower() == "bearer ":
        return auth[7:].strip() or None
    return _header(scope, b"x-api-key")


class AuthMiddleware:
    """401/403 by key and scope, then 429 + Retry-After from the key's token bucket."""

    def __init__(self, app: ASGIApp, keys: KeyStore, buckets: RateLimiter, always_on: bool,
                 anonymous_rate: float = 0.0) -> None:
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
        if self.enabled():
            token = presented_key(scope)
            rec = self.keys.lookup(token) if token else None
            if rec is None:
                detail = "missing API key" if not token else "unknown or revoked API key"
                await send_problem(send, 401, "Unauthorized", detail + " (send Authorization: Bearer <key>)",
                                   kind="unauthorized", path=path, headers=[("WWW-Authenticate", "Bearer")])
                return
            if not rec.allows(need):
                await send_problem(send, 403, "Forbidden", f"key {rec.id!r} lacks the {need!r} scope",
                                   kind="forbidden", path=path)
                return
            state["api_key_id"] = rec.id
            identity, rate = f"key:{rec.id}", rec.rate_per_s
        else:
            client = scope.get("client") or ("unknown", 0)
            identity, rate = f"ip:{client[0]}", self.anonymous_rate
        wait = self.buckets.take(identity, rate)
        if wait > 0:
            await send_problem(send, 429, "Too many requests", f"rate limit exceeded for {identity.split(':')[0]}; "
                               f"retry in {wait:.2f} s", kind="rate-limited", path=path,
                               headers=[("Retry-After", str(max(1, math.ceil(wait))))])
            return
        await self.app(scope, receive, send)


class KeyCreate(BaseModel):
    name: str = Field(min_length=1, max_length=128, examples=["batch-jobs"])
    scopes: list[str] = Field(default_factory=lambda: ["explain"], min_length=1, examples=[["explain"]])
    rate_limit_per_s: float | None = Field(None, gt=0, le=100000, description="Override the default rate limit.")


class KeyOut(BaseModel):
    id: str
    name: str
    scopes: list[str]
    rate_per_s: float | None
    created_at: float
    revoked_at: float | None = None
    source: str = "store"


class KeyCreated(KeyOut):
    key: str = Field(description="The API key. Shown once; only its SHA-256 is stored.")


def keys_router(store: KeyStore) -> APIRouter:
    router = APIRouter(tags=["keys"])

    @router.post("/v1/keys", operation_id="create_key", response_model=KeyCreated, status_code=201,
                 responses=problems(401, 403, 422, 429))
    def create_key(body: KeyCreate) -> dict[str, Any]:
        """Create an API key (admin scope). The plaintext key is in this response only."""
        try:
            rec, plain = store.create(body.name, body.scopes, body.rate_limit_per_s)
        except ValueError as e:
            raise ApiError(422, "Request validation failed", f"body.scopes: {e}", kind="validation",
                           errors=[{"field": "body.scopes", "message": str(e)}]) from e
        return {**rec.public(), "key": plain}

    @router.get("/v1/keys", operation_id="list_keys", response_model=list[KeyOut], responses=problems(401, 403, 429))
    def list_keys() -> list[dict[str, Any]]:
        """List keys (never their secrets)."""
        return [k.public() for k in store.list()]

    @router.delete("/v1/keys/{key_id}", operation_id="revoke_key", status_code=204,
                   responses=problems(401, 403, 404, 422, 429))
    def revoke_key(key_id: str) -> None:
        """Revoke a key; it stops working within seconds on every replica."""
        if not store.revoke(key_id):
            raise ApiError(404, "Not found", f"no active stored key {key_id!r} (keys from a file are revoked by "
                                             "editing the file)", kind="not-found")

    return router


def outbound_transport(settings: Settings) -> PolicyTransport:
    """The deny-by-default transport every classifier and LLM client gets."""
    return PolicyTransport(OutboundPolicy.from_allow(settings.outbound_allow))


def _key_store(app: FastAPI, settings: Settings) -> KeyStore:
    """Keys live in the service's store (shared by replicas), or in the job store URL's database."""
    store = getattr(getattr(app.state, "runtime", None), "store", None)
    if store is not None:
        return KeyStore(store.engine, store.prefix, settings.api_keys_file, getattr(store, "metadata", None))
    return KeyStore(sa.create_engine(settings.job_store_url), getattr(settings, "table_prefix", "cace_"),
                    settings.api_keys_file)


def document_problem_validation(app: FastAPI) -> None:
    """Make the OpenAPI spec say what the service sends for 422: problem+json, not FastAPI's default.

    FastAPI documents every validation error as `application/json` HTTPValidationError, but
    `app.problems` answers them as RFC 7807 documents; a client generated from the spec (and
    schemathesis) must see the real shape.
    """
    original = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema:
            return app.openapi_schema
        spec = original()
        if "Problem" not in spec.get("components", {}).get("schemas", {}):
            return spec
        problem = {"application/problem+json": {"schema": {"$ref": "#/components/schemas/Problem"}}}
        for item in spec.get("paths", {}).values():
            for op in item.values():
                resp = op.get("responses", {}).get("422") if isinstance(op, dict) else None
                if resp and "HTTPValidationError" in json.dumps(resp.get("content", {})):
                    resp["content"] = problem
        app.openapi_schema = spec
        return spec

    app.openapi = openapi  # type: ignore[method-assign]


def install(app: FastAPI, settings: Settings) -> None:
    """Wire the security layer into a FastAPI app (see the module docstring)."""
    document_problem_validation(app)
    app.state.outbound_policy = OutboundPolicy.from_allow(settings.outbound_allow)
    app.state.outbound_transport = PolicyTransport(app.state.outbound_policy)
    keys = _key_store(app, settings)
    app.state.api_keys = keys
    app.include_router(keys_router(keys))
    if not any(getattr(r, "path", "") == "/v1/models/{name}:explain" for r in app.routes):
        from app.routes import kserve  # the KServe V1 data plane for the explainer slot

        app.include_router(kserve.router)

    @app.exception_handler(OutboundDenied)
    async def _denied(request: Request, exc: OutboundDenied) -> Any:
        return problem_response(request, 403, "Outbound URL denied", f"{exc} (allow-list it with CACE_OUTBOUND_ALLOW)",
                                kind="outbound-denied")

    # add_middleware puts each new layer outside the previous: the order below runs
    # body limit -> in-flight cap -> auth + rate limit -> timeout -> routes.
    app.add_middleware(TimeoutMiddleware, timeout_s=settings.request_timeout_s)
    buckets = build_rate_limiter(settings.rate_limit_per_s, settings.rate_limit_burst, settings.rate_limit_redis_url)
    app.add_middleware(AuthMiddleware, keys=keys, buckets=buckets,
                       always_on=settings.auth_enabled, anonymous_rate=settings.rate_limit_anonymous_per_s)
    app.add_middleware(InflightLimitMiddleware, max_inflight=settings.max_inflight)
    app.add_middleware(BodyLimitMiddleware, max_bytes=settings.max_body_bytes)


def main(argv: list[str] | None = None) -> int:
    """`python -m app.security create-key|list-keys|revoke-key|hash-key`: bootstrap keys without the API."""
    ap = argparse.ArgumentParser(prog="python -m app.security")
    sub = ap.add_subparsers(dest="cmd", required=True)
    c = sub.add_parser("create-key")
    c.add_argument("--name", required=True)
    c.add_argument("--scopes", default="explain", help="comma-separated: explain,admin")
    c.add_argument("--rate", type=float, default=None)
    sub.add_parser("list-keys")
    r = sub.add_parser("revoke-key")
    r.add_argument("id")
    h = sub.add_parser("hash-key", help="print the sha256 of a key for CACE_API_KEYS_FILE")
    h.add_argument("key")
    args = ap.parse_args(argv)
    if args.cmd == "hash-key":
        print(hash_key(args.key))
        return 0
    settings = Settings()
    Path(settings.data_dir).mkdir(parents=True, exist_ok=True)
    store = KeyStore(sa.create_engine(settings.job_store_url), settings.table_prefix, settings.api_keys_file)
    if args.cmd == "create-key":
        rec, plain = store.create(args.name, [s.strip() for s in args.scopes.split(",") if s.strip()], args.rate)
        print(json.dumps({**rec.public(), "key": plain}))
    elif args.cmd == "list-keys":
        for k in store.list():
            print(json.dumps(k.public()))
    else:
        return 0 if store.revoke(args.id) else 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
