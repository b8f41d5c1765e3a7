"""What a server holds: registered classifiers and LLMs, domains and their calibrations, methods, health."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from app.schemas.types import SafeText, StrictInt


class Registration(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "name": "sentiment-v2",
                    "spec": {
                        "protocol": "v2",
                        "url": "http://mlserver:8080",
                        "model": "sentiment",
                        "labels": ["1", "2", "3", "4", "5"],
                    },
                }
            ]
        }
    )

    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$", examples=["sentiment-v2"])
    spec: dict[str, Any] = Field(
        description="Endpoint spec (classifier: explainers.classifiers.spec; "
        "LLM: explainers.generation.backends.BackendSpec)."
    )
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
    sources: int | None = Field(
        None, ge=1, le=100000, description="How many corpus texts to edit (null = all)"
    )
    concepts_per_source: int = Field(
        2, ge=1, le=16, description="Concepts edited per text (2 gives T and C groups)"
    )
    verify_with_taggers: bool = Field(
        True, description="Drop edits the domain's taggers read as missing the target"
    )
    temperature: float = Field(0.7, ge=0.0, le=2.0)
    max_tokens: int = Field(160, ge=16, le=2048)


class DomainLLMBuild(BaseModel):
    """Label the texts and write the counterfactual pairs with an LLM (a corpus without labels or edits)."""

    model_config = ConfigDict(extra="forbid")

    llm: str | None = Field(
        None, max_length=200, description="A registered LLM name; null = the server's default LLM"
    )
    max_llm_calls: int | None = Field(
        None,
        ge=1,
        le=100_000_000,
        description="This build's cap on LLM calls (at most CACE_LLM_BUILD_MAX_CALLS)",
    )
    edits_per_direction: int | None = Field(
        None,
        ge=1,
        le=100_000,
        description="Edits asked per concept direction; null = what the budget allows (<= 50)",
    )
    max_concurrency: int = Field(4, ge=1, le=64, description="LLM requests in flight at once")
    shots_per_value: int = Field(
        1, ge=0, le=5, description="Human-labelled rows shown per value as worked examples"
    )
    max_changed_sentences: int = Field(
        1, ge=1, le=10, description="Edits changing more sentences are dropped"
    )
    temperature: float = Field(0.7, ge=0.0, le=2.0)
    max_tokens: int = Field(200, ge=16, le=2048)
    seed: int = Field(0, ge=0, le=2**31 - 1)


class DomainParams(BaseModel):
    """The JSON part of POST /v1/domains (the corpus is the file part)."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "id": "movie-reviews",
                    "schema": {"concepts": [{"name": "acting", "values": ["bad", "good", "unknown"]}]},
                }
            ]
        },
    )

    id: str = Field(
        pattern=r"^[a-z0-9][a-z0-9._-]{0,63}$", description="New domain id", examples=["movie-reviews"]
    )
    schema_: dict[str, Any] | None = Field(
        None,
        alias="schema",
        description="Concept schema {concepts: [{name, values, description?}]}; "
        "default: inferred from the labels seen (a concept some rows lack gets the value `unknown`)",
    )
    description: str | None = Field(None, max_length=500, description="What the domain's texts are")
    generate: DomainGenerate | None = Field(
        None, description="First add LLM-generated counterfactual groups (needs an LLM)"
    )
    llm_build: DomainLLMBuild | None = Field(
        None,
        description="Labels and pairs by an LLM from the schema's definitions (see README, From raw texts); "
        "used by itself when some concept has no label in the corpus",
    )
    dry_run: bool = Field(
        False, description="Answer 200 with the build's plan (LLM calls, tokens, time); build nothing"
    )


class CalibrationRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [{"classifier": "tfidf-lr"}]})

    classifier: SafeText = Field(
        description="A registered (or built-in) classifier name", examples=["tfidf-lr"]
    )
    max_pairs: StrictInt | None = Field(
        None, ge=50, le=100000, description="Held-out pairs to score (capped by CACE_CALIBRATION_MAX_PAIRS)"
    )
    trained_on: list[SafeText] | None = Field(
        None,
        max_length=200_000,
        description="Ids of the domain's texts the classifier was trained on ([] for none). A classifier is "
        "overconfident on its training texts, so pairs touching them are left out of the calibration when "
        "enough others remain (else kept, and where it memorised them strongly every answer says its expected "
        "error was measured on trained texts); the calibration reports how differently the classifier behaves "
        "on them. Omitted: the corpus's trained column, else the originals when the classifier is much more "
        "confident on them than on their edits (reported as suspected)",
        examples=[["000000_000000", "000001_000000"]],
    )


