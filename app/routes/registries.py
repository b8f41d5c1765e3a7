"""/v1/classifiers and /v1/llms: named endpoint specs, persisted in the store.

A registration is validated by building the client from the spec (no call is made),
so a bad spec is a 422 naming the field at registration time, not at first use.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Response
from fastapi.responses import JSONResponse
from pydantic import ValidationError

from app.clients import close_quietly
from app.problems import ApiError, field_error, not_found, validation_error
from app.resources import Runtime
from app.routes.common import RuntimeDep, problems
from app.schemas import Registration, RegistrationList, RegistrationOut
from app.specs import SpecRefused

router = APIRouter()
SECRET_KEYS = ("api_key", "authorization", "token", "password")


def redact(spec: dict[str, Any]) -> dict[str, Any]:
    """Specs are echoed back without secrets (keys, auth headers)."""
    out: dict[str, Any] = {}
    for k, v in spec.items():
        if any(s in k.lower() for s in SECRET_KEYS) and v:
            out[k] = "***"
        elif isinstance(v, dict):
            out[k] = redact(v)
        else:
            out[k] = v
    return out


def _validate(kind: str, name: str, spec: dict[str, Any], rt: Runtime) -> None:
    """Build the client the spec describes, under the rules for registered specs (`app.specs`)."""
    try:
        close_quietly(
            rt.clients.build(kind, spec, inline=False, label=name)
        )  # built to check it, then released
    except SpecRefused as e:
        raise field_error(f"body.spec.{e.field}", e.message) from e
    except ValidationError as e:
        raise validation_error(e.errors(), "body.spec") from e
    except ModuleNotFoundError as e:
        raise ApiError(
            409, "Missing resource", f"{kind} specs need module {e.name}", kind="missing-resource"
        ) from e
    except (ValueError, TypeError) as e:
        raise field_error("body.spec", str(e)) from e


def _out(row: dict[str, Any] | None) -> RegistrationOut:
    if row is None:  # deleted between its creation and this read
        raise ApiError(404, "Not found", "the registration is gone", kind="not-found")
    return RegistrationOut(**{**row, "spec": redact(row["spec"])})


def _routes(kind: str, path: str, tag: str, plural: str) -> None:
    def list_items(rt: RuntimeDep) -> RegistrationList:
        items = []
        if kind == "classifier":
            items = [
                RegistrationOut(name=n, kind=kind, spec=meta, builtin=True, description="embedded default")
                for n, meta in rt.builtin_meta.items()
            ]
        items += [_out(r) for r in rt.store.registry_list(kind)]
        return RegistrationList(items=items)

    def register(reg: Registration, rt: RuntimeDep) -> JSONResponse:
        if kind == "classifier" and reg.name in rt.builtin_meta:
            raise ApiError(409, "Name taken", f"{reg.name!r} is a built-in classifier", kind="conflict")
        _validate(kind, reg.name, reg.spec, rt)
        if not rt.store.registry_add(kind, reg.name, reg.spec, reg.description):
            raise ApiError(
                409,
                "Name taken",
                f"{kind} {reg.name!r} is already registered; DELETE it first",
                kind="conflict",
            )
        row = rt.store.registry_get(kind, reg.name)
        return JSONResponse(
            _out(row).model_dump(mode="json"), status_code=201, headers={"Location": f"{path}/{reg.name}"}
        )

    def get_item(name: str, rt: RuntimeDep) -> RegistrationOut:
        if kind == "classifier" and name in rt.builtin_meta:
            return RegistrationOut(
                name=name, kind=kind, spec=rt.builtin_meta[name], builtin=True, description="embedded default"
            )
        row = rt.store.registry_get(kind, name)
        if row is None:
            raise not_found(kind, name)
        return _out(row)

    def delete_item(name: str, rt: RuntimeDep) -> Response:
        if kind == "classifier" and name in rt.builtin_meta:
            raise ApiError(409, "Built-in", f"{name!r} is built in and cannot be deleted", kind="conflict")
        if not rt.store.registry_delete(kind, name):
            raise not_found(kind, name)
        rt.forget(kind, name)
        return Response(status_code=204)

    router.add_api_route(
        path,
        list_items,
        methods=["GET"],
        operation_id=f"list_{plural}",
        response_model=RegistrationList,
        tags=[tag],
        summary=f"List registered {plural}",
    )
    router.add_api_route(
        path,
        register,
        methods=["POST"],
        operation_id=f"register_{kind}",
        status_code=201,
        response_model=RegistrationOut,
        responses=problems(409, 422),
        tags=[tag],
        summary=f"Register a {kind} by name",
    )
    router.add_api_route(
        path + "/{name}",
        get_item,
        methods=["GET"],
        operation_id=f"get_{kind}",
        response_model=RegistrationOut,
        responses=problems(404),
        tags=[tag],
        summary=f"Get a registered {kind}",
    )
    router.add_api_route(
        path + "/{name}",
        delete_item,
        methods=["DELETE"],
        operation_id=f"delete_{kind}",
        status_code=204,
        responses=problems(404, 409),
        tags=[tag],
        summary=f"Delete a registered {kind}",
    )


_routes("classifier", "/v1/classifiers", "classifiers", "classifiers")
_routes("llm", "/v1/llms", "llms", "llms")
