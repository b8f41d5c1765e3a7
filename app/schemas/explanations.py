"""One explanation: the request, and the answer with its counterfactuals, uncertainty and cost."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from app.schemas.types import Aggregation, Labels, NonBlankText, SafeText, StrictFloat, StrictInt

EXAMPLE_TEXT = "The food was delicious but the waiter ignored us for twenty minutes."
CLASSIFIER_FIELD = Field(
    None,
    description="A registered classifier name (see /v1/classifiers), or an inline endpoint spec "
    '(e.g. {"protocol": "hf", "url": "http://host:8080/predict", "labels": ["neg","pos"]}); '
    "default: the server's default classifier.",
    examples=["tfidf-lr"],
)
DOMAIN_FIELD = Field(
    None,
    pattern=r"^[a-z0-9][a-z0-9._-]{0,63}$",
    description="The domain (concept schema, corpus, taggers, space) to explain in (see /v1/domains); "
    "default: the server's default domain.",
    examples=["cebab"],
)


class InterventionIn(BaseModel):
    """Set `concept` to `target`. Leave `source` out to have the concept taggers infer it."""

    model_config = ConfigDict(json_schema_extra={"examples": [{"concept": "service", "target": "Positive"}]})
    concept: SafeText = Field(min_length=1, max_length=64, examples=["service"])
    target: SafeText = Field(min_length=1, max_length=64, examples=["Positive"])
    source: SafeText | None = Field(None, max_length=64, examples=["Negative"])


class MethodRequest(BaseModel):
    """What an explanation runs: the intervention, where (domain), on what (classifier), how (method
    and its options). One model for `ExplanationRequest` and `EffectsParams`, so both validate alike."""

    intervention: InterventionIn
    domain: str | None = DOMAIN_FIELD
    classifier: SafeText | dict[str, Any] | None = CLASSIFIER_FIELD
    method: SafeText | None = Field(
        None,
        description="auto, generate, match, or a baseline (see GET /v1/methods); default: auto once the "
        "classifier is calibrated on the domain, else match.",
        examples=["match"],
    )
    top_k: StrictInt = Field(5, ge=1, description="Counterfactuals to average over (K).", examples=[5])
    aggregation: Aggregation = Field("mean", description="How the K counterfactual predictions are combined.")
    similarity_threshold: StrictFloat | None = Field(
        None, ge=-1.0, le=1.0, description="Drop matches below this cosine similarity (matching methods)."
    )
    llm: SafeText | dict[str, Any] | None = Field(
        None,
        description="Registered LLM name or inline LLM spec for generate (default: CACE_LLM_* settings).",
    )

    def method_options(self) -> dict[str, Any]:
        """The method options this request sets (a field left at its default sets nothing): the
        service checks each against what the method declares (`explainers.registry.method_options`)."""
        return {
            k: getattr(self, k) for k in METHOD_OPTION_FIELDS if getattr(self, k) != METHOD_OPTION_FIELDS[k]
        }


# Request fields that are method options (checked against the method's declaration), with their defaults.
METHOD_OPTION_FIELDS: dict[str, Any] = {"aggregation": "mean", "similarity_threshold": None}


class ExplanationRequest(MethodRequest):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "text": EXAMPLE_TEXT,
                    "intervention": {"concept": "service", "target": "Positive"},
                    "classifier": "tfidf-lr",
                    "method": "match",
                    "top_k": 5,
                }
            ]
        }
    )

    text: NonBlankText = Field(min_length=1, description="The text to explain.", examples=[EXAMPLE_TEXT])
    base_labels: Labels | None = Field(
        None,
        description="The text's concept labels, if known (else the domain's taggers infer what a method "
        "needs; a concept without a usable tagger must be given here or as intervention.source).",
        examples=[{"food": "Positive", "service": "Negative", "ambiance": "unknown", "noise": "unknown"}],
    )


class CounterfactualOut(BaseModel):
    text: str
    prediction: dict[str, float] | None = Field(None, description="Classifier probabilities per label.")
    similarity: float | None = Field(None, description="Cosine similarity to the query (matching methods).")
    verification: dict[str, Any] | None = Field(None, description="Verification result (generated texts).")
    source_id: str | None = None
    concepts: dict[str, str] | None = Field(
        None,
        description="The domain's concept taggers' reading of this text, per concept with a usable tagger; "
        "compare with the answer's base_concepts to see which concepts the counterfactual changed.",
    )


class InterventionOut(BaseModel):
    concept: str
    target: str
    source: str
    source_inferred: bool = Field(description="True when the taggers inferred the source value.")


class Uncertainty(BaseModel):
    spread: dict[str, float] = Field(
        description="Per-label spread of the counterfactual predictions (std, or scaled MAD for median "
        "aggregation; for auto, its components' spreads); not measured, and 0, when n_counterfactuals < 2."
    )
    n_counterfactuals: int = Field(description="Counterfactuals the estimate used.")
    interval: dict[str, list[float]] | None = Field(
        None, description="method auto, calibrated: per-label [lower, upper] of the ICaCE (split-conformal)"
    )
    coverage: float | None = Field(None, description="The interval's nominal coverage")
    expected_error: dict[str, Any] | None = Field(
        None,
        description="method auto, calibrated: held-out error (L2, Cos, NormDiff) for this concept and direction",
    )
    pairs_origin: str | None = Field(
        None,
        description="method auto, calibrated: who made the held-out pairs the expected error was measured on "
        "(human, llm: an LLM wrote the edits, mixed; null for a calibration older than this field)",
    )
    valid: bool | None = Field(
        None,
        description="method auto, calibrated: whether the expected error and the interval hold for this text's "
        "situation (false: few calibration pairs had a base prediction like this text's, or every calibration "
        "pair touched the classifier's training texts; `situation.why` says which). Null when not checked.",
    )
    situation: dict[str, Any] | None = Field(
        None,
        description="method auto, calibrated: how this text's base prediction compares with the calibration "
        "pairs' (effective_pairs behind the numbers, confidence and its percentile, error_ratio, why, fallback: "
        "the robust estimator that answered where the calibration does not describe the text)",
    )


class Timings(BaseModel):
    """Where the request's time went; `total_ms` counts everything it waited for, from its arrival."""

    total_ms: float = Field(description="From the request's arrival to its answer (every part below).")
    waited_ms: float = Field(
        0.0, description="Before the explanation started: reading the body, auth, a free worker."
    )
    resolve_ms: float = Field(
        0.0,
        description="Domain, classifier and explainer lookup, including building an explainer not built yet.",
    )
    lock_wait_ms: float = Field(0.0, description="Waiting for the explainer while another request used it.")
    source_inference_ms: float
    explain_ms: float
    concepts_ms: float = Field(0.0, description="Reading every concept of the text and counterfactuals.")


