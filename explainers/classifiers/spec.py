"""Classifier endpoint specs: validated JSON that says how to reach a classifier.

The service accepts these inline in a request and as registrations, so a bad spec must
fail at validation with a message naming the field, never later in the middle of an
explanation. One pydantic model per protocol, discriminated on `protocol`:
"v2" | "kserve-v1" | "hf" | "template" | "openai-chat" | "openai-completions" | "sklearn" |
"transformers".
`build_classifier(spec)` turns a spec into a ready `Classifier`, wrapped in a prediction
cache unless asked not to.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from typing import Annotated, Any, Literal

import httpx
from pydantic import BaseModel, ConfigDict, Field, RootModel, field_validator, model_validator

from explainers.classifiers.base import Classifier
from explainers.classifiers.cache import CachingClassifier
from explainers.classifiers.http import HttpOptions
from explainers.classifiers.openai_chat import DEFAULT_PROMPT
from explainers.classifiers.template import TEXT, TEXTS, _has, parse_path
from explainers.outbound import MAX_RETRIES

REDACTED = "***"


def _check_labels(v: list[str] | None) -> list[str] | None:
    if v is None:
        return v
    if any(not s for s in v):
        raise ValueError("labels must be non-empty strings")
    dup = sorted({s for s in v if v.count(s) > 1})
    if dup:
        raise ValueError(f"labels must be unique; repeated: {dup}")
    return v


class _Base(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str | None = Field(
        None, max_length=200, description="A display name; defaults to protocol:model@url."
    )

    def key(self) -> str:
        """A stable identity for the prediction cache: same spec (minus secrets) -> same key."""
        data = self.model_dump(mode="json", exclude={"headers", "name"})
        return (
            f"{data.get('protocol')}:"
            + hashlib.sha1(json.dumps(data, sort_keys=True).encode()).hexdigest()[:16]
        )

    def redacted(self) -> dict[str, Any]:
        """The spec as JSON with header values (auth tokens) masked, for storing and echoing back."""
        data = self.model_dump(mode="json")
        if data.get("headers"):
            data["headers"] = {k: REDACTED for k in data["headers"]}
        return data


class _HttpSpec(_Base):
    url: str = Field(..., min_length=1, max_length=2000, description="http(s) URL of the endpoint.")
    labels: list[str] = Field(
        ...,
        min_length=1,
        max_length=1000,
        description="The class names in the order explanations report them.",
    )
    logits: bool = Field(False, description="True if the endpoint returns logits (softmax is applied).")
    endpoint_labels: list[str] | None = Field(
        None,
        description="The endpoint's own class order for positional score lists, when it differs from labels.",
    )
    label_map: dict[str, str] | None = Field(
        None, description="Rename endpoint labels, e.g. {'LABEL_0': '1'}."
    )
    batch_size: int = Field(32, ge=1, le=4096)
    max_concurrency: int = Field(4, ge=1, le=64)
    timeout_s: float = Field(30.0, gt=0, le=600)
    connect_timeout_s: float = Field(5.0, gt=0, le=120)
    retries: int = Field(3, ge=0, le=MAX_RETRIES)
    backoff_s: float = Field(0.25, ge=0, le=60)
    retry_after_max_s: float = Field(30.0, ge=0, le=600)
    headers: dict[str, str] = Field(
        default_factory=dict,
        repr=False,
        description="Extra request headers, e.g. Authorization; masked when echoed.",
    )

    @field_validator("labels")
    @classmethod
    def _labels(cls, v: list[str] | None) -> list[str] | None:
        return _check_labels(v)

    @field_validator("url")
    @classmethod
    def _url(cls, v: str) -> str:
        try:
            u = httpx.URL(v)
        except Exception as e:  # httpx raises InvalidURL and others for garbage
            raise ValueError(f"not a valid URL: {e}") from e
        if u.scheme not in ("http", "https") or not u.host:
            raise ValueError("url must be an absolute http:// or https:// URL with a host")
        return v

    @model_validator(mode="after")
    def _endpoint_labels(self) -> _HttpSpec:
        if self.endpoint_labels is not None:
            mapped = [(self.label_map or {}).get(x, x) for x in self.endpoint_labels]
            if sorted(mapped) != sorted(self.labels):
                raise ValueError(
                    f"endpoint_labels {self.endpoint_labels} must name the same classes as labels "
                    f"{self.labels} (after label_map)"
                )
        return self

    def options(self) -> HttpOptions:
        return HttpOptions(
            batch_size=self.batch_size,
            max_concurrency=self.max_concurrency,
            timeout_s=self.timeout_s,
            connect_timeout_s=self.connect_timeout_s,
            retries=self.retries,
            backoff_s=self.backoff_s,
            retry_after_max_s=self.retry_after_max_s,
            headers=dict(self.headers),
        )

    def common(self) -> dict[str, Any]:
        return {
            "logits": self.logits,
            "label_map": self.label_map,
            "options": self.options(),
            "name": self.name,
        }


class V2Spec(_HttpSpec):
    """Open Inference Protocol V2 (MLServer, Triton, KServe V2); url is the server's base URL."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "protocol": "v2",
                    "url": "http://127.0.0.1:8080",
                    "model": "tfidf-lr",
                    "labels": ["1", "2", "3", "4", "5"],
                    "input_parameters": {"content_type": "str"},
                    "request_outputs": ["predict_proba"],
                }
            ]
        }
    )

    protocol: Literal["v2"]
    model: str = Field(..., min_length=1, max_length=200)
    version: str | None = None
    input_name: str = Field("text", min_length=1)
    shape: Literal["n1", "n"] = Field("n1", description="BYTES input shape: [n, 1] or [n].")
    input_parameters: dict[str, Any] | None = Field(
        None, description="e.g. {'content_type': 'str'} for MLServer."
    )
    request_parameters: dict[str, Any] | None = None
    output_name: str | None = Field(None, description="Which output holds the scores (default: the first).")
    request_outputs: list[str] | None = Field(None, description="Outputs to ask for, e.g. ['predict_proba'].")


