"""Request and response models of the HTTP API (what the OpenAPI spec and generated clients see).

Kept apart from the routes so the wire format is read in one place and stays stable:
field names here are the public contract, and every model carries an example.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field

Aggregation = Literal["mean", "similarity_weighted"]

# Characters no text field may hold: NUL (PostgreSQL text cannot store it) and lone UTF-16
# surrogates (not encodable as UTF-8: every later JSON response holding them would fail).
_UNSTORABLE = re.compile("[\x00\ud800-\udfff]")


def _storable(v: str) -> str:
    if _UNSTORABLE.search(v):
        raise ValueError("must not contain NUL characters or unpaired UTF-16 surrogates")
    return v


def _not_blank(v: str) -> str:
    if not v.strip():
        raise ValueError("must contain non-whitespace characters")
    return v


def _no_bool(v: Any) -> Any:
    # JSON true/false are not numbers: lax validation would read `top_k: true` as 1.
    if isinstance(v, bool):
        raise ValueError("must be a number, not a boolean")
    return v


# Reusable field types: any text the service stores or echoes, and texts to explain.
SafeText = Annotated[str, AfterValidator(_storable)]
NonBlankText = Annotated[str, AfterValidator(_storable), AfterValidator(_not_blank)]
Labels = dict[SafeText, SafeText]
StrictInt = Annotated[int, BeforeValidator(_no_bool)]
StrictFloat = Annotated[float, BeforeValidator(_no_bool)]
# numpy's seed range.
MAX_SEED = 2**32 - 1

EXAMPLE_TEXT = "The food was delicious but the waiter ignored us for twenty minutes."
CLASSIFIER_FIELD = Field(
    None,
    description="A registered classifier name (see /v1/classifiers), or an inline endpoint spec "
    "(e.g. {\"protocol\": \"hf\", \"url\": \"http://host:8080/predict\", \"labels\": [\"neg\",\"pos\"]}); "
    "default: the server's default classifier.",
    examples=["tfidf-lr"],
)
DOMAIN_FIELD = Field(
    None, pattern=r"^[a-z0-9][a-z0-9._-]{0,63}$",
    description="The domain (concept schema, corpus, taggers, space) to explain in (see /v1/domains); "
    "default: the server's default domain.", examples=["cebab"])


class InterventionIn(BaseModel):
    """Set `concept` to `target`. Leave `source` out to have the concept taggers infer it."""

    model_config = ConfigDict(json_schema_extra={"examples": [{"concept": "service", "target": "Positive"}]})
    concept: SafeText = Field(min_length=1, max_length=64, examples=["service"])
    target: SafeText = Field(min_length=1, max_length=64, examples=["Positive"])
    source: SafeText | None = Field(None, max_length=64, examples=["Negative"])


class ExplanationRequest(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [{
        "text": EXAMPLE_TEXT, "intervention": {"concept": "service", "target": "Positive"},
        "classifier": "tfidf-lr", "method": "match", "top_k": 5}]})

    text: NonBlankText = Field(min_length=1, description="The text to explain.", examples=[EXAMPLE_TEXT])
    intervention: InterventionIn
    domain: str | None = DOMAIN_FIELD
    classifier: SafeText | dict[str, Any] | None = CLASSIFIER_FIELD
    method: SafeText | None = Field(
        None, description="auto, generate, match, or a baseline (see GET /v1/methods); default: auto once the "
        "classifier is calibrated on the domain, else match.", examples=["match"])
    top_k: StrictInt = Field(5, ge=1, description="Counterfactuals to average over (K).", examples=[5])
    aggregation: Aggregation = Field("mean", description="How the K counterfactual predictions are combined.")
    similarity_threshold: StrictFloat | None = Field(
        None, ge=-1.0, le=1.0, description="Drop matches below this cosine similarity (matching methods).")
    llm: SafeText | dict[str, Any] | None = Field(
        None, description="Registered LLM name or inline LLM spec for generate (default: CACE_LLM_* settings).")
    base_labels: Labels | None = Field(
        None, description="The text's concept labels, if known (else the domain's taggers infer what a method "
        "needs; a concept without a usable tagger must be given here or as intervention.source).",
        examples=[{"food": "Positive", "service": "Negative", "ambiance": "unknown", "noise": "unknown"}])


class CounterfactualOut(BaseModel):
    text: str
    prediction: dict[str, float] | None = Field(None, description="Classifier probabilities per label.")
    similarity: float | None = Field(None, description="Cosine similarity to the query (matching methods).")
    verification: dict[str, Any] | None = Field(None, description="Verification result (generated texts).")
    source_id: str | None = None


class InterventionOut(BaseModel):
    concept: str
    target: str
    source: str
    source_inferred: bool = Field(description="True when the taggers inferred the source value.")


class Uncertainty(BaseModel):
    spread: dict[str, float] = Field(description="Per-label std of the counterfactual predictions (0 if K < 2).")
    n_counterfactuals: int = Field(description="Counterfactuals the estimate used.")
    interval: dict[str, list[float]] | None = Field(
        None, description="method auto, calibrated: per-label [lower, upper] of the ICaCE (split-conformal)")
    coverage: float | None = Field(None, description="The interval's nominal coverage")
    expected_error: dict[str, Any] | None = Field(
        None, description="method auto, calibrated: held-out error (L2, Cos, NormDiff) for this concept and direction")


class Timings(BaseModel):
    total_ms: float
    source_inference_ms: float
    explain_ms: float


class ExplanationResponse(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [{
        "method": "match", "classifier": "tfidf-lr", "labels": ["1", "2", "3", "4", "5"],
        "base_prediction": {"1": 0.05, "2": 0.3, "3": 0.4, "4": 0.2, "5": 0.05},
        "icace": {"1": -0.03, "2": -0.2, "3": -0.05, "4": 0.18, "5": 0.1},
        "intervention": {"concept": "service", "target": "Positive", "source": "Negative", "source_inferred": True},
        "uncertainty": {"spread": {"1": 0.01, "2": 0.05, "3": 0.06, "4": 0.07, "5": 0.04}, "n_counterfactuals": 5},
        "counterfactuals": [], "cost": {"classifier_calls": 1}, "timings": {"total_ms": 12.0,
                                                                            "source_inference_ms": 3.0,
                                                                            "explain_ms": 9.0},
        "domain": "cebab", "space_id": "default", "pool": {"texts": 11664, "pairs": 26862}, "details": {}}]})

    method: str
    classifier: str
    labels: list[str]
    base_prediction: dict[str, float]
    icace: dict[str, float] = Field(description="Estimated change of each label's probability under the intervention.")
    intervention: InterventionOut
    uncertainty: Uncertainty
    counterfactuals: list[CounterfactualOut]
    cost: dict[str, Any]
    timings: Timings
    domain: str = Field(description="The domain whose corpus, space and taggers answered.")
    space_id: str | None = Field(None, description="The domain's concept space that was searched.")
    pool: dict[str, int] = Field(default_factory=dict, description="Size of the domain's pool (texts, pairs).")
    llm: str | None = None
    details: dict[str, Any] = Field(default_factory=dict)


class EffectText(BaseModel):
    """One text of an effects request (a JSONL line may also be a bare JSON string)."""

    text: NonBlankText = Field(min_length=1)
    id: SafeText | None = Field(None, max_length=256)
    labels: Labels | None = Field(None, description="Known concept labels of this text.")


class EffectsParams(BaseModel):
    """Everything of an effects request but the texts (the JSON part of an upload)."""

    model_config = ConfigDict(json_schema_extra={"examples": [{
        "intervention": {"concept": "food", "target": "Negative"}, "classifier": "tfidf-lr", "method": "pt_match"}]})

    intervention: InterventionIn
    domain: str | None = DOMAIN_FIELD
    classifier: SafeText | dict[str, Any] | None = CLASSIFIER_FIELD
    method: SafeText | None = Field(None, description="As in ExplanationRequest (default: auto once calibrated, "
                                    "else match).", examples=["pt_match"])
    top_k: StrictInt = Field(5, ge=1)
    aggregation: Aggregation = "mean"
    similarity_threshold: StrictFloat | None = Field(None, ge=-1.0, le=1.0)
    llm: SafeText | dict[str, Any] | None = None
    confidence: StrictFloat = Field(0.95, gt=0.0, lt=1.0, description="Bootstrap CI level.")
    seed: StrictInt = Field(0, ge=0, le=MAX_SEED, description="Bootstrap seed (results are reproducible for a seed).")
    mode: Literal["auto", "inline", "job"] = Field(
        "auto", description="auto: inline up to the server's max_inline_texts, else a job.")


class EffectsRequest(EffectsParams):
    model_config = ConfigDict(json_schema_extra={"examples": [{
        "texts": [EXAMPLE_TEXT, "Great pasta, rude staff."],
        "intervention": {"concept": "food", "target": "Negative"}, "classifier": "tfidf-lr", "method": "pt_match"}]})

    texts: list[NonBlankText | EffectText] = Field(min_length=1,
                                                   description="Texts (strings or {text, id, labels}).")


class EffectRow(BaseModel):
    index: int
    id: str | None = None
    status: str = Field(description="done, unchanged (already at target), failed, pending or running.")
    source: str | None = None
    icace: dict[str, float] | None = None
    base_prediction: dict[str, float] | None = None
    n_counterfactuals: int | None = None
    error: str | None = None
    attempts: int | None = None
    finished_at: float | None = None


class CaceResult(BaseModel):
    labels: list[str]
    cace: dict[str, float] = Field(description="Mean ICaCE over the changed texts.")
    ci_low: dict[str, float]
    ci_high: dict[str, float]
    confidence: float
    summary: dict[str, Any]


class EffectsInlineResponse(BaseModel):
    status: Literal["succeeded"] = "succeeded"
    result: CaceResult
    rows: list[EffectRow]


class JobOut(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [{
        "id": "4f1c...", "kind": "effects", "status": "running", "total": 500,
        "counts": {"pending": 300, "running": 8, "done": 190, "failed": 2}, "progress": 0.384}]})

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
    result: dict[str, Any] | None = None
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


class Registration(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [{
        "name": "sentiment-v2", "spec": {"protocol": "v2", "url": "http://mlserver:8080", "model": "sentiment",
                                         "labels": ["1", "2", "3", "4", "5"]}}]})

    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$", examples=["sentiment-v2"])
    spec: dict[str, Any] = Field(description="Endpoint spec (classifier: explainers.classifiers.spec; "
                                             "LLM: explainers.generation.backends.BackendSpec).")
    description: SafeText | None = Field(None, max_length=2000)


class RegistrationOut(BaseModel):
    name: str
    kind: str
    spec: dict[str, Any]
    description: str | None = None
    builtin: bool = False
    created_at: float | None = None


class RegistrationList(BaseModel):
    items: list[RegistrationOut]


class DomainGenerate(BaseModel):
    """Generate counterfactual groups with an LLM before building (for a corpus without edits)."""

    model_config = ConfigDict(extra="forbid")

    llm: str | None = Field(None, description="A registered LLM name; null = the server's default LLM")
    sources: int | None = Field(None, ge=1, le=100000, description="How many corpus texts to edit (null = all)")
    concepts_per_source: int = Field(2, ge=1, le=16, description="Concepts edited per text (2 gives T and C groups)")
    verify_with_taggers: bool = Field(True, description="Drop edits the domain's taggers read as missing the target")
    temperature: float = Field(0.7, ge=0.0, le=2.0)
    max_tokens: int = Field(160, ge=16, le=2048)


class DomainParams(BaseModel):
    """The JSON part of POST /v1/domains (the corpus is the file part)."""

    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [{
        "id": "movie-reviews", "schema": {"concepts": [{"name": "acting", "values": ["bad", "good", "unknown"]}]}}]})

    id: str = Field(pattern=r"^[a-z0-9][a-z0-9._-]{0,63}$", description="New domain id", examples=["movie-reviews"])
    schema_: dict[str, Any] | None = Field(
        None, alias="schema", description="Concept schema {concepts: [{name, values, description?}]}; "
        "default: inferred from the labels seen (a concept some rows lack gets the value `unknown`)")
    description: str | None = Field(None, max_length=500, description="What the domain's texts are")
    generate: DomainGenerate | None = Field(
        None, description="First add LLM-generated counterfactual groups (needs an LLM)")


class CalibrationRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [{"classifier": "tfidf-lr"}]})

    classifier: SafeText = Field(description="A registered (or built-in) classifier name", examples=["tfidf-lr"])
    max_pairs: StrictInt | None = Field(None, ge=50, le=100000, description="Held-out pairs to score "
                                        "(capped by CACE_CALIBRATION_MAX_PAIRS)")


class DomainOut(BaseModel):
    id: str
    default: bool = False
    status: str = "ready"
    schema_: dict[str, Any] | None = Field(None, alias="schema")
    source: str | None = None
    created_at: str | None = None
    stats: dict[str, Any] = Field(default_factory=dict, description="texts, origins, groups, pairs per concept "
                                  "and per direction, value counts")
    taggers: dict[str, Any] = Field(default_factory=dict, description="Per concept: held-out accuracy, majority "
                                    "rate, usable (a concept without a usable tagger needs labels in requests)")
    space: dict[str, Any] = Field(default_factory=dict, description="The trained concept space: hit rates")
    methods: dict[str, dict[str, str | None]] = Field(
        default_factory=dict, description="Per concept, per method: null if available, else why not")
    generation: dict[str, Any] | None = None
    calibrations: dict[str, Any] = Field(default_factory=dict)

    model_config = ConfigDict(populate_by_name=True)


class DomainList(BaseModel):
    domains: list[DomainOut]


class MethodsOut(BaseModel):
    methods: dict[str, str]


class Health(BaseModel):
    status: str
    ready: bool = False
    components: dict[str, dict[str, Any]] = Field(default_factory=dict)
    instance: str | None = None