class ExplanationResponse(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "method": "match",
                    "classifier": "tfidf-lr",
                    "labels": ["1", "2", "3", "4", "5"],
                    "base_prediction": {"1": 0.05, "2": 0.3, "3": 0.4, "4": 0.2, "5": 0.05},
                    "icace": {"1": -0.03, "2": -0.2, "3": -0.05, "4": 0.18, "5": 0.1},
                    "intervention": {
                        "concept": "service",
                        "target": "Positive",
                        "source": "Negative",
                        "source_inferred": True,
                    },
                    "uncertainty": {
                        "spread": {"1": 0.01, "2": 0.05, "3": 0.06, "4": 0.07, "5": 0.04},
                        "n_counterfactuals": 5,
                    },
                    "counterfactuals": [],
                    "cost": {"classifier_calls": 1},
                    "timings": {"total_ms": 12.0, "source_inference_ms": 3.0, "explain_ms": 9.0},
                    "domain": "cebab",
                    "space_id": "default",
                    "pool": {"texts": 11664, "pairs": 26862},
                    "details": {},
                }
            ]
        }
    )

    method: str
    classifier: str
    labels: list[str]
    base_prediction: dict[str, float]
    icace: dict[str, float] = Field(
        description="Estimated change of each label's probability under the intervention."
    )
    intervention: InterventionOut
    uncertainty: Uncertainty
    counterfactuals: list[CounterfactualOut]
    cost: dict[str, Any]
    timings: Timings
    domain: str = Field(description="The domain whose corpus, space and taggers answered.")
    space_id: str | None = Field(None, description="The domain's concept space that was searched.")
    pool: dict[str, int] = Field(
        default_factory=dict, description="Size of the domain's pool (texts, pairs)."
    )
    llm: str | None = None
    base_concepts: dict[str, str] | None = Field(
        None,
        description="The domain's concept taggers' reading of the text, per concept with a usable tagger "
        "(absent when the domain has no taggers).",
    )
    details: dict[str, Any] = Field(default_factory=dict)
