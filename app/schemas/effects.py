"""Effects over many texts (CaCE), and the jobs that run them."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from app.schemas.catalog import StartProgress
from app.schemas.explanations import (
    EXAMPLE_TEXT,
    MethodRequest,
)
from app.schemas.types import MAX_SEED, Labels, NonBlankText, SafeText, StrictFloat, StrictInt


class EffectText(BaseModel):
    """One text of an effects request (a JSONL line may also be a bare JSON string)."""

    text: NonBlankText = Field(min_length=1)
    id: SafeText | None = Field(None, max_length=256)
    labels: Labels | None = Field(None, description="Known concept labels of this text.")


class EffectsParams(MethodRequest):
    """Everything of an effects request but the texts (the JSON part of an upload)."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "intervention": {"concept": "food", "target": "Negative"},
                    "classifier": "tfidf-lr",
                    "method": "pt_match",
                }
            ]
        }
    )

    confidence: StrictFloat = Field(0.95, gt=0.0, lt=1.0, description="Bootstrap CI level.")
    seed: StrictInt = Field(
        0, ge=0, le=MAX_SEED, description="Bootstrap seed (results are reproducible for a seed)."
    )
    mode: Literal["auto", "inline", "job"] = Field(
        "auto", description="auto: inline up to the server's max_inline_texts, else a job."
    )


class EffectsRequest(EffectsParams):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "texts": [EXAMPLE_TEXT, "Great pasta, rude staff."],
                    "intervention": {"concept": "food", "target": "Negative"},
                    "classifier": "tfidf-lr",
                    "method": "pt_match",
                }
            ]
        }
    )

    texts: list[NonBlankText | EffectText] = Field(
        min_length=1, description="Texts (strings or {text, id, labels})."
    )


class EffectRow(BaseModel):
    index: int
    id: str | None = None
    status: str = Field(description="done, unchanged (already at target), failed, pending or running.")
    source: str | None = None
    icace: dict[str, float] | None = None
    base_prediction: dict[str, float] | None = None
    n_counterfactuals: int | None = None
    valid: bool | None = Field(
        None,
        description="method auto, calibrated: whether its calibration describes this text (see the "
        "explanation's uncertainty.valid); null when not checked",
    )
    error: str | None = None
    attempts: int | None = None
    finished_at: float | None = None


class CaceResult(BaseModel):
    labels: list[str]
    cace: dict[str, float] = Field(description="Mean ICaCE over the changed texts.")
    ci_low: dict[str, float]
    ci_high: dict[str, float]
    confidence: float
    summary: dict[str, Any] = Field(
        description="Counts (n_texts, n_used: the changed texts the CaCE is over, n_unchanged, n_failed), "
        "sources, mean |ICaCE|, the method; for calibrated auto, calibration_checked and "
        "calibration_not_valid (texts the calibration does not describe)."
    )
    warnings: list[str] = Field(
        default_factory=list, description="What the numbers do not show, e.g. texts that failed."
    )


class EffectsInlineResponse(BaseModel):
    status: Literal["succeeded"] = "succeeded"
    result: CaceResult
    rows: list[EffectRow]


class EffectsJobResult(CaceResult):
    """The result of an effects job: what the same request answers inline."""

    kind: Literal["effects"] = "effects"


class DomainBuildResult(BaseModel):
    """The result of a domain build: what GET /v1/domains/{id} then describes."""

    kind: Literal["domain"] = "domain"
    domain_id: str
    stats: dict[str, Any] = Field(
        default_factory=dict, description="texts, origins, groups, pairs per concept"
    )
    taggers: dict[str, Any] = Field(
        default_factory=dict, description="Per concept: accuracy, majority, usable"
    )
    space: dict[str, Any] = Field(default_factory=dict, description="The trained concept space: hit rates")
    methods: dict[str, dict[str, str | None]] = Field(default_factory=dict)
    generation: dict[str, Any] | None = None


class CalibrationJobResult(BaseModel):
    """The result of a calibration: the classifier's held-out error table on the domain."""

    kind: Literal["calibration"] = "calibration"
    domain_id: str
    classifier: str
    created_at: str | float | None = None
    fingerprint: str | None = None
    cost: dict[str, Any] | None = None
    heldout_pairs: int | None = None
    coverage: dict[str, Any] | None = None
    default_estimator: str | None = None
    auto: dict[str, Any] | None = Field(None, description="auto's held-out error (macro)")
    zero: dict[str, Any] | None = None
    table: dict[str, Any] = Field(default_factory=dict, description="Per estimator: held-out error (macro)")


class _CellsResult(BaseModel):
    """What a report and a comparison share: per (concept, source, target) cell its numbers, the
    cells skipped and why, and the cost; fields beyond these are kept as they are."""

    model_config = ConfigDict(extra="allow")

    domain: str | None = None
    method: str | None = None
    top_k: int | None = None
    n_texts: int | None = None
    cells: list[dict[str, Any]] = Field(default_factory=list)
    skipped: list[dict[str, Any]] = Field(default_factory=list)
    cost: dict[str, Any] | None = None


class ReportJobResult(_CellsResult):
    """The result of a model report: per cell its CaCE, CI and tests (GET /v1/reports/{id} renders it)."""

    kind: Literal["report"] = "report"
    classifier: str | None = None


class ComparisonJobResult(_CellsResult):
    """The result of a comparison of two classifiers on the same counterfactuals."""

    kind: Literal["comparison"] = "comparison"


# One result model per job kind, told apart by `kind` (the job's kind). A new job kind adds its
# result model here (tests/test_startup.py checks every handler the app mounts has one).
JobResult = Annotated[
    EffectsJobResult | DomainBuildResult | CalibrationJobResult | ReportJobResult | ComparisonJobResult,
    Field(discriminator="kind"),
]
JOB_RESULT_KINDS = ("effects", "domain", "calibration", "report", "comparison")


class JobOut(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "id": "4f1c...",
                    "kind": "effects",
                    "status": "running",
                    "total": 500,
                    "counts": {"pending": 300, "running": 8, "done": 190, "failed": 2},
                    "progress": 0.384,
                }
            ]
        }
    )

    id: str
    kind: str
    status: Literal["queued", "running", "succeeded", "failed", "cancelled"]
    total: int
    counts: dict[str, int] = Field(default_factory=dict)
    progress: float = 0.0
    error: str | None = None
    item_errors: list[dict[str, Any]] = Field(default_factory=list)
    created_at: float
    started_at: float | None = None
    finished_at: float | None = None
    queued_by: str | None = Field(
        None,
        description="Set when the service queued the job itself (e.g. the calibration a classifier's first "
        "explanation on a domain starts): what queued it. None: a client did.",
    )
    stages: StartProgress | None = Field(
        None, description="Stages of the running work (domain builds, calibrations), percent and ETA."
    )
    result: JobResult | None = Field(None, description="Once succeeded: the kind's result model.")
    links: dict[str, str] = Field(default_factory=dict)


class JobList(BaseModel):
    jobs: list[JobOut]
    total: int


class RowsPage(BaseModel):
    rows: list[EffectRow]
    offset: int
    limit: int
    total: int
    next_offset: int | None
