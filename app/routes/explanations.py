"""POST /v1/explanations: the ICaCE of one intervention on one text."""

from __future__ import annotations

from fastapi import APIRouter, Request

from app import explain
from app.routes.common import RuntimeDep, problems
from app.schemas import ExplanationRequest, ExplanationResponse

router = APIRouter(tags=["explanations"])


@router.post(
    "/v1/explanations",
    operation_id="create_explanation",
    response_model=ExplanationResponse,
    responses=problems(409, 422, 502, 504),
)
def create_explanation(req: ExplanationRequest, request: Request, rt: RuntimeDep) -> dict:
    """How would the classifier's output change if only `intervention.concept` were `intervention.target`?

    Finds counterfactuals in the request's domain (default: the server's) by the chosen
    method (its trained concept space for `match`, an LLM for `generate`, a baseline
    otherwise), scores them with the classifier, and returns the per-label ICaCE with the
    counterfactuals used and the domain, space and pool they came from.
    """
    return explain.explain_one(rt, req, received_at=request.scope.get("state", {}).get("received_at"))
