"""Liveness, readiness and the method list."""

from __future__ import annotations

from typing import Any

import anyio
import anyio.to_thread
from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from app.resources import Runtime
from app.routes.common import RuntimeDep
from app.schemas import Health, MethodsOut

router = APIRouter(tags=["health"])


# The store ping runs in a thread of its own (never one a route holds: when slow upstreams tie up
# the worker threads, readiness must still be told) and is given this long to answer.
STORE_PING_S = 2.0
_ping_threads = anyio.CapacityLimiter(1)


@router.get("/healthz", operation_id="healthz", response_model=Health)
async def healthz(request: Request) -> Health:
    """Alive: answers as soon as the process serves HTTP, even while defaults load.

    On the event loop, with no blocking call and no dependency that needs a worker thread: a
    replica whose threads are all busy (slow upstreams, long jobs) is still alive.
    """
    rt: Runtime = request.app.state.runtime
    return Health(status="ok", ready=rt.ready, instance=rt.instance_id)


async def _ping_store(rt: Runtime) -> dict[str, Any]:
    try:
        with anyio.fail_after(STORE_PING_S):
            await anyio.to_thread.run_sync(rt.store.ping, limiter=_ping_threads, abandon_on_cancel=True)
    except TimeoutError:
        return {"status": "failed", "detail": f"no answer within {STORE_PING_S:g} s", "required": True}
    except Exception as e:  # the database is down: not ready (the type only: no driver text or SQL)
        return {"status": "failed", "detail": f"unreachable ({type(e).__name__})", "required": True}
    return {"status": "ready", "detail": rt.store.url.split("@")[-1], "required": True}


@router.get("/readyz", operation_id="readyz", response_model=Health, responses={503: {"model": Health}})
async def readyz(request: Request) -> JSONResponse:
    """Ready once the embedded defaults are loaded and the job store answers (503 until then).

    Lists the default domain's explainers with their state (loading, ready, failed and why).

    Degraded (503) while requests that timed out still hold worker threads past their deadline.
    Answered on the event loop; only the store ping takes a thread, its own, for at most
    `STORE_PING_S`.
    """
    rt: Runtime = request.app.state.runtime
    components = {k: c.to_dict() for k, c in rt.components.items()}
    components["store"] = await _ping_store(rt)
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
        # Not part of readiness: a method that failed to build says why to the request that names it.
        explainers=rt.explainer_states(),
        instance=rt.instance_id,
    )
    return JSONResponse(body.model_dump(), status_code=200 if ready else 503)


@router.get("/v1/methods", operation_id="list_methods", response_model=MethodsOut, tags=["explanations"])
def list_methods(rt: RuntimeDep) -> MethodsOut:
    """Explanation methods this server can run (generate, match, baselines), with one-line descriptions."""
    methods = rt.methods()
    unavailable = {}
    s = rt.settings
    if "generate" in methods and not (s.llm.base_url and s.llm.model) and not rt.store.registry_list("llm"):
        unavailable["generate"] = (
            "no LLM: set CACE_LLM_BASE_URL and CACE_LLM_MODEL, or register one (POST /v1/llms)"
        )
    return MethodsOut(methods=methods, unavailable=unavailable)
