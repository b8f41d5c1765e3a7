"""/v1/domains: list, get, delete, and build one from an uploaded JSONL corpus (as a job)."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from fastapi import APIRouter, File, Form, Request, Response, UploadFile
from fastapi.responses import JSONResponse
from pydantic import ValidationError

from app import llm_builds
from app.problems import ApiError, field_error, not_found, validation_error
from app.resources import Runtime
from app.routes.common import RuntimeDep, problems
from app.routes.jobs import requester, submit
from app.schemas import CalibrationRequest, DomainList, DomainOut, DomainParams, JobOut
from app.store.tables import FINAL
from explainers.concepts import ConceptSchema
from explainers.domains import BUILTIN, DomainBuildError, infer_schema, validate_rows
from explainers.domains.limits import (
    CorpusLimits,
    CorpusTooLarge,
    check_corpus,
    check_labels_seen,
    check_schema,
)
from explainers.jsonl import split_lines

router = APIRouter(tags=["domains"])

BUILDING = ("queued", "running")


def _out(rt: Runtime, domain_id: str) -> DomainOut:
    return DomainOut.model_validate(
        {**rt.domains.summary(domain_id), "default": domain_id == rt.default_domain_id}
    )


def _building(rt: Runtime) -> list[DomainOut]:
    """Domains whose build job has not finished yet (status `building`; listed so a client sees them)."""
    out = []
    for status in BUILDING:
        jobs, _ = rt.store.list_jobs(kind="domain", status=status, limit=100)
        for job in jobs:
            req = (rt.store.get_job(job["id"]) or {}).get("request") or {}
            if req.get("domain_id") and not rt.domains.exists(req["domain_id"]):
                out.append(
                    DomainOut.model_validate(
                        {
                            "id": req["domain_id"],
                            "status": "building",
                            "schema": req.get("schema"),
                            "progress": llm_builds.read_progress(rt, job["id"]),
                        }
                    )
                )
    return out


@router.get("/v1/domains", operation_id="list_domains", response_model=DomainList)
def list_domains(rt: RuntimeDep) -> DomainList:
    """Every domain on this server with its schema and status (the default one is marked)."""
    return DomainList(domains=[_out(rt, d) for d in rt.domains.ids()] + _building(rt))


@router.get(
    "/v1/domains/{domain_id}", operation_id="get_domain", response_model=DomainOut, responses=problems(404)
)
def get_domain(domain_id: str, rt: RuntimeDep) -> DomainOut:
    """One domain: schema, corpus stats (pairs per concept and direction), tagger accuracy, methods per concept."""
    if not rt.domains.exists(domain_id):
        raise not_found("domain", domain_id)
    return _out(rt, domain_id)


@router.delete(
    "/v1/domains/{domain_id}", operation_id="delete_domain", status_code=204, responses=problems(404, 409)
)
def delete_domain(domain_id: str, rt: RuntimeDep) -> Response:
    """Delete a domain (not the server's default one)."""
    if domain_id == rt.default_domain_id:
        raise ApiError(
            409, "Domain in use", f"{domain_id!r} is this server's default domain", kind="conflict"
        )
    if not rt.domains.exists(domain_id):
        raise not_found("domain", domain_id)
    # Its running calibrations stop at their next checkpoint and save nothing (see
    # DomainCatalog.save_calibration): a delete leaves no folder of the domain behind.
    for job_id in rt.store.active_jobs_on("calibration", domain_id):
        rt.store.cancel_job(job_id)
    rt.domains.delete(domain_id)
    rt.forget_domain(domain_id)
    return Response(status_code=204)


@router.post(
    "/v1/domains",
    operation_id="create_domain",
    status_code=202,
    response_model=JobOut,
    responses=problems(409, 413, 422, 429),
)
def create_domain(
    http_request: Request,
    rt: RuntimeDep,
    file: UploadFile = File(
        ...,
        description='JSONL corpus: one {"text", "labels": {concept: value}, "origin"?, "id"?, "trained"?} '
        "per line; texts sharing an origin that differ in one concept are pairs; a row whose origin is its "
        'own id (or that names none) is an original; "trained": true marks a text the classifier to be '
        "explained was trained on",
    ),
    params: str = Form(
        ...,
        description='DomainParams as JSON, e.g. {"id": "movie-reviews"}',
        examples=['{"id": "movie-reviews"}'],
    ),
) -> JSONResponse:
    """Build a domain from a labelled corpus, as a job: schema, pairs, taggers, concept space.

    A corpus without labels (or with labels on some rows) is labelled by an LLM from the schema's
    definitions, and its counterfactual pairs are written by the LLM (`params.llm_build`); the 202
    then carries the build's `plan` (LLM calls, tokens, estimated time), and `"dry_run": true`
    answers 200 with the plan alone.

    The schema is given in `params.schema` or inferred from the labels. A corpus without
    counterfactual pairs for a concept still builds; the domain then lists the methods that
    cannot run for that concept (or ask for `generate` to add LLM-made edits first).
    """
    p = _params(params)
    _check_id_free(rt, p.id)
    limits = _limits(rt)
    schema = _schema(p.schema_) if p.schema_ is not None else None
    if schema is not None:
        given = schema
        _check_limits(lambda: check_schema(given, limits))
    if p.generate is not None:
        try:
            backend, _ = rt.llm(p.generate.llm)
        except LookupError as e:
            raise field_error("body.params.generate.llm", str(e).strip("'\"")) from e
        if backend is None:
            raise field_error(
                "body.params.generate.llm",
                "no default LLM is configured (CACE_LLM_BASE_URL, CACE_LLM_MODEL); name a registered LLM",
            )
    rows = _corpus(file, schema, rt.settings.limits.max_body_bytes, rt.settings.limits.max_text_chars, limits)
    if schema is None and not any(r["labels"] for r in rows):
        raise field_error(
            "body.params.schema",
            "no row carries labels: pass the schema, each concept with its values and a description "
            "(an LLM labels the texts from it)",
        )
    if schema is None:
        _check_limits(lambda: check_labels_seen(rows, limits))
        schema = infer_schema(rows, name=p.description or p.id)
        single = [c.name for c in schema.concepts if len(c.values) < 2]
        if single:
            raise field_error(
                "body.params.schema",
                f"the labels give concept(s) {single} a single value; nothing "
                "can change it: pass the schema with every value",
            )
    final_schema = schema
    _check_limits(lambda: check_corpus(rows, final_schema, limits))
    # Labels and pairs by an LLM where the corpus lacks them: a plan (calls, tokens, time) first.
    llm_build = llm_builds.prepare(rt, p, schema, rows)
    plan = llm_build["plan"] if llm_build else None
    if p.dry_run:
        return JSONResponse(
            {"dry_run": True, "domain_id": p.id, "llm_build": llm_build is not None, "plan": plan}
        )
    request = {
        "domain_id": p.id,
        "schema": schema.to_dict(),
        "generate": p.generate.model_dump() if p.generate else None,
        "llm_build": llm_build,
    }
    # One build per id, also between replicas: the lock is claimed before the job exists and
    # then names it; a concurrent upload of the same id gets 409 here.
    held, token = rt.domains.claim_build(p.id, lambda job_id: _job_active(rt, job_id))
    if held is not None:
        raise ApiError(
            409,
            "Domain being built",
            f"domain {p.id!r} is being built"
            + (f" by job {held}" if held else "")
            + "; wait for it or cancel it",
            kind="conflict",
        )
    try:
        _check_id_free(rt, p.id)  # a build that finished while this upload was being read
        response = submit(rt, "domain", request, [{"corpus": rows}], requester(http_request)[0])
    except BaseException:
        rt.domains.release_build(p.id, token)
        raise
    rt.domains.bind_build(p.id, token, json.loads(bytes(response.body))["id"])
    if plan is not None:  # an LLM build: the 202 says what it will spend
        response = JSONResponse(
            {**json.loads(bytes(response.body)), "plan": plan},
            status_code=202,
            headers={"Location": response.headers["location"]},
        )
    return response


def _check_id_free(rt: Runtime, domain_id: str) -> None:
    """409 when the id is taken (a domain, a build under way); 422 when it is reserved."""
    if domain_id in BUILTIN and domain_id != rt.default_domain_id:
        # A built-in id is the library's domain: an upload by that name would later be served as it.
        raise field_error("body.params.id", f"{domain_id!r} is reserved for a built-in domain")
    if rt.domains.exists(domain_id) or any(d.id == domain_id for d in _building(rt)):
        raise ApiError(
            409, "Domain exists", f"domain {domain_id!r} already exists; DELETE it first", kind="conflict"
        )


def _job_active(rt: Runtime, job_id: str) -> bool:
    job = rt.store.get_job(job_id, with_request=False)
    return job is not None and job["status"] not in FINAL


def _limits(rt: Runtime) -> CorpusLimits:
    s = rt.settings
    return CorpusLimits(
        domain_max_group_texts=s.limits.domain_max_group_texts,
        domain_max_pairs=s.limits.domain_max_pairs,
        domain_max_concepts=s.limits.domain_max_concepts,
        domain_max_values=s.limits.domain_max_values,
    )


def _check_limits(check: Callable[[], object]) -> None:
    """Run one of explainers.domains.limits' checks; a cap exceeded is a 422 naming it."""
    try:
        check()
    except CorpusTooLarge as e:
        raise field_error(e.where, e.message) from e


@router.post(
    "/v1/domains/{domain_id}/calibrations",
    operation_id="calibrate_domain",
    status_code=202,
    response_model=JobOut,
    responses=problems(404, 409, 422, 429),
)
def calibrate_domain(
    domain_id: str, body: CalibrationRequest, http_request: Request, rt: RuntimeDep
) -> JSONResponse:
    """Calibrate the estimators for a registered classifier on this domain's own held-out pairs (a job).

    `method: auto` then uses, per (concept, direction), the estimator that erred least on those
    pairs, and answers with its expected error and a conformal interval. The first explanation of
    a classifier on a domain queues this by itself (CACE_AUTO_CALIBRATE).
    """
    if not rt.domains.exists(domain_id):
        raise not_found("domain", domain_id)
    domain = rt.domain(domain_id)
    if not domain.pool.pairs:
        raise ApiError(
            409,
            "Nothing to calibrate on",
            f"domain {domain_id!r} has no counterfactual pairs",
            kind="conflict",
        )
    try:
        _, name = rt.classifier(body.classifier)
    except LookupError as e:
        raise field_error("body.classifier", str(e).strip("'\"")) from e
    request: dict[str, Any] = {
        "domain_id": domain_id,
        "classifier": name,
        "max_pairs": min(
            body.max_pairs or rt.settings.calibration.max_pairs, rt.settings.calibration.max_pairs
        ),
    }
    if body.trained_on is not None:
        known = set(domain.pool.ids or ())
        unknown = [i for i in dict.fromkeys(body.trained_on) if i not in known]
        if unknown:
            raise field_error(
                "body.trained_on",
                f"{len(unknown)} id(s) are not texts of domain {domain_id!r} (first: "
                + ", ".join(repr(i) for i in unknown[:3])
                + ")",
            )
        request["trained_on"] = list(dict.fromkeys(body.trained_on))
    return submit(rt, "calibration", request, [{}], requester(http_request)[0])


@router.get(
    "/v1/domains/{domain_id}/calibrations",
    operation_id="list_calibrations",
    response_model=dict[str, dict[str, Any]],
    responses=problems(404),
)
def list_calibrations(domain_id: str, rt: RuntimeDep) -> dict[str, dict[str, Any]]:
    """Per calibrated classifier: its fingerprint, cost and the held-out error of every method (macro)."""
    if not rt.domains.exists(domain_id):
        raise not_found("domain", domain_id)
    return rt.domains.summary(domain_id)["calibrations"]


def _params(raw: str) -> DomainParams:
    try:
        return DomainParams.model_validate_json(raw)
    except ValidationError as e:
        raise validation_error(e.errors(), "body.params") from e


def _schema(raw: dict[str, Any]) -> ConceptSchema:
    """A given schema: concepts with unique names and 2+ unique values each."""
    concepts = raw.get("concepts")
    if not isinstance(concepts, list) or not concepts:
        raise field_error("body.params.schema.concepts", "a non-empty list of {name, values, description?}")
    for i, c in enumerate(concepts):
        where = f"body.params.schema.concepts.{i}"
        if not isinstance(c, dict) or not isinstance(c.get("name"), str) or not c["name"].strip():
            raise field_error(f"{where}.name", "a non-empty string")
        values = c.get("values")
        if (
            not isinstance(values, list)
            or len(values) < 2
            or not all(isinstance(v, str) and v for v in values)
        ):
            raise field_error(f"{where}.values", "a list of at least 2 non-empty strings")
        if len(set(values)) != len(values):
            raise field_error(f"{where}.values", "values must be unique")
        if not isinstance(c.get("description", ""), str):
            raise field_error(f"{where}.description", "a string")
        llm_builds.check_definition(c, where)
    try:
        return ConceptSchema.from_dict({"concepts": concepts, "domain": str(raw.get("domain", "text"))})
    except ValueError as e:
        raise field_error("body.params.schema", str(e)) from e


def _corpus(
    file: UploadFile, schema: ConceptSchema | None, max_bytes: int, max_chars: int, limits: CorpusLimits
) -> list[dict[str, Any]]:
    raw = file.file.read(max_bytes + 1)
    if len(raw) > max_bytes:
        raise field_error("body.file", f"larger than {max_bytes} bytes", status=413)
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise field_error("body.file", f"not UTF-8 (byte {e.start})") from e
    try:
        return validate_rows(
            split_lines(text), schema, max_text_chars=max_chars, max_labels=limits.domain_max_concepts
        )
    except DomainBuildError as e:
        raise field_error(e.where, e.message) from e
    except json.JSONDecodeError as e:  # pragma: no cover - validate_rows wraps these
        raise field_error("body.file", str(e)) from e