class KServeV1Spec(_HttpSpec):
    """KServe V1 `:predict`; url is the server's base URL."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "protocol": "kserve-v1",
                    "url": "http://127.0.0.1:8080",
                    "model": "sentiment",
                    "labels": ["negative", "positive"],
                }
            ]
        }
    )

    protocol: Literal["kserve-v1"]
    model: str = Field(..., min_length=1, max_length=200)
    instance_key: str | None = Field(None, description="Send {instance_key: text} instead of bare strings.")


class HFSpec(_HttpSpec):
    """Hugging Face text-classification JSON (Inference Endpoints, TEI /predict); url is the full POST URL."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "protocol": "hf",
                    "url": "http://127.0.0.1:8080/predict",
                    "labels": ["1", "2", "3", "4", "5"],
                },
                {
                    "protocol": "hf",
                    "url": "https://example.endpoints.huggingface.cloud",
                    "labels": ["NEGATIVE", "POSITIVE"],
                    "parameters": {"top_k": None},
                    "headers": {"Authorization": "Bearer hf_..."},
                },
            ]
        }
    )

    protocol: Literal["hf"]
    batch: bool = Field(True, description="Send a list of texts; false sends one string per request.")
    parameters: dict[str, Any] | None = Field(None, description="Sent as 'parameters', e.g. {'top_k': null}.")
    extra: dict[str, Any] | None = Field(
        None, description="Extra top-level fields, e.g. TEI's {'truncate': true}."
    )


