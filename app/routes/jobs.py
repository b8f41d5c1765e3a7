"""Jobs: status, list, cancel, and the per-text rows (paginated or JSONL).

A job belongs to the API key that created it: other keys get 404 (not 403, which would
confirm the id exists), admin keys see every job. With auth off there is one user.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from typing import Any

from fastapi import APIRouter, Query, Request
from fastapi.responses import JSONResponse, StreamingResponse

from app.jobs.handlers import row_out
from app.problems import ApiError, not_found
from app.resources import Runtime
from app.routes.common import RuntimeDep, problems, queue_full
from app.schemas import JOB_RESULT_KINDS, JobList, JobOut, RowsPage

router = APIRouter(tags=["jobs"])


def job_out(job: dict[str, Any] | None) -> JobOut:
    """One job as the API shows it, listed or alone: counts, progress (items finished, or the
    running item's stages for a one-item job such as a build or a calibration), typed result."""
    if job is None:  # deleted between its creation and this read
        raise not_found("job", "?")
    counts = job.get("counts") or {}
    total = job["total"] or 1
    finished = counts.get("done", 0) + counts.get("failed", 0)
    progress = finished / total
    stages = job.get("stages")
    if stages and job["status"] in ("queued", "running") and finished < total:
        # The running item's own percent, as a share of one item (never 1.0 before it is stored).
        progress = min((finished + stages.get("percent", 0.0) / 100) / total, (total - 0.001) / total)
    links = {"self": f"/v1/jobs/{job['id']}"}
    if job["kind"] == "effects":
        links.update(rows=f"/v1/jobs/{job['id']}/rows", download=f"/v1/jobs/{job['id']}/rows.jsonl")
    result = job.get("result")
    if isinstance(result, dict) and job["kind"] in JOB_RESULT_KINDS:
        result = {**result, "kind": job["kind"]}  # the union's discriminator
    fields = {k: v for k, v in job.items() if k in JobOut.model_fields and k not in ("links", "result")}
    return JobOut(**fields, result=result, progress=round(progress, 4), links=links)


# Offsets beyond any real table; larger ones overflow the database's integer (PostgreSQL: bigint).
MAX_OFFSET = 2**31 - 1


def requester(request: Request) -> tuple[str | None, bool]:
    """(API key id or None, whether it sees every job) from what the auth middleware stored."""
    state = request.scope.get("state", {})
    return state.get("api_key_id"), bool(state.get("api_key_admin", True))


def submit(
    rt: Runtime, kind: str, request: dict[str, Any], payloads: Iterable[Any], owner: str | None
) -> JSONResponse:
    """Queue a job (429 when the queue is full) and answer 202 with the job and its Location."""
    job_id = rt.store.create_job(kind, request, payloads, limit=rt.settings.jobs.queue_limit, owner=owner)
    if job_id is None:
        raise queue_full(rt.settings.jobs.queue_limit)
    return JSONResponse(
        job_out(rt.store.get_job(job_id, with_request=False)).model_dump(mode="json"),
        status_code=202,
        headers={"Location": f"/v1/jobs/{job_id}"},
    )


def _job(rt: Runtime, job_id: str, request: Request) -> dict[str, Any]:
    job = rt.store.get_job(job_id, with_request=False)
    key_id, sees_all = requester(request)
    if job is None or (not sees_all and job.get("owner") != key_id):
        raise not_found("job", job_id)
    return job


@router.get("/v1/jobs", operation_id="list_jobs", response_model=JobList)
def list_jobs(
    request: Request,
    rt: RuntimeDep,
    status: str | None = Query(None, pattern="^(queued|running|succeeded|failed|cancelled)$"),
    kind: str | None = Query(None, max_length=32),
    limit: int = Query(50, ge=1, le=500),
    offset: int = Query(0, ge=0, le=MAX_OFFSET),
) -> JobList:
    """Jobs, newest first (without results; GET one job for its result). A key sees its own jobs; admin all."""
    key_id, sees_all = requester(request)
    jobs, total = rt.store.list_jobs(
        status=status, kind=kind, limit=limit, offset=offset, owner=key_id, only_owner=not sees_all
    )
    return JobList(jobs=[job_out(j) for j in jobs], total=total)


@router.get("/v1/jobs/{job_id}", operation_id="get_job", response_model=JobOut, responses=problems(404))
def get_job(job_id: str, request: Request, rt: RuntimeDep) -> JobOut:
    """Status, progress, item counts, errors, and (once succeeded) the result."""
    return job_out(_job(rt, job_id, request))


@router.post(
    "/v1/jobs/{job_id}/cancel", operation_id="cancel_job", response_model=JobOut, responses=problems(404, 409)
)
def cancel_job(job_id: str, request: Request, rt: RuntimeDep) -> JobOut:
    """Cancel a queued or running job; finished items are kept, the rest are never started."""
    job = _job(rt, job_id, request)
    if not rt.store.cancel_job(job_id):
        raise ApiError(409, "Job already finished", f"job {job_id} is {job['status']}", kind="job-final")
    return job_out(_job(rt, job_id, request))


@router.get(
    "/v1/jobs/{job_id}/rows", operation_id="list_job_rows", response_model=RowsPage, responses=problems(404)
)
def list_job_rows(
    job_id: str,
    request: Request,
    rt: RuntimeDep,
    offset: int = Query(0, ge=0, le=MAX_OFFSET),
    limit: int = Query(100, ge=1, le=1000),
) -> RowsPage:
    """Per-text ICaCE rows of an effects job, in input order, a page at a time."""
    job = _job(rt, job_id, request)
    rows = rt.store.item_rows(job_id, offset=offset, limit=limit)
    nxt = offset + len(rows)
    return RowsPage(
        rows=[row_out(r) for r in rows],
        offset=offset,
        limit=limit,
        total=job["total"],
        next_offset=nxt if nxt < job["total"] else None,
    )


class NDJSONResponse(StreamingResponse):
    """JSON Lines: the only media type the download declares (a client must not parse it as one JSON)."""

    media_type = "application/x-ndjson"


@router.get(
    "/v1/jobs/{job_id}/rows.jsonl",
    operation_id="download_job_rows",
    response_class=NDJSONResponse,
    responses={
        200: {
            "content": {"application/x-ndjson": {"schema": {"type": "string", "format": "binary"}}},
            "description": "One EffectRow (JSON) per line",
        },
        **problems(404),
    },
)
def download_job_rows(job_id: str, request: Request, rt: RuntimeDep) -> NDJSONResponse:
    """All per-text rows as JSON Lines (streamed in pages)."""
    _job(rt, job_id, request)  # 404 (unknown, or another key's) before the stream starts

    def lines() -> Iterator[bytes]:
        for r in rt.store.iter_item_rows(job_id):  # keyset pages: linear time, bounded memory
            yield (json.dumps(row_out(r)) + "\n").encode()

    return NDJSONResponse(
        lines(),
        media_type="application/x-ndjson",
        headers={"Content-Disposition": f'attachment; filename="{job_id}.jsonl"'},
    )
