"""The OpenAPI spec as the service really answers, so generated clients work for every operation.

FastAPI's defaults describe two things differently from what the service does: upload fields
appear as `contentMediaType` strings (OpenAPI 3.1), which client generators such as
openapi-python-client turn into plain string parameters, and error responses are documented
as `application/json` (validation errors as FastAPI's HTTPValidationError) while the service
sends RFC 7807 `application/problem+json`. `install(app)` rewrites both, once, on first use.
"""

from __future__ import annotations

import json
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


def install(app: FastAPI) -> None:
    original = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema:
            return app.openapi_schema
        spec = original()
        binary_uploads(spec)
        if "Problem" in spec.get("components", {}).get("schemas", {}):
            problem_responses(spec)
        app.openapi_schema = spec
        return spec

    app.openapi = openapi  # type: ignore[method-assign]