class TemplateSpec(_HttpSpec):
    """A custom JSON API: a request template and JSON paths into the response; url is the full POST URL."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "protocol": "template",
                    "url": "http://127.0.0.1:9000/score",
                    "labels": ["neg", "pos"],
                    "request_template": {"documents": "{{texts}}", "options": {"probabilities": True}},
                    "scores_path": "data.results[*].probs",
                    "labels_path": "data.classes",
                }
            ]
        }
    )

    protocol: Literal["template"]
    request_template: Any = Field(..., description=f"JSON with {TEXTS!r} (the batch) or {TEXT!r} (one text).")
    scores_path: str = Field(
        ..., min_length=1, description="Path to the n score rows, e.g. data.results[*].probs"
    )
    labels_path: str | None = Field(None, description="Path to the class names (one list, or one per row).")

    @field_validator("scores_path", "labels_path")
    @classmethod
    def _path(cls, v: str | None) -> str | None:
        if v is not None:
            parse_path(v)
        return v

    @field_validator("request_template")
    @classmethod
    def _template(cls, v: Any) -> Any:
        if _has(v, TEXTS) == _has(v, TEXT):
            raise ValueError(
                f"must contain exactly one kind of placeholder: {TEXTS!r} (list of texts) "
                f"or {TEXT!r} (one text per request)"
            )
        return v


class _OpenAISpec(_HttpSpec):
    """A prompted LLM as a classifier (see explainers.classifiers.openai_chat); url is the API base, e.g. …/v1."""

    model: str = Field(
        ..., min_length=1, max_length=200, description="The model name sent with each request."
    )
    prompt: str = Field(
        DEFAULT_PROMPT,
        min_length=1,
        max_length=20_000,
        description="Prompt template with {text} and optionally {labels} (comma-separated, in order).",
    )
    scoring: Literal["logprobs", "sequence", "sampling"] = Field(
        "logprobs",
        description="logprobs: top_logprobs at the answer position; sequence (completions only): each "
        "label's continuation log-probability, token by token via follow-up requests; sampling: label "
        "frequencies over n answers.",
    )
    top_logprobs: int = Field(20, ge=1, le=20)
    n: int = Field(10, ge=1, le=100, description="Sampling: answers per text.")
    temperature: float = Field(1.0, ge=0, le=2, description="Sampling: temperature of the answers.")
    max_tokens: int = Field(8, ge=1, le=256, description="Sampling: longest answer.")
    seed: int | None = Field(
        0, description="Sent as seed (shifted per follow-up sample) where servers honour it."
    )
    max_invalid_fraction: float = Field(
        0.5,
        ge=0,
        le=1,
        description="Sampling: more answers naming no label than this fraction make the prediction fail.",
    )
    extra_body: dict[str, Any] | None = Field(
        None,
        description="Extra request fields, e.g. {'grammar': ...} (llama.cpp) or {'guided_choice': [...]} "
        "(vLLM) to constrain sampled answers.",
    )
    batch_size: int = Field(
        1, ge=1, le=4096, description="Texts per work unit; one request per text either way."
    )

    @model_validator(mode="after")
    def _llm_fields(self) -> _OpenAISpec:
        if "{text}" not in self.prompt:
            raise ValueError("prompt must contain the placeholder {text}")
        if self.logits or self.endpoint_labels is not None:
            raise ValueError(
                "logits and endpoint_labels do not apply to LLM classifiers (label_map may alias "
                "answers onto labels)"
            )
        for alias, lab in (self.label_map or {}).items():
            if lab not in self.labels:
                raise ValueError(f"label_map maps {alias!r} to {lab!r}, which is not in labels")
        return self

    def llm_kwargs(self) -> dict[str, Any]:
        return {
            "prompt": self.prompt,
            "scoring": self.scoring,
            "top_logprobs": self.top_logprobs,
            "n": self.n,
            "temperature": self.temperature,
            "max_tokens": self.max_tokens,
            "seed": self.seed,
            "max_invalid_fraction": self.max_invalid_fraction,
            "extra_body": self.extra_body,
            "label_map": self.label_map,
            "options": self.options(),
            "name": self.name,
        }


class OpenAIChatSpec(_OpenAISpec):
    """A prompted LLM behind an OpenAI-compatible `/chat/completions` (vLLM, llama.cpp, Ollama, hosted)."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "protocol": "openai-chat",
                    "url": "http://127.0.0.1:8080/v1",
                    "model": "qwen2.5-1.5b-instruct",
                    "labels": ["1", "2", "3", "4", "5"],
                    "scoring": "logprobs",
                    "prompt": "Rate this restaurant review from 1 (worst) to 5 (best). Answer with one digit.\n\n{text}",
                },
                {
                    "protocol": "openai-chat",
                    "url": "https://llm.example.com/v1",
                    "model": "m",
                    "labels": ["neg", "pos"],
                    "scoring": "sampling",
                    "n": 20,
                    "temperature": 0.7,
                    "headers": {"Authorization": "Bearer ..."},
                },
            ]
        }
    )

    protocol: Literal["openai-chat"]
    system: str | None = Field(
        None, max_length=20_000, description="Optional system message ({labels} filled)."
    )

    @model_validator(mode="after")
    def _chat_scoring(self) -> OpenAIChatSpec:
        if self.scoring == "sequence":
            raise ValueError(
                "scoring 'sequence' continues the prompt with label text: use protocol openai-completions"
            )
        return self