class DomainOut(BaseModel):
    id: str
    default: bool = False
    status: str = "ready"
    schema_: dict[str, Any] | None = Field(None, alias="schema")
    source: str | None = None
    created_at: str | None = None
    stats: dict[str, Any] = Field(
        default_factory=dict,
        description="texts, origins, groups, pairs per concept and per direction, value counts",
    )
    taggers: dict[str, Any] = Field(
        default_factory=dict,
        description="Per concept: held-out accuracy, majority "
        "rate, usable (a concept without a usable tagger needs labels in requests)",
    )
    space: dict[str, Any] = Field(default_factory=dict, description="The trained concept space: hit rates")
    methods: dict[str, dict[str, str | None]] = Field(
        default_factory=dict, description="Per concept, per method: null if available, else why not"
    )
    generation: dict[str, Any] | None = None
    provenance: dict[str, Any] | None = Field(
        None,
        description="Which labels and pairs are human and which LLM-made (pairs_origin: human, llm, mixed)",
    )
    llm_build: dict[str, Any] | None = Field(
        None, description="An LLM-built domain: its plan, labelling report per concept, pairs report, cost"
    )
    progress: dict[str, Any] | None = Field(None, description="While building: the stage and how far it is")
    task: str | None = Field(None, description="What the classifiers' labels mean in this domain")
    label_names: dict[str, str] | None = Field(
        None, description="A readable name per classifier label (e.g. '4' -> '4 stars')"
    )
    calibrations: dict[str, Any] = Field(default_factory=dict)

    model_config = ConfigDict(populate_by_name=True)


class DomainList(BaseModel):
    domains: list[DomainOut]


class MethodsOut(BaseModel):
    methods: dict[str, str]
    unavailable: dict[str, str] = Field(
        default_factory=dict,
        description="Methods above that cannot run as this server is configured now, with the reason "
        "(e.g. generate while no LLM is set or registered; a request's inline LLM spec still works).",
    )


class StageOut(BaseModel):
    name: str
    status: Literal["pending", "running", "done", "reused"] = Field(
        description="reused: its output came from an earlier, interrupted run of the same build."
    )
    seconds: float | None = Field(None, description="How long it took (done stages).")
    cpu_s: float | None = Field(None, description="Process CPU seconds (all threads) while it ran.")


class StartProgress(BaseModel):
    """Where a loading component is: its stages, the percent done and an ETA from the measured rate."""

    stage: str | None = Field(None, description="The stage running now (None between stages or when done).")
    stage_index: int | None = Field(None, description="1-based position of the running stage.")
    stage_count: int = 0
    stage_percent: float | None = None
    note: str = Field("", description="What the running stage is counting, e.g. '4096/11728 text'.")
    percent: float = Field(0.0, description="Share of the whole load done, 0-100 (stages weighted by cost).")
    elapsed_s: float = 0.0
    eta_s: float | None = Field(
        None, description="Seconds left at the rate measured so far; None until measured."
    )
    stages: list[StageOut] = Field(default_factory=list)


class ComponentOut(BaseModel):
    status: str = Field(description="pending, loading, ready, failed, unavailable or degraded.")
    detail: str = ""
    required: bool = True
    seconds: float | None = Field(None, description="Load time, once loaded.")
    progress: StartProgress | None = Field(None, description="Stages of a default being loaded or built.")


class ExplainerStateOut(BaseModel):
    """One explainer of the default domain, built (or being built) by this replica."""

    method: str
    classifier: str | None = Field(None, description="The classifier it was fit for (auto, stacked).")
    llm: str | None = Field(None, description="The LLM it generates with (generate).")
    options: list[str] = Field(
        default_factory=list, description="The method options it was built with (names)."
    )
    status: str = Field(description="loading, ready or failed.")
    detail: str = Field("", description="Why it failed.")
    seconds: float | None = Field(None, description="Build and load time, once done.")


class Health(BaseModel):
    status: str
    ready: bool = False
    components: dict[str, ComponentOut] = Field(default_factory=dict)
    explainers: list[ExplainerStateOut] = Field(
        default_factory=list,
        description="The default domain's explainers this replica holds, with their state (readyz only).",
    )
    instance: str | None = None
