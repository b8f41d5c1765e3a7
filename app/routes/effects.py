"""POST /v1/effects (JSON) and /v1/effects/upload (JSONL file): CaCE over many texts.

Small requests are answered inline; large ones (or `mode: job`) become durable jobs
whose items are stored per text, answered with 202 and a Location to poll.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from typing import Any

from fastapi import APIRouter, File, Form, Request, UploadFile
from fastapi.responses import JSONResponse
from pydantic import ValidationError

from app import explain
from app.jobs.handlers import row_out, summarize
from app.problems import ApiError, field_error, validation_error
from app.resources import Runtime
from app.routes.common import RuntimeDep, problems
from app.routes.jobs import requester, submit
from app.schemas import EffectsInlineResponse, EffectsParams, EffectsRequest, EffectText, JobOut
from explainers.jsonl import loads_line

router = APIRouter(tags=["effects"])


def _payloads(rt: Runtime, texts: list[Any], where: str) -> list[dict[str, Any]]:
    s = rt.settings
    if len(texts) > s.limits.max_effect_texts:
        raise field_error(
            where, f"at most {s.limits.max_effect_texts} texts per request, got {len(texts)}", status=413
        )
    out = []
    for i, t in enumerate(texts):
        text = t if isinstance(t, str) else t.text
        # Checked before building EffectText: its min_length would raise outside the problem+json path.
        if not text.strip():
            raise field_error(f"{where}.{i}", "empty text")
        if len(text) > s.limits.max_text_chars:
            raise field_error(f"{where}.{i}", f"at most {s.limits.max_text_chars} characters")
        item = EffectText(text=t) if isinstance(t, str) else t
        out.append(item.model_dump(exclude_none=True))
    return out


def _submit(
    rt: Runtime,
    params: EffectsParams,
    payloads: list[dict[str, Any]],
    where: str,
    owner: str | None = None,
    rest: Iterator[dict[str, Any]] | None = None,
) -> JSONResponse:
    """Check a request and answer it inline, or queue it as a job.

    `payloads` are checked against the domain here; `rest` (the tail of a streamed upload, read
    only as it is stored) is checked item by item when the job runs.
    """
    s = rt.settings
    if params.mode == "inline" and (len(payloads) > s.limits.max_inline_texts or rest is not None):
        raise field_error(
            "body.mode", f"inline runs take at most {s.limits.max_inline_texts} texts; use mode=job"
        )
    r = explain.resolve(
        rt, params
    )  # 4xx for bad domain/classifier/method/intervention before anything is queued
    # Pin what the defaults resolved to, so every item of a job (and its summary) uses the same domain,
    # classifier and method, whatever the server's defaults become while it runs.
    params = params.model_copy(
        update={
            "method": r.method,
            "domain": r.domain.id,
            "classifier": params.classifier or r.classifier_name,
        }
    )
    iv = params.intervention
    for i, p in enumerate(payloads):  # every text's labels fit the domain, and its source can be known
        q = explain.Query(p["text"], iv.concept, iv.target, iv.source, p.get("labels"))
        explain.check_query(r, q, f"{where}.{i}.labels", f"{where}.{i}.labels")
    explain.check_available(r, iv.concept, iv.target, "body")
    inline = rest is None and (
        params.mode == "inline" or (params.mode == "auto" and len(payloads) <= s.limits.max_inline_texts)
    )
    request = params.model_dump(mode="json")
    if inline:
        results = rt_handler(rt).rows(r, params, payloads)  # the job's batch path, for the whole request
        rows = [
            {"index": i, "status": "done", "result": result, "payload": p, "attempts": 1}
            for i, (p, result) in enumerate(zip(payloads, results, strict=True))
        ]
        try:
            result = summarize(params, rows)
        except ValueError as e:
            raise ApiError(422, "Nothing to estimate", str(e), kind="no-effect") from e
        rt.maybe_calibrate(
            r.domain, r.classifier_name, queued_by="effects request"
        )  # only after texts were explained
        body = EffectsInlineResponse(result=result, rows=[row_out(x) for x in rows])
        return JSONResponse(body.model_dump(mode="json"))
    return submit(rt, "effects", request, itertools.chain(payloads, rest or ()), owner)


def rt_handler(rt: Runtime) -> Any:
    return rt.handlers["effects"]


@router.post(
    "/v1/effects",
    operation_id="estimate_effects",
    status_code=200,
    response_model=EffectsInlineResponse,
    responses={
        202: {"model": JobOut, "description": "Accepted as a job; poll Location"},
        **problems(409, 413, 422, 429, 502, 504),
    },
)
def estimate_effects(req: EffectsRequest, request: Request, rt: RuntimeDep) -> JSONResponse:
    """CaCE of one intervention over a list of texts, with a bootstrap CI and per-text ICaCE rows."""
    params = EffectsParams.model_validate(req.model_dump(exclude={"texts"}))
    return _submit(
        rt, params, _payloads(rt, list(req.texts), "body.texts"), "body.texts", owner=requester(request)[0]
    )


@router.post(
    "/v1/effects/upload",
    operation_id="upload_effects",
    status_code=200,
    response_model=EffectsInlineResponse,
    responses={
        202: {"model": JobOut, "description": "Accepted as a job; poll Location"},
        **problems(409, 413, 422, 429, 502, 504),
    },
)
def upload_effects(
    request: Request,
    rt: RuntimeDep,
    file: UploadFile = File(..., description="JSONL: one JSON string or {text, id?, labels?} per line"),
    params: str = Form(
        ...,
        description="EffectsParams as a JSON string",
        examples=['{"intervention": {"concept": "food", "target": "Negative"}, "method": "pt_match"}'],
    ),
) -> JSONResponse:
    """Like /v1/effects, with the texts in an uploaded JSONL file (large inputs usually become jobs)."""
    try:
        p = EffectsParams.model_validate_json(params)
    except ValidationError as e:
        raise validation_error(e.errors(), "params") from e
    s = rt.settings
    lines = iter_upload(
        file,
        max_bytes=s.limits.max_body_bytes,
        max_texts=s.limits.max_upload_texts,
        max_chars=s.limits.max_text_chars,
    )
    head = list(itertools.islice(lines, s.limits.max_inline_texts + 1))
    if not head:
        raise field_error("file", "no texts in the file")
    # A large upload streams into the store a chunk at a time: memory stays bounded whatever its size.
    rest = lines if len(head) > s.limits.max_inline_texts else None
    return _submit(rt, p, head, "file", owner=requester(request)[0], rest=rest)


def iter_upload(
    file: UploadFile, *, max_bytes: int, max_texts: int, max_chars: int
) -> Iterator[dict[str, Any]]:
    """Payloads of a JSONL upload, one line at a time (the file is spooled to disk by the server).

    Each line is a JSON string or {text, id?, labels?}; problems name the line (JSON) or the
    text's index (content), as the JSON body's checks do.
    """
    n_bytes = 0
    index = 0
    for n, raw in enumerate(file.file, start=1):
        n_bytes += len(raw)
        if n_bytes > max_bytes:
            raise field_error("file", f"larger than {max_bytes} bytes", status=413)
        line = raw.decode("utf-8", errors="replace")
        if not line.strip():
            continue
        try:
            obj = loads_line(line)  # nesting too deep or an integer too long is a ValueError too
            item = EffectText(text=obj) if isinstance(obj, str) else EffectText.model_validate(obj)
        except (ValueError, ValidationError) as e:
            raise field_error(
                f"file.line{n}", f"not a JSON string or {{text, id, labels}} object: {e}"
            ) from e
        if index >= max_texts:
            raise field_error("file", f"at most {max_texts} texts per upload", status=413)
        if len(item.text) > max_chars:
            raise field_error(f"file.{index}", f"at most {max_chars} characters")
        yield item.model_dump(exclude_none=True)
        index += 1
