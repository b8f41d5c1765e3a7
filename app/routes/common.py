"""Helpers every router uses: the runtime from app state, and documented error responses."""

from __future__ import annotations

from typing import Any

from fastapi import Request

from app.problems import ApiError, Problem
from app.resources import Runtime


def runtime(request: Request) -> Runtime:
    return request.app.state.runtime


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
