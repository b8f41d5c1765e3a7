"""RFC 7807 problem+json for every error the service returns.

Why one module: callers (and generated clients) must be able to rely on one error
shape: `type`, `title`, `status`, `detail`, plus `errors` naming each bad field for
validation failures. Library exceptions are mapped here, once: a classifier or LLM that
fails upstream is a 502 (504 on a timeout), a method whose resources this deployment
lacks is a 409, bad input is a 4xx that says which field, and only real bugs are 500s.
"""

from __future__ import annotations

import logging
import re
from typing import Any

import httpx
import sqlalchemy.exc
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field
from starlette.exceptions import HTTPException as StarletteHTTPException

from explainers.classifiers.base import ClassifierUnavailable
from explainers.errors import (
    MissingResource,
    OutboundDenied,
    UpstreamError,
    UpstreamMalformed,
    UpstreamRejected,
    UpstreamTimeout,
)

log = logging.getLogger("cace.errors")
PROBLEM = "application/problem+json"
TYPE_BASE = "https://cace.dev/problems/"


class FieldError(BaseModel):
    field: str = Field(description="Dotted path of the offending field, e.g. body.intervention.concept")
    message: str


class Problem(BaseModel):
    """An RFC 7807 problem document."""

    type: str = Field(examples=[TYPE_BASE + "validation"])
    title: str = Field(examples=["Request validation failed"])
    status: int = Field(examples=[422])
    detail: str = Field(examples=["body.intervention.concept: unknown concept 'price'"])
    instance: str | None = None
    errors: list[FieldError] | None = None