class OpenAICompletionsSpec(_OpenAISpec):
    """A prompted LLM behind an OpenAI-compatible `/completions` (the prompt template includes any chat markup)."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "protocol": "openai-completions",
                    "url": "http://127.0.0.1:8080/v1",
                    "model": "qwen2.5-1.5b-instruct",
                    "labels": ["1", "2", "3", "4", "5"],
                    "scoring": "sequence",
                    "label_prefix": " ",
                    "prompt": "Review: {text}\nRating (1-5):",
                }
            ]
        }
    )

    protocol: Literal["openai-completions"]
    label_prefix: str = Field(
        " ", max_length=20, description="Sequence scoring: text between prompt and label."
    )


class SklearnSpec(_Base):
    """An in-process scikit-learn pipeline (a joblib file or an artifact directory with model.joblib)."""

    model_config = ConfigDict(
        json_schema_extra={"examples": [{"protocol": "sklearn", "path": "var/classifiers/tfidf-lr"}]}
    )

    protocol: Literal["sklearn"]
    path: str = Field(..., min_length=1)
    labels: list[str] | None = Field(None, description="Defaults to the pipeline's classes_.")

    @field_validator("labels")
    @classmethod
    def _labels(cls, v: list[str] | None) -> list[str] | None:
        return _check_labels(v)


class TransformersSpec(_Base):
    """An in-process transformers sequence-classification folder."""

    model_config = ConfigDict(
        json_schema_extra={"examples": [{"protocol": "transformers", "path": "var/classifiers/minilm-ft"}]}
    )

    protocol: Literal["transformers"]
    path: str = Field(..., min_length=1)
    labels: list[str] | None = Field(None, description="Defaults to the model config's id2label.")

    @field_validator("labels")
    @classmethod
    def _labels(cls, v: list[str] | None) -> list[str] | None:
        return _check_labels(v)


ClassifierSpec = Annotated[
    V2Spec
    | KServeV1Spec
    | HFSpec
    | TemplateSpec
    | SklearnSpec
    | TransformersSpec
    | OpenAIChatSpec
    | OpenAICompletionsSpec,
    Field(discriminator="protocol"),
]


class ClassifierEndpoint(RootModel[ClassifierSpec]):
    """Any classifier spec; its name is what validation errors are titled with."""


PROTOCOLS = (
    "v2",
    "kserve-v1",
    "hf",
    "template",
    "openai-chat",
    "openai-completions",
    "sklearn",
    "transformers",
)


def parse_spec(
    data: Any,
) -> (
    V2Spec
    | KServeV1Spec
    | HFSpec
    | TemplateSpec
    | OpenAIChatSpec
    | OpenAICompletionsSpec
    | SklearnSpec
    | TransformersSpec
):
    """Validate a dict (or JSON string) as a classifier spec; raises pydantic.ValidationError naming fields."""
    if isinstance(data, ClassifierEndpoint):
        return data.root
    if isinstance(data, _Base):
        return data  # type: ignore[return-value]
    if isinstance(data, str | bytes):
        return ClassifierEndpoint.model_validate_json(data).root
    return ClassifierEndpoint.model_validate(data).root


class LocalClassifierRefused(ValueError):
    """An in-process spec (which unpickles a file) was given where only remote endpoints are allowed."""


def build_classifier(
    spec: Any,
    *,
    transport: httpx.BaseTransport | None = None,
    cache: bool = True,
    cache_items: int = 100_000,
    allow_local: bool = True,
    slot_wait_s: float | None = None,
) -> Classifier:
    """Make a Classifier from a spec (model or dict).

    `transport` is handed to HTTP adapters (the service passes its outbound-URL policy
    here). `allow_local=False` refuses sklearn/transformers specs: loading them unpickles
    or executes files from disk, which an inline request from a user must not trigger.
    `slot_wait_s` overrides how long an HTTP adapter's call waits for a concurrency slot
    (an operator's setting, not a spec field).
    """
    s = parse_spec(spec)
    clf: Any
    if isinstance(s, SklearnSpec | TransformersSpec):
        if not allow_local:
            raise LocalClassifierRefused(
                f"protocol {s.protocol!r} loads a file in-process and is not allowed here; "
                "register the artifact or serve it over HTTP"
            )
        if isinstance(s, SklearnSpec):
            from explainers.classifiers.local import SklearnClassifier

            clf = SklearnClassifier.load(s.path, labels=s.labels)
        else:
            from explainers.classifiers.transformers_local import TransformersClassifier

            clf = TransformersClassifier.load(s.path, labels=s.labels)
        if s.name:
            clf.name = s.name
    elif isinstance(s, V2Spec):
        from explainers.classifiers.v2 import V2Classifier

        clf = V2Classifier(
            s.url,
            s.model,
            s.labels,
            version=s.version,
            input_name=s.input_name,
            shape=s.shape,
            input_parameters=s.input_parameters,
            request_parameters=s.request_parameters,
            output_name=s.output_name,
            request_outputs=s.request_outputs,
            endpoint_labels=s.endpoint_labels,
            transport=transport,
            **s.common(),
        )
    elif isinstance(s, KServeV1Spec):
        from explainers.classifiers.kserve_v1 import KServeV1Classifier

        clf = KServeV1Classifier(
            s.url,
            s.model,
            s.labels,
            instance_key=s.instance_key,
            endpoint_labels=s.endpoint_labels,
            transport=transport,
            **s.common(),
        )
    elif isinstance(s, OpenAIChatSpec | OpenAICompletionsSpec):
        from explainers.classifiers.openai_chat import OpenAIChatClassifier

        clf = OpenAIChatClassifier(
            s.url,
            s.model,
            s.labels,
            endpoint="chat" if s.protocol == "openai-chat" else "completions",
            transport=transport,
            **s.llm_kwargs(),
            **({"system": s.system} if isinstance(s, OpenAIChatSpec) else {"label_prefix": s.label_prefix}),
        )
    elif isinstance(s, HFSpec):
        from explainers.classifiers.hf import HFClassifier

        clf = HFClassifier(
            s.url,
            s.labels,
            batch=s.batch,
            parameters=s.parameters,
            extra=s.extra,
            transport=transport,
            **s.common(),
        )
    else:
        from explainers.classifiers.template import TemplateClassifier

        clf = TemplateClassifier(
            s.url,
            s.labels,
            request_template=s.request_template,
            scores_path=s.scores_path,
            labels_path=s.labels_path,
            endpoint_labels=s.endpoint_labels,
            transport=transport,
            **s.common(),
        )
    if slot_wait_s is not None and isinstance(getattr(clf, "options", None), HttpOptions):
        clf.options = dataclasses.replace(clf.options, slot_wait_s=slot_wait_s)
    return CachingClassifier(clf, key=s.key(), max_items=cache_items) if cache else clf
