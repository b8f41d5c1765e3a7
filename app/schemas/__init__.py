"""Request and response models of the HTTP API (what the OpenAPI spec and generated clients see).

Kept apart from the routes so the wire format is read in one place and stays stable: field
names here are the public contract, and every model carries an example. One module per part
of the API; this package is the one import routes use.
"""

from app.schemas.catalog import (
    CalibrationRequest,
    DomainGenerate,
    DomainList,
    DomainLLMBuild,
    DomainOut,
    DomainParams,
    Health,
    MethodsOut,
    Registration,
    RegistrationList,
    RegistrationOut,
)
from app.schemas.effects import (
    CaceResult,
    EffectRow,
    EffectsInlineResponse,
    EffectsParams,
    EffectsRequest,
    EffectText,
    JobList,
    JobOut,
    RowsPage,
)
from app.schemas.explanations import (
    CLASSIFIER_FIELD,
    DOMAIN_FIELD,
    EXAMPLE_TEXT,
    CounterfactualOut,
    ExplanationRequest,
    ExplanationResponse,
    InterventionIn,
    InterventionOut,
    Timings,
    Uncertainty,
)
from app.schemas.reports import ComparisonRequest, ReportFormat, ReportRequest, SampleSpec
from app.schemas.types import (
    MAX_SEED,
    Aggregation,
    Labels,
    NonBlankText,
    SafeText,
    StrictFloat,
    StrictInt,
)

__all__ = [
    "ComparisonRequest",
    "ReportFormat",
    "ReportRequest",
    "SampleSpec",
    "Aggregation",
    "CLASSIFIER_FIELD",
    "CaceResult",
    "CalibrationRequest",
    "CounterfactualOut",
    "DOMAIN_FIELD",
    "DomainGenerate",
    "DomainLLMBuild",
    "DomainList",
    "DomainOut",
    "DomainParams",
    "EXAMPLE_TEXT",
    "EffectRow",
    "EffectText",
    "EffectsInlineResponse",
    "EffectsParams",
    "EffectsRequest",
    "ExplanationRequest",
    "ExplanationResponse",
    "Health",
    "InterventionIn",
    "InterventionOut",
    "JobList",
    "JobOut",
    "Labels",
    "MAX_SEED",
    "MethodsOut",
    "NonBlankText",
    "Registration",
    "RegistrationList",
    "RegistrationOut",
    "RowsPage",
    "SafeText",
    "StrictFloat",
    "StrictInt",
    "Timings",
    "Uncertainty",
]
