"""KServe V1 data-plane routes on top of the service's own API, for KServe's explainer slot.

KServe routes `POST /v1/models/{name}:explain` of an InferenceService to its explainer
container. This router answers it with the same code path as `POST /v1/explanations`: each
instance is one text, the intervention and method come from `parameters` (or the instance
object), and the classifier is the registered one called `{name}`; in an InferenceService,
where the predictor is a separate KServe V1 server, an unregistered `{name}` is called at
`http://$CACE_KSERVE_PREDICTOR_HOST/v1/models/{name}:predict` (labels from
`CACE_KSERVE_LABELS`), through the same outbound URL policy as every other endpoint.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from pydantic import BaseModel, Field, ValidationError

from app import explain
from app.problems import ApiError, field_error, validation_error
from app.resources import Runtime
from app.routes.common import RuntimeDep, problems
from app.schemas import ExplanationRequest, ExplanationResponse
from app.schemas.types import SafeText

router = APIRouter(tags=["kserve"])


class KServeExplainRequest(BaseModel):
    model_config = {
        "json_schema_extra": {
            "examples": [
                {
                    "instances": ["The food was great but the waiter ignored us."],
                    "parameters": {
                        "intervention": {"concept": "service", "target": "Positive"},
                        "method": "match",
                        "top_k": 5,
                    },
                }
            ]
        }
    }

    instances: list[str | dict[str, Any]] = Field(
        min_length=1,
        description="Texts, or objects {text, intervention?, base_labels?} overriding parameters.",
    )
    parameters: dict[str, Any] = Field(
        default_factory=dict,
        description="Fields of an ExplanationRequest shared by all instances: intervention, method, top_k, ...",
    )


class KServeExplainResponse(BaseModel):
    model_name: str
    explanations: list[ExplanationResponse]


class KServeModelStatus(BaseModel):
    name: str
    ready: bool


class KServePredictRequest(BaseModel):
    instances: list[SafeText] = Field(min_length=1)


class KServePredictResponse(BaseModel):
    predictions: list[dict[str, float]]


def _classifier_ref(rt: Runtime, name: str) -> str | dict[str, Any]:
    """`name` if it is a classifier this service knows; else the KServe predictor it fronts."""
    s = rt.settings
    try:
        rt.classifier(name)
        return name
    except LookupError:
        if not s.kserve.predictor_host:
            raise ApiError(
                404,
                "Not found",
                f"model {name!r} is not a registered classifier and CACE_KSERVE_PREDICTOR_HOST is not set",
                kind="not-found",
            ) from None
        if not s.kserve.labels:
            raise ApiError(
                409,
                "Missing resource",
                "CACE_KSERVE_LABELS must list the predictor's class names",
                kind="missing-resource",
            ) from None
        return {
            "protocol": "kserve-v1",
            "url": f"http://{s.kserve.predictor_host}",
            "model": name,
            "labels": list(s.kserve.labels),
        }


def _requests(body: KServeExplainRequest, ref: str | dict[str, Any]) -> list[ExplanationRequest]:
    out = []
    for i, inst in enumerate(body.instances):
        fields = {**body.parameters, **({"text": inst} if isinstance(inst, str) else inst), "classifier": ref}
        try:
            out.append(ExplanationRequest.model_validate(fields))
        except ValidationError as e:
            raise validation_error(e.errors(), f"body.instances.{i}") from None
    return out


@router.post(
    "/v1/models/{name}:explain",
    operation_id="kserve_explain",
    response_model=KServeExplainResponse,
    responses=problems(404, 409, 413, 422, 502, 504),
)
def kserve_explain(name: str, body: KServeExplainRequest, rt: RuntimeDep) -> dict[str, Any]:
    """KServe V1 explain: one ICaCE explanation per instance (see POST /v1/explanations)."""
    s = rt.settings
    if len(body.instances) > s.limits.max_inline_texts:
        raise field_error(
            "body.instances",
            f"at most {s.limits.max_inline_texts} instances per request (use POST /v1/effects for more)",
            status=413,
        )
    reqs = _requests(body, _classifier_ref(rt, name))
    results = [explain.explain_one(rt, req, prefix=f"body.instances.{i}") for i, req in enumerate(reqs)]
    return {"model_name": name, "explanations": results}


@router.post(
    "/v1/models/{name}:predict",
    operation_id="kserve_predict",
    response_model=KServePredictResponse,
    responses=problems(404, 409, 413, 422, 502, 504),
)
def kserve_predict(name: str, body: KServePredictRequest, rt: RuntimeDep) -> dict[str, Any]:
    """KServe V1 predict: the classifier's probabilities per label, so the explainer can be probed alone."""
    s = rt.settings
    if len(body.instances) > s.limits.max_inline_texts:
        raise field_error(
            "body.instances", f"at most {s.limits.max_inline_texts} instances per request", status=413
        )
    for i, t in enumerate(body.instances):
        if len(t) > s.limits.max_text_chars:
            raise field_error(f"body.instances.{i}", f"at most {s.limits.max_text_chars} characters")
    clf, _ = rt.classifier(_classifier_ref(rt, name))
    probs = clf.predict_proba(body.instances)
    return {"predictions": [explain.as_map(clf.labels, row) for row in probs]}


@router.get(
    "/v1/models/{name}",
    operation_id="kserve_model_status",
    response_model=KServeModelStatus,
    responses=problems(404, 409, 422),
)
def kserve_model_status(name: str, rt: RuntimeDep) -> dict[str, Any]:
    """KServe V1 model readiness."""
    ref = _classifier_ref(rt, name)
    return {"name": name, "ready": bool(rt.ready) if isinstance(ref, str) else bool(rt.loaded.is_set())}
