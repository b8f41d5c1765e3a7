"""RFC 7807 problem+json for every error the service returns.

Why one module: callers (and generated clients) must be able to rely on one error
shape: `type`, `title`, `status`, `detail`, plus `errors` naming each bad field for
validation failures. Library exceptions are mapped here, once: a classifier or LLM that
fails upstream is a 502 (504 on a timeout), a method whose resources this deployment
lacks is a 409, bad input is a 4xx that says which field, and only real bugs are 500s.
"""

from __future__ import annotations

import logging
from typing import Any

import httpx
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field
from starlette.exceptions import HTTPException as StarletteHTTPException

from explainers.classifiers.base import ClassifierError, ClassifierUnavailable, MalformedResponse
from explainers.registry import MissingResource

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

    def __init__(self, status: int, title: str, detail: str, *, kind: str | None = None,
                 errors: list[dict[str, str]] | None = None, headers: dict[str, str] | None = None,
                 extra: dict[str, Any] | None = None) -> None:
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
    return ApiError(status, "Request validation failed", f"{field}: {message}", kind="validation",
                    errors=[{"field": field, "message": message}])


def not_found(what: str, name: str) -> ApiError:
    return ApiError(404, "Not found", f"{what} {name!r} does not exist", kind="not-found")


def problem_response(request: Request | None, status: int, title: str, detail: str, *, kind: str,
                     errors: list[dict[str, str]] | None = None, headers: dict[str, str] | None = None,
                     extra: dict[str, Any] | None = None) -> JSONResponse:
    body: dict[str, Any] = {"type": TYPE_BASE + kind, "title": title, "status": status, "detail": detail}
    if request is not None:
        body["instance"] = request.url.path
    if errors:
        body["errors"] = errors
    body.update(extra or {})
    return JSONResponse(body, status_code=status, media_type=PROBLEM, headers=headers)


def upstream_error(exc: BaseException, what: str = "classifier") -> ApiError:
    """Map a failure of a called endpoint (classifier or LLM) to 502/504."""
    text = f"{type(exc).__name__}: {exc}"
    timeout = isinstance(exc, httpx.TimeoutException) or "timeout" in text.lower() or "timed out" in text.lower()
    if timeout:
        return ApiError(504, f"{what.capitalize()} timed out", text, kind=f"{what}-timeout")
    if isinstance(exc, MalformedResponse):
        return ApiError(502, f"{what.capitalize()} answered malformed output", text, kind=f"{what}-malformed")
    return ApiError(502, f"{what.capitalize()} unavailable", text, kind=f"{what}-unavailable")


def is_llm_error(exc: BaseException) -> bool:
    """Exceptions raised by LLM backends (explainers.generation), whatever their class names."""
    mod = type(exc).__module__ or ""
    return mod.startswith("explainers.generation") and not isinstance(exc, ValueError)


def install(app: FastAPI) -> None:
    """Register the handlers that turn every exception into problem+json."""

    @app.exception_handler(ApiError)
    async def _api(request: Request, exc: ApiError) -> JSONResponse:
        return problem_response(request, exc.status, exc.title, exc.detail, kind=exc.kind, errors=exc.errors,
                                headers=exc.headers, extra=exc.extra)

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = [{"field": ".".join(str(p) for p in e.get("loc", ())), "message": e.get("msg", "")}
                  for e in exc.errors()]
        detail = "; ".join(f"{e['field']}: {e['message']}" for e in errors) or "invalid request"
        return problem_response(request, 422, "Request validation failed", detail, kind="validation", errors=errors)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        title = {404: "Not found", 405: "Method not allowed", 413: "Request too large",
                 401: "Unauthorized", 403: "Forbidden", 429: "Too many requests"}.get(exc.status_code, "HTTP error")
        return problem_response(request, exc.status_code, title, str(exc.detail), kind=title.lower().replace(" ", "-"),
                                headers=getattr(exc, "headers", None))

    @app.exception_handler(MissingResource)
    async def _missing(request: Request, exc: MissingResource) -> JSONResponse:
        return problem_response(request, 409, "Missing resource", str(exc), kind="missing-resource")

    @app.exception_handler(ClassifierError)
    async def _classifier(request: Request, exc: ClassifierError) -> JSONResponse:
        e = upstream_error(exc, "classifier")
        return problem_response(request, e.status, e.title, e.detail, kind=e.kind)

    @app.exception_handler(httpx.HTTPError)
    async def _httpx(request: Request, exc: httpx.HTTPError) -> JSONResponse:
        e = upstream_error(exc, "upstream")
        return problem_response(request, e.status, e.title, e.detail, kind=e.kind)

    @app.exception_handler(Exception)
    async def _bug(request: Request, exc: Exception) -> JSONResponse:
        if is_llm_error(exc):
            e = upstream_error(exc, "llm")
            return problem_response(request, e.status, e.title, e.detail, kind=e.kind)
        log.exception("unhandled error on %s", request.url.path)
        return problem_response(request, 500, "Internal error", f"{type(exc).__name__}: {exc}", kind="internal")


__all__ = ["ApiError", "ClassifierUnavailable", "Problem", "field_error", "install", "not_found", "upstream_error"]
