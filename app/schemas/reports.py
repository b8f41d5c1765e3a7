"""Model reports and model comparisons (POST /v1/reports, POST /v1/comparisons)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from app.schemas.effects import EffectText
from app.schemas.explanations import CLASSIFIER_FIELD, DOMAIN_FIELD
from app.schemas.types import MAX_SEED, Aggregation, NonBlankText, SafeText, StrictFloat, StrictInt

ReportFormat = Literal["json", "csv", "md", "html"]


class SampleSpec(BaseModel):
    """Texts drawn at random from the domain's own corpus (with their known concept labels)."""

    size: StrictInt = Field(200, ge=1, description="How many texts (at most the server's max_report_texts).")
    seed: StrictInt = Field(0, ge=0, le=MAX_SEED)


class ReportOptions(BaseModel):
    """What a report and a comparison share: the domain, the texts, the search and the statistics."""

    domain: str | None = DOMAIN_FIELD
    texts: list[NonBlankText | EffectText] | None = Field(
        None,
        min_length=1,
        description="Texts (strings or {text, id, labels}); known labels spare the taggers. "
        "Give either texts or sample (default: a sample of 200 corpus texts).",
    )
    sample: SampleSpec | None = None
    concepts: list[SafeText] | None = Field(
        None, min_length=1, description="Concepts to cover (default: every concept of the domain)."
    )
    method: SafeText = Field(
        "match",
        description="A counterfactual search (match, splice, splice_median, approx_match, pt_match, generate): "
        "one search per (text, concept, target), its counterfactuals scored for every label.",
    )
    top_k: StrictInt = Field(5, ge=1)
    aggregation: Aggregation = "mean"
    llm: SafeText | dict[str, Any] | None = None
    confidence: StrictFloat = Field(0.95, gt=0.0, lt=1.0, description="Bootstrap CI level.")
    seed: StrictInt = Field(0, ge=0, le=MAX_SEED, description="Seeds the bootstrap and the placebo.")
    top_texts: StrictInt = Field(3, ge=0, le=20, description="Texts shown per cell (those it moved most).")

    @model_validator(mode="after")
    def _one_source_of_texts(self) -> ReportOptions:
        if self.texts is not None and self.sample is not None:
            raise ValueError("give either texts or sample, not both")
        return self


class ReportRequest(ReportOptions):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [{"classifier": "tfidf-lr", "sample": {"size": 200, "seed": 0}, "method": "match"}]
        }
    )

    classifier: SafeText | dict[str, Any] | None = CLASSIFIER_FIELD
    placebo: bool = Field(
        True, description="Run the placebo search (shuffled concept labels) for the p-values."
    )
    alpha: StrictFloat = Field(0.05, gt=0.0, lt=1.0, description="Level of the Holm-corrected placebo test.")


class ComparisonRequest(ReportOptions):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {"classifiers": ["tfidf-lr", "minilm-ft"], "sample": {"size": 200}, "threshold": 0.05}
            ]
        }
    )

    classifiers: list[SafeText | dict[str, Any]] = Field(
        min_length=2, max_length=2, description="[baseline, candidate]: differences are candidate - baseline."
    )
    threshold: StrictFloat = Field(
        0.05, ge=0.0, le=1.0, description="A cell is flagged when a label's |CaCE difference| exceeds it."
    )
    thresholds: dict[SafeText, StrictFloat] | None = Field(
        None, description="Per-concept thresholds (override `threshold` for those concepts)."
    )
