"""The OpenAPI spec as the service really answers, so generated clients work for every operation.

FastAPI's defaults describe two things differently from what the service does: upload fields
appear as `contentMediaType` strings (OpenAPI 3.1), which client generators such as
openapi-python-client turn into plain string parameters, and error responses are documented
as `application/json` (validation errors as FastAPI's HTTPValidationError) while the service
sends RFC 7807 `application/problem+json`. `install(app)` rewrites both, once, on first use, and
declares on every operation the problems its middleware can answer with (auth, rate limits,
body size, the in-flight cap, timeouts), so a route added anywhere is documented for them too.
"""

from __future__ import annotations

import json
import re
from typing import Any

from fastapi import FastAPI

PROBLEM_REF = {"$ref": "#/components/schemas/Problem"}


def binary_uploads(spec: dict[str, Any]) -> None:
    """Upload fields become `format: binary` strings, which generators map to a file type."""
    for schema in spec.get("components", {}).get("schemas", {}).values():
        for prop in schema.get("properties", {}).values():
            if (
                prop.get("type") == "string"
                and prop.pop("contentMediaType", None) == "application/octet-stream"
            ):
                prop["format"] = "binary"


def problem_responses(spec: dict[str, Any]) -> None:
    """Every 4xx/5xx is `application/problem+json` with the Problem schema, and nothing else."""
    for item in spec.get("paths", {}).values():
        for op in item.values():
            if not isinstance(op, dict):
                continue
            for code, resp in op.get("responses", {}).items():
                content = resp.get("content", {})
                is_error = str(code)[:1] in ("4", "5")
                if is_error and (
                    "application/problem+json" in content
                    or "HTTPValidationError" in json.dumps(content)
                    or content.get("application/json", {}).get("schema") == PROBLEM_REF
                ):
                    resp["content"] = {"application/problem+json": {"schema": PROBLEM_REF}}


# What every error a route can give means (the problem's `title` says more).
ERROR_TEXT = {
    401: "No API key, or an unknown or revoked one (auth on)",
    403: "The key lacks the scope this operation needs",
    404: "No such resource (or another key's job)",
    409: "Conflict or missing resource",
    413: "Request body too large (CACE_MAX_BODY_BYTES)",
    422: "Validation failed (the problem names the field)",
    429: "Rate limit or job queue full (Retry-After)",
    502: "Upstream classifier or LLM failed",
    503: "Overloaded: too many requests in flight (Retry-After)",
    504: "No response within CACE_REQUEST_TIMEOUT_S, or an upstream timed out",
}


def middleware_codes(method: str, path: str, op: dict[str, Any]) -> set[int]:
    """The codes the middleware (not the route) can answer this operation with.

    Read from the middleware's own rules, so a route added anywhere gets them: auth and rate
    limits (401/403/429) on every path that needs a scope, the in-flight cap and the timeout
    (503/504) on every path they guard, the body limit (413) and validation (422) wherever a
    body or a parameter is read, 404 wherever a path names a resource.
    """
    from app.auth.middleware import required_scope
    from app.limits import EXEMPT_PATHS

    codes: set[int] = set()
    concrete = re.sub(r"\{[^}]+\}", "x", path)
    if required_scope(method.upper(), concrete) is not None:
        codes |= {401, 403, 429}
    if path not in EXEMPT_PATHS:
        codes |= {503, 504}
    if "requestBody" in op:
        codes |= {413, 422}
    params = op.get("parameters", [])
    if params:
        codes.add(422)
    if any(p.get("in") == "path" for p in params):
        codes.add(404)
    return codes


def standard_responses(spec: dict[str, Any]) -> None:
    """Declare, on every operation, each problem response the middleware can give."""
    for path, item in spec.get("paths", {}).items():
        for method, op in item.items():
            if not isinstance(op, dict) or "responses" not in op:
                continue
            for code in sorted(middleware_codes(method, path, op)):
                op["responses"].setdefault(
                    str(code),
                    {
                        "description": ERROR_TEXT[code],
                        "content": {"application/problem+json": {"schema": PROBLEM_REF}},
                    },
                )


def install(app: FastAPI) -> None:
    original = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema:
            return app.openapi_schema
        spec = original()
        binary_uploads(spec)
        if "Problem" in spec.get("components", {}).get("schemas", {}):
            standard_responses(spec)
            problem_responses(spec)
        app.openapi_schema = spec
        return spec

    app.openapi = openapi  # type: ignore[method-assign]
