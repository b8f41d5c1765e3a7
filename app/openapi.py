"""OpenAPI adjustments: the spec must describe what the service really sends."""

from __future__ import annotations

import json
from typing import Any

from fastapi import FastAPI


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
