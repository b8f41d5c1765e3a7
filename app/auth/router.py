"""`/v1/keys`: create, list and revoke API keys (admin scope; refused while auth is off)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from pydantic import BaseModel, Field

from app.auth.keys import KeyStore
from app.problems import ApiError
from app.routes.common import problems
from app.schemas import SafeText


class KeyCreate(BaseModel):
    name: SafeText = Field(min_length=1, max_length=128, examples=["batch-jobs"])
    scopes: list[str] = Field(default_factory=lambda: ["explain"], min_length=1, examples=[["explain"]])
    rate_limit_per_s: float | None = Field(
        None, gt=0, le=100000, description="Override the default rate limit."
    )


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

    @router.post(
        "/v1/keys",
        operation_id="create_key",
        response_model=KeyCreated,
        status_code=201,
        responses=problems(401, 403, 422, 429),
    )
    def create_key(body: KeyCreate) -> dict[str, Any]:
        """Create an API key (admin scope). The plaintext key is in this response only."""
        try:
            rec, plain = store.create(body.name, body.scopes, body.rate_limit_per_s)
        except ValueError as e:
            raise ApiError(
                422,
                "Request validation failed",
                f"body.scopes: {e}",
                kind="validation",
                errors=[{"field": "body.scopes", "message": str(e)}],
            ) from e
        return {**rec.public(), "key": plain}

    @router.get(
        "/v1/keys", operation_id="list_keys", response_model=list[KeyOut], responses=problems(401, 403, 429)
    )
    def list_keys() -> list[dict[str, Any]]:
        """List keys (never their secrets)."""
        return [k.public() for k in store.list()]

    @router.delete(
        "/v1/keys/{key_id}",
        operation_id="revoke_key",
        status_code=204,
        responses=problems(401, 403, 404, 422, 429),
    )
    def revoke_key(key_id: str) -> None:
        """Revoke a key; it stops working within seconds on every replica."""
        if not store.revoke(key_id):
            raise ApiError(
                404,
                "Not found",
                f"no active stored key {key_id!r} (keys from a file are revoked by editing the file)",
                kind="not-found",
            )

    return router
