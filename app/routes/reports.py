"""Model reports (POST /v1/reports) and model comparisons (POST /v1/comparisons), as jobs.

Each is owned by the key that made it (other keys get 404), stored in the job store (durable
across restarts, bounded by the queue limit), listable, and downloadable as JSON, CSV,
Markdown or one self-contained HTML page. The work is `app.jobs.reports` over `explainers.reports`.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Query, Request
from fastapi.responses import JSONResponse, Response

from app.jobs.reports import plan
from app.problems import ApiError, not_found
from app.resources import Runtime
from app.routes.common import RuntimeDep, problems, queue_full
from app.routes.jobs import MAX_OFFSET, job_out, requester
from app.schemas import ComparisonRequest, JobList, JobOut, ReportFormat, ReportRequest
from explainers.reports.render import FORMATS, render

router = APIRouter(tags=["reports"])

PATHS = {"report": "/v1/reports", "comparison": "/v1/comparisons"}


def _out(job: dict[str, Any]) -> JobOut:
    out = job_out(job)
    base = f"{PATHS[job['kind']]}/{job['id']}"
    out.links = {"self": base, "job": f"/v1/jobs/{job['id']}"} | {
        fmt: f"{base}/download?format={fmt}" for fmt in FORMATS
    }
    return out


def _submit(
    rt: Runtime, kind: str, params: ReportRequest | ComparisonRequest, request: Request
) -> JSONResponse:
    body, payloads = plan(rt, params, kind)
    job_id = rt.store.create_job(
        kind, body, payloads, limit=rt.settings.jobs.queue_limit, owner=requester(request)[0]
    )
    if job_id is None:
        raise queue_full(rt.settings.jobs.queue_limit)
    job = rt.store.get_job(job_id, with_request=False)
    assert job is not None
    return JSONResponse(
        _out(job).model_dump(mode="json"), status_code=202, headers={"Location": f"{PATHS[kind]}/{job_id}"}
    )


def _owned(rt: Runtime, kind: str, job_id: str, request: Request) -> dict[str, Any]:
    job = rt.store.get_job(job_id, with_request=False)
    key_id, sees_all = requester(request)
    if job is None or job["kind"] != kind or (not sees_all and job.get("owner") != key_id):
        raise not_found(kind, job_id)
    return job


def _list(rt: Runtime, kind: str, request: Request, status: str | None, limit: int, offset: int) -> JobList:
    key_id, sees_all = requester(request)
    jobs, total = rt.store.list_jobs(
        status=status, kind=kind, limit=limit, offset=offset, owner=key_id, only_owner=not sees_all
    )
    return JobList(jobs=[_out(j) for j in jobs], total=total)


def _download(rt: Runtime, kind: str, job_id: str, fmt: str, request: Request) -> Response:
    job = _owned(rt, kind, job_id, request)
    if job["status"] != "succeeded":
        raise ApiError(
            409,
            f"{kind.capitalize()} not ready",
            f"{kind} {job_id} is {job['status']}" + (f": {job['error']}" if job.get("error") else ""),
            kind="not-ready",
        )
    body = render(job["result"], fmt)
    ext = {"json": "json", "csv": "csv", "md": "md", "html": "html"}[fmt]
    return Response(
        body,
        media_type=FORMATS[fmt],
        headers={"Content-Disposition": f'attachment; filename="{kind}-{job_id}.{ext}"'},
    )


STATUS = Query(None, pattern="^(queued|running|succeeded|failed|cancelled)$")


@router.post(
    "/v1/reports",
    operation_id="create_report",
    status_code=202,
    response_model=JobOut,
    responses=problems(404, 409, 413, 422, 429),
)
def create_report(params: ReportRequest, request: Request, rt: RuntimeDep) -> JSONResponse:
    """Every concept and direction of a domain for one classifier: CaCE per label with CIs, placebo tests
    (Holm-corrected), cells ranked by effect size, the texts each cell moved most. A job; poll Location."""
    return _submit(rt, "report", params, request)


@router.get("/v1/reports", operation_id="list_reports", response_model=JobList)
def list_reports(
    request: Request,
    rt: RuntimeDep,
    status: str | None = STATUS,
    limit: int = Query(50, ge=1, le=500),
    offset: int = Query(0, ge=0, le=MAX_OFFSET),
) -> JobList:
    """Reports, newest first (a key sees its own; admin all)."""
    return _list(rt, "report", request, status, limit, offset)


@router.get(
    "/v1/reports/{report_id}", operation_id="get_report", response_model=JobOut, responses=problems(404)
)
def get_report(report_id: str, request: Request, rt: RuntimeDep) -> JobOut:
    """Status and progress; once succeeded, the report (JSON) in `result`."""
    return _out(_owned(rt, "report", report_id, request))


@router.get(
    "/v1/reports/{report_id}/download",
    operation_id="download_report",
    responses={200: {"content": {m: {} for m in FORMATS.values()}}, **problems(404, 409, 422)},
)
def download_report(
    report_id: str,
    request: Request,
    rt: RuntimeDep,
    format: ReportFormat = Query(
        "json", description="json, csv, md or html (one page with inline SVG plots)"
    ),
) -> Response:
    """The finished report as a file."""
    return _download(rt, "report", report_id, format, request)


@router.post(
    "/v1/comparisons",
    operation_id="create_comparison",
    status_code=202,
    response_model=JobOut,
    responses=problems(404, 409, 413, 422, 429),
)
def create_comparison(params: ComparisonRequest, request: Request, rt: RuntimeDep) -> JSONResponse:
    """Two classifiers on the same texts and the same counterfactuals (one search, scored by both): per
    cell the CaCE difference with a paired bootstrap CI, cells beyond the threshold flagged. A job."""
    return _submit(rt, "comparison", params, request)


@router.get("/v1/comparisons", operation_id="list_comparisons", response_model=JobList)
def list_comparisons(
    request: Request,
    rt: RuntimeDep,
    status: str | None = STATUS,
    limit: int = Query(50, ge=1, le=500),
    offset: int = Query(0, ge=0, le=MAX_OFFSET),
) -> JobList:
    """Comparisons, newest first (a key sees its own; admin all)."""
    return _list(rt, "comparison", request, status, limit, offset)


@router.get(
    "/v1/comparisons/{comparison_id}",
    operation_id="get_comparison",
    response_model=JobOut,
    responses=problems(404),
)
def get_comparison(comparison_id: str, request: Request, rt: RuntimeDep) -> JobOut:
    """Status and progress; once succeeded, the comparison (JSON) in `result`."""
    return _out(_owned(rt, "comparison", comparison_id, request))


@router.get(
    "/v1/comparisons/{comparison_id}/download",
    operation_id="download_comparison",
    responses={200: {"content": {m: {} for m in FORMATS.values()}}, **problems(404, 409, 422)},
)
def download_comparison(
    comparison_id: str,
    request: Request,
    rt: RuntimeDep,
    format: ReportFormat = Query(
        "json", description="json, csv, md or html (one page with inline SVG plots)"
    ),
) -> Response:
    """The finished comparison as a file."""
    return _download(rt, "comparison", comparison_id, format, request)
