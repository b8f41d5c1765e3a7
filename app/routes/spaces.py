"""/v1/spaces: concept spaces: list, get, delete, and train one from an uploaded corpus (as a job)."""

from __future__ import annotations

import json
from typing import Any

from fastapi import APIRouter, Depends, File, Form, Request, Response, UploadFile
from fastapi.responses import JSONResponse
from pydantic import ValidationError

from app.problems import ApiError, field_error, not_found
from app.resources import Runtime
from app.routes.common import problems, queue_full, runtime
from app.routes.jobs import job_out, requester
from app.schemas import JobOut, SpaceGenerate, SpaceList, SpaceOut
from app.spaces import SPACE_ID
from explainers.concepts import ConceptSchema

router = APIRouter(tags=["spaces"])


def _space(rt: Runtime, space_id: str) -> SpaceOut:
    if not rt.spaces.exists(space_id):
        raise not_found("space", space_id)
    d = rt.spaces.describe(space_id)
    return SpaceOut(id=space_id, meta=d["meta"], default=space_id == rt.default_space_id)


@router.get("/v1/spaces", operation_id="list_spaces", response_model=SpaceList)
def list_spaces(rt: Runtime = Depends(runtime)) -> SpaceList:
    """Trained concept spaces on this server (the embedded CEBaB one is marked default)."""
    return SpaceList(spaces=[SpaceOut(id=d["id"], meta=d["meta"], default=d["id"] == rt.default_space_id)
                             for d in rt.spaces.list()])


@router.get("/v1/spaces/{space_id}", operation_id="get_space", response_model=SpaceOut, responses=problems(404))
def get_space(space_id: str, rt: Runtime = Depends(runtime)) -> SpaceOut:
    """One space's metadata: training config, data hash, diagnostics."""
    return _space(rt, space_id)


@router.delete("/v1/spaces/{space_id}", operation_id="delete_space", status_code=204,
               responses=problems(404, 409))
def delete_space(space_id: str, rt: Runtime = Depends(runtime)) -> Response:
    """Delete a space (not the default one the server is using)."""
    if space_id == rt.default_space_id:
        raise ApiError(409, "Space in use", f"{space_id!r} is this server's default space", kind="conflict")
    if not rt.spaces.exists(space_id):
        raise not_found("space", space_id)
    rt.spaces.delete(space_id)
    return Response(status_code=204)


@router.post("/v1/spaces", operation_id="create_space", status_code=202, response_model=JobOut,
             responses=problems(409, 413, 422, 429))
def create_space(
    http_request: Request,
    id: str = Form(..., description="New space id: [a-z0-9][a-z0-9._-]*", examples=["my-reviews"]),
    file: UploadFile = File(..., description="JSONL corpus: {text, labels: {concept: value}, origin?} per line"),
    options: str = Form("{}", description="Training options for the matching library, as JSON"),
    concept_schema: str | None = Form(None, description="Concept schema as JSON (default: the CEBaB schema)"),
    generate: str | None = Form(None, description="SpaceGenerate as JSON: first add LLM-generated counterfactuals "
                                "(groups for a corpus without human edits), e.g. {\"sources\": 200}"),
    rt: Runtime = Depends(runtime),
) -> JSONResponse:
    """Train a concept space from a labelled corpus, as a job (poll the returned job).

    Texts sharing an `origin` that differ in one concept are counterfactual pairs. A corpus
    without them (one text per origin) can ask for `generate`: an LLM edits `sources` texts
    on `concepts_per_source` concepts each before training (the paper's realistic setting).
    """
    if not SPACE_ID.match(id):
        raise field_error("body.id", "must match [a-z0-9][a-z0-9._-]{0,63}")
    if rt.spaces.exists(id):
        raise ApiError(409, "Space exists", f"space {id!r} already exists; DELETE it first", kind="conflict")
    try:
        opts = json.loads(options)
        if not isinstance(opts, dict):
            raise ValueError("not an object")
    except ValueError as e:
        raise field_error("body.options", f"must be a JSON object: {e}") from e
    try:
        sch = ConceptSchema.from_dict(json.loads(concept_schema)) if concept_schema else rt.schema
    except (ValueError, KeyError, TypeError) as e:
        raise field_error("body.concept_schema", f"invalid concept schema: {e}") from e
    gen = _generate_options(rt, generate)
    corpus = _corpus(file, sch, rt.settings.max_body_bytes)
    request = {"space_id": id, "options": opts, "schema": sch.to_dict() if concept_schema else None,
               "generate": gen.model_dump() if gen else None}
    job_id = rt.store.create_job("space", request, [{"corpus": corpus}], limit=rt.settings.job_queue_limit,
                                 owner=requester(http_request)[0])
    if job_id is None:
        raise queue_full(rt.settings.job_queue_limit)
    return JSONResponse(job_out(rt.store.get_job(job_id, with_request=False)).model_dump(mode="json"),
                        status_code=202, headers={"Location": f"/v1/jobs/{job_id}"})


def _generate_options(rt: Runtime, raw: str | None) -> SpaceGenerate | None:
    if not raw:
        return None
    try:
        gen = SpaceGenerate.model_validate_json(raw)
    except ValidationError as e:
        first = e.errors()[0]
        where = ".".join(str(x) for x in first["loc"])
        raise field_error("body.generate" + (f".{where}" if where else ""), first["msg"]) from e
    try:
        backend, _ = rt.llm(gen.llm)
    except LookupError as e:
        raise field_error("body.generate.llm", str(e)) from e
    if backend is None:
        raise field_error("body.generate.llm", "no default LLM is configured (CACE_LLM_BASE_URL, CACE_LLM_MODEL); "
                          "name a registered LLM")
    return gen


def _corpus(file: UploadFile, schema: ConceptSchema, max_bytes: int) -> list[dict[str, Any]]:
    raw = file.file.read(max_bytes + 1)
    if len(raw) > max_bytes:
        raise field_error("body.file", f"larger than {max_bytes} bytes", status=413)
    rows = []
    for n, line in enumerate(raw.decode("utf-8", errors="replace").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as e:
            raise field_error(f"body.file.line{n}", f"invalid JSON: {e}") from e
        if not isinstance(obj, dict) or not isinstance(obj.get("text"), str) or not isinstance(obj.get("labels"), dict):
            raise field_error(f"body.file.line{n}", "expected {\"text\": str, \"labels\": {concept: value}}")
        for c, v in obj["labels"].items():
            if c in schema and v not in schema[c].values:
                raise field_error(f"body.file.line{n}.labels.{c}", f"{v!r} not in {list(schema[c].values)}")
        rows.append({"text": obj["text"], "labels": obj["labels"], "origin": obj.get("origin"), "id": obj.get("id")})
    if len(rows) < 2:
        raise field_error("body.file", "a space needs at least 2 labelled texts")
    return rows
