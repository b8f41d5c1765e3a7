"""Helpers every router uses: the runtime from app state, and documented error responses."""

from __future__ import annotations

import json
import re
from typing import Annotated, Any

from fastapi import Depends, Request

from app.problems import ApiError, Problem, field_error
from app.resources import Runtime
from app.schemas.types import unstorable


def runtime(request: Request) -> Runtime:
    return request.app.state.runtime


# A route's runtime: `rt: RuntimeDep` in its signature.
RuntimeDep = Annotated[Runtime, Depends(runtime)]


# A JSON escape of a UTF-16 surrogate: the only way a JSON body can carry one (raw UTF-8 cannot).
_SURROGATE_ESCAPE = re.compile(rb"\\u[dD][89a-fA-F][0-9a-fA-F]{2}")


def _unstorable_at(value: Any, path: str) -> str | None:
    """The path of the first string (key or value) holding a NUL or a lone surrogate, or None."""
    if isinstance(value, str):
        return path if unstorable(value) else None
    if isinstance(value, list):
        for i, item in enumerate(value):
            if (found := _unstorable_at(item, f"{path}.{i}")) is not None:
                return found
    if isinstance(value, dict):
        for key, item in value.items():
            if unstorable(key):
                return path
            if (found := _unstorable_at(item, f"{path}.{key}")) is not None:
                return found
    return None


async def storable_json_body(request: Request) -> None:
    """Refuse a JSON body holding a lone surrogate or NUL anywhere, naming where (422).

    Field types refuse them in texts; this guard covers every other string a body carries
    (names in specs, parameters, option values) that would otherwise reach a database, a
    log line or an outbound request and fail there as a 500. It reads the body FastAPI has
    already buffered and parses it only when an escape that could be a surrogate, or a NUL
    escape, is present.
    """
    if "json" not in request.headers.get("content-type", ""):
        return
    raw = await request.body()
    if not (_SURROGATE_ESCAPE.search(raw) or b"\\u0000" in raw):
        return
    try:
        parsed = json.loads(raw)
    except ValueError:
        return  # FastAPI answers malformed JSON itself
    if (where := _unstorable_at(parsed, "body")) is not None:
        raise field_error(where, "must not contain NUL characters or unpaired UTF-16 surrogates")


def problems(*codes: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI entries for problem+json error responses."""
    text = {
        400: "Bad request",
        404: "Not found",
        409: "Conflict or missing resource",
        413: "Too large",
        422: "Validation failed (the problem names the field)",
        429: "Queue full (Retry-After)",
        502: "Upstream classifier or LLM failed",
        503: "Not ready or queue full (Retry-After)",
        504: "Upstream timed out",
    }
    return {
        c: {
            "model": Problem,
            "description": text.get(c, "Error"),
            "content": {"application/problem+json": {}},
        }
        for c in codes
    }


def queue_full(limit: int) -> ApiError:
    return ApiError(
        429,
        "Queue full",
        f"{limit} jobs are already queued or running; retry later",
        kind="queue-full",
        headers={"Retry-After": "5"},
    )
