"""Liveness, readiness and the method list."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse

from app.resources import Runtime
from app.routes.common import runtime
from app.schemas import Health, MethodsOut

router = APIRouter(tags=["health"])


@router.get("/healthz", operation_id="healthz", response_model=Health)
def healthz(rt: Runtime = Depends(runtime)) -> Health:
    """Alive: answers as soon as the process serves HTTP, even while defaults load."""
    return Health(status="ok", ready=rt.ready, instance=rt.instance_id)


@router.get("/readyz", operation_id="readyz", response_model=Health, responses={503: {"model": Health}})
def readyz(request: Request, rt: Runtime = Depends(runtime)) -> JSONResponse:
    """Ready once the embedded defaults are loaded and the job store answers (503 until then).

    Degraded (503) while requests that timed out still hold worker threads past their deadline.
    """
    components = {k: c.to_dict() for k, c in rt.components.items()}
    try:
        rt.store.ping()
        components["store"] = {"status": "ready", "detail": rt.store.url.split("@")[-1], "required": True}
    except Exception as e:  # the database is down: not ready (the type only: no driver text or SQL)
        components["store"] = {
            "status": "failed",
            "detail": f"unreachable ({type(e).__name__})",
            "required": True,
        }
    slots = getattr(request.app.state, "slots", None)
    stuck = slots.stuck() if slots is not None else 0
    components["requests"] = {
        "status": "degraded" if stuck else "ready",
        "required": True,
        "detail": f"{stuck} timed-out request(s) still running past their deadline"
        if stuck
        else f"{slots.inflight if slots is not None else 0} in flight",
    }
    limiter_health = getattr(getattr(request.app.state, "rate_limiter", None), "health", None)
    if limiter_health is not None:  # not required: without Redis, requests are limited per replica
        status, detail = limiter_health()
        components["rate_limit"] = {"status": status, "required": False, "detail": detail}
    ready = rt.ready and components["store"]["status"] == "ready" and not stuck
    body = Health(
        status="ready" if ready else "loading" if not rt.loaded.is_set() else "degraded",
        ready=ready,
        components=components,
        instance=rt.instance_id,
    )
    return JSONResponse(body.model_dump(), status_code=200 if ready else 503)


@router.get("/v1/methods", operation_id="list_methods", response_model=MethodsOut, tags=["explanations"])
def list_methods(rt: Runtime = Depends(runtime)) -> MethodsOut:
    """Explanation methods this server can run (generate, match, baselines), with one-line descriptions."""
    return MethodsOut(methods=rt.methods())