class ApiError(Exception):
    """Raise from a route to answer with a problem document."""

    def __init__(
        self,
        status: int,
        title: str,
        detail: str,
        *,
        kind: str | None = None,
        errors: list[dict[str, str]] | None = None,
        headers: dict[str, str] | None = None,
        extra: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(detail)
        self.status = status
        self.title = title
        self.detail = detail
        self.kind = kind or title.lower().replace(" ", "-")
        self.errors = errors
        self.headers = headers
        self.extra = extra or {}


def field_error(field: str, message: str, status: int = 422) -> ApiError:
    """A validation problem about one field (a check pydantic cannot express, e.g. against the schema)."""
    return ApiError(
        status,
        "Request validation failed",
        f"{field}: {message}",
        kind="validation",
        errors=[{"field": field, "message": message}],
    )


def validation_error(errors: list[Any], prefix: str = "") -> ApiError:
    """The 422 problem for pydantic errors (`exc.errors()`), each field named under `prefix`."""
    fields = [
        {
            "field": ".".join([*([prefix] if prefix else []), *map(str, e.get("loc", ()))]),
            "message": e.get("msg", ""),
        }
        for e in errors
    ]
    detail = "; ".join(f"{x['field']}: {x['message']}" for x in fields) or "invalid request"
    return ApiError(422, "Request validation failed", detail, kind="validation", errors=fields)


def not_found(what: str, name: str) -> ApiError:
    return ApiError(404, "Not found", f"{what} {name!r} does not exist", kind="not-found")


def problem_response(
    request: Request | None,
    status: int,
    title: str,
    detail: str,
    *,
    kind: str,
    errors: list[dict[str, str]] | None = None,
    headers: dict[str, str] | None = None,
    extra: dict[str, Any] | None = None,
) -> JSONResponse:
    body: dict[str, Any] = {"type": TYPE_BASE + kind, "title": title, "status": status, "detail": detail}
    if request is not None:
        body["instance"] = request.url.path
    if errors:
        body["errors"] = errors
    body.update(extra or {})
    return JSONResponse(body, status_code=status, media_type=PROBLEM, headers=headers)


# Longest upstream error text a problem detail carries (printable ASCII only): enough to say
# what failed, never enough to reflect an upstream body or a secret back to the caller.
DETAIL_CHARS = 300
_UNPRINTABLE = re.compile(r"[^\x20-\x7e]+")


def sanitized(text: str, limit: int = DETAIL_CHARS) -> str:
    clean = _UNPRINTABLE.sub(" ", text).strip()
    return clean if len(clean) <= limit else clean[:limit] + "..."


def upstream_error(exc: BaseException, what: str | None = None) -> ApiError:
    """Map a failure of a called endpoint (classifier or LLM) to its problem, by class alone.

    Denied -> 403; timeout -> 504; malformed, rejected or unavailable -> 502. A raw httpx
    error (a client that bypassed the retry path) is classified the same way.
    """
    what = what or getattr(exc, "what", None) or "upstream"
    name = what.upper() if what == "llm" else what.capitalize()
    detail = sanitized(f"{type(exc).__name__}: {exc}")
    if isinstance(exc, OutboundDenied):
        return ApiError(
            403,
            "Outbound URL denied",
            sanitized(f"{exc} (allow-list it with CACE_OUTBOUND_ALLOW)"),
            kind="outbound-denied",
        )
    if isinstance(exc, UpstreamTimeout | httpx.TimeoutException):
        return ApiError(504, f"{name} timed out", detail, kind=f"{what}-timeout")
    if isinstance(exc, UpstreamRejected):
        return ApiError(502, f"{name} rejected the request", detail, kind=f"{what}-rejected")
    if isinstance(exc, UpstreamMalformed):
        return ApiError(502, f"{name} answered malformed output", detail, kind=f"{what}-malformed")
    return ApiError(502, f"{name} unavailable", detail, kind=f"{what}-unavailable")


# Errors that mean the job store (database) cannot be reached right now.
STORE_DOWN = (sqlalchemy.exc.OperationalError, sqlalchemy.exc.InterfaceError)
STORE_DOWN_DETAIL = "the job store cannot be reached: this request was not carried out; retry shortly"


def is_llm_error(exc: BaseException) -> bool:
    """An upstream error raised by an LLM backend (by class: `UpstreamError` with what == "llm")."""
    return isinstance(exc, UpstreamError) and getattr(exc, "what", None) == "llm"


def install(app: FastAPI) -> None:
    """Register the handlers that turn every exception into problem+json."""

    @app.exception_handler(ApiError)
    async def _api(request: Request, exc: ApiError) -> JSONResponse:
        return problem_response(
            request,
            exc.status,
            exc.title,
            exc.detail,
            kind=exc.kind,
            errors=exc.errors,
            headers=exc.headers,
            extra=exc.extra,
        )

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> JSONResponse:
        e = validation_error(list(exc.errors()))
        return problem_response(request, e.status, e.title, e.detail, kind=e.kind, errors=e.errors)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        title = {
            404: "Not found",
            405: "Method not allowed",
            413: "Request too large",
            401: "Unauthorized",
            403: "Forbidden",
            429: "Too many requests",
        }.get(exc.status_code, "HTTP error")
        return problem_response(
            request,
            exc.status_code,
            title,
            str(exc.detail),
            kind=title.lower().replace(" ", "-"),
            headers=getattr(exc, "headers", None),
        )

    @app.exception_handler(MissingResource)
    async def _missing(request: Request, exc: MissingResource) -> JSONResponse:
        return problem_response(request, 409, "Missing resource", str(exc), kind="missing-resource")

    # Every upstream failure (classifier or LLM, denial included) is mapped here, by class. These
    # handlers are exception handlers (not the catch-all), so the connection stays open and the
    # metrics see the status the client saw.
    @app.exception_handler(UpstreamError)
    async def _upstream(request: Request, exc: UpstreamError) -> JSONResponse:
        e = upstream_error(exc)
        log.warning("upstream error on %s: %s", request.url.path, e.detail)
        return problem_response(request, e.status, e.title, e.detail, kind=e.kind)

    @app.exception_handler(httpx.HTTPError)
    async def _httpx(request: Request, exc: httpx.HTTPError) -> JSONResponse:
        e = upstream_error(exc, "upstream")
        return problem_response(request, e.status, e.title, e.detail, kind=e.kind)

    # The job store (database) unreachable: a passing outage, not a bug; say so and when to retry.
    @app.exception_handler(sqlalchemy.exc.OperationalError)
    @app.exception_handler(sqlalchemy.exc.InterfaceError)
    async def _store_down(request: Request, exc: Exception) -> JSONResponse:
        log.warning("job store unreachable on %s: %s", request.url.path, type(exc).__name__)
        return problem_response(
            request, 503, "Store unavailable", STORE_DOWN_DETAIL, kind="store-unavailable",
            headers={"Retry-After": "5"},
        )  # fmt: skip

    @app.exception_handler(Exception)
    async def _bug(request: Request, exc: Exception) -> JSONResponse:
        # A bug: the traceback goes to the log under the request id; the client gets no exception
        # text (it can hold SQL, paths or data), only the id to quote.
        log.exception("unhandled error on %s", request.url.path)
        rid = request.scope.get("state", {}).get("request_id")
        return problem_response(
            request,
            500,
            "Internal error",
            "the server failed to handle this request" + (f" (request id {rid})" if rid else ""),
            kind="internal",
        )


__all__ = [
    "ApiError",
    "ClassifierUnavailable",
    "Problem",
    "field_error",
    "install",
    "not_found",
    "upstream_error",
]
