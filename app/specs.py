"""What a classifier or LLM spec may do, by who gave it: the rules every spec passes before a client is built.

Why here, once: a spec is hostile input. Inline specs (in a request, from any explain key)
and registered specs (`POST /v1/classifiers|llms`, admin only) reach the same builders, and
the difference between them is the security boundary:

* inline specs may only name HTTP endpoints. They never reference server secrets
  (`api_key_env`), never load in-process models (sklearn/transformers classifiers,
  llamacpp/transformers LLMs), and their URLs pass the outbound policy;
* registered specs may load in-process models, but only from `CACE_MODELS_DIR` (paths are
  resolved, symlinks included, and must stay inside it), and may name a secret only from the
  `CACE_LLM_SECRET_ENVS` allow-list; an entry `NAME@host` binds the secret to that host;
* every URL must parse, be ASCII and pass `OutboundPolicy.check_url` (scheme, host syntax,
  denied ranges) at registration, not at first use; header values and API keys must be
  printable ASCII (they go into HTTP headers).

Each refusal is a `SpecRefused` naming the spec field; policy denials are `OutboundDenied`
(403). Outbound clients built here carry a bounded metrics label (the registered name or
`inline`), a total deadline no longer than a request's, the response byte cap of the shared
transport (`CACE_UPSTREAM_MAX_BYTES`) and a bounded wait for an endpoint's concurrency slot
(`CACE_UPSTREAM_SLOT_WAIT_S`).
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

import httpx

from app.settings import Settings
from explainers.errors import OutboundDenied
from explainers.net import OutboundPolicy

IN_PROCESS_CLASSIFIERS = ("sklearn", "transformers")
_HEADER_SAFE = re.compile(r"^[\x20-\x7e]*$")
_URL_SAFE = re.compile(r"^[\x21-\x7e]+$")


class SpecRefused(LookupError, ValueError):
    """A spec asks for something its giver may not have; `field` names the spec field.

    A LookupError and a ValueError, so every caller that already maps those on the spec's
    field (`explain.resolve`, registrations, space jobs) answers 422 naming it.
    """

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message

    def __str__(self) -> str:
        return f"{self.field}: {self.message}"


class LabelledTransport(httpx.BaseTransport):
    """The shared policy transport, tagging each request with a bounded metrics label.

    `close()` does nothing: the shared transport outlives every client built on it.
    """

    def __init__(self, inner: httpx.BaseTransport, kind: str, label: str) -> None:
        self.inner = inner
        self.kind = kind
        self.label = label

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        request.extensions = {**request.extensions, "cace_kind": self.kind, "cace_label": self.label}
        return self.inner.handle_request(request)

    def close(self) -> None:
        pass


def labelled(
    transport: httpx.BaseTransport | None, kind: str, label: str | None
) -> httpx.BaseTransport | None:
    return None if transport is None else LabelledTransport(transport, kind, label or "inline")


def check_url(field: str, url: str, policy: OutboundPolicy | None) -> None:
    """Refuse a URL the HTTP library cannot parse, or one with control or non-ASCII characters; apply the policy."""
    if not _URL_SAFE.match(url or ""):
        raise SpecRefused(field, "must be an ASCII http(s) URL without spaces or control characters")
    try:
        u = httpx.URL(url)
        host = u.host
    except Exception as e:  # httpx raises InvalidURL, ValueError, UnicodeError for garbage
        raise SpecRefused(field, f"not a valid URL ({type(e).__name__})") from None
    if u.scheme not in ("http", "https") or not host:
        raise SpecRefused(field, "must be an absolute http:// or https:// URL with a host")
    if policy is not None:
        try:
            policy.check_url(u)
        except OutboundDenied as e:
            raise OutboundDenied(f"{field}: {e}") from None


def check_header_value(field: str, value: Any) -> None:
    if not isinstance(value, str) or not _HEADER_SAFE.match(value):
        raise SpecRefused(field, "must be printable ASCII (it is sent as an HTTP header)")


def model_path(field: str, path: str, models_dir: Path | None) -> Path:
    """`path` resolved inside the operator's models directory; refuses anything else."""
    if models_dir is None:
        raise SpecRefused(
            field, "in-process models can only be registered when the operator sets CACE_MODELS_DIR"
        )
    if "\x00" in path:
        raise SpecRefused(field, "must not contain NUL")
    root = Path(models_dir).resolve()
    candidate = (root / path).resolve()  # an absolute `path` stays absolute; resolve() follows symlinks
    if candidate != root and root not in candidate.parents:
        raise SpecRefused(field, "must name a model inside the server's models directory (CACE_MODELS_DIR)")
    if not candidate.exists():
        raise SpecRefused(field, f"no model {path!r} in the server's models directory")
    return candidate


# ---- classifiers ---------------------------------------------------------------------------
def check_classifier(
    spec: dict[str, Any], *, inline: bool, settings: Settings, policy: OutboundPolicy | None
) -> dict[str, Any]:
    """The spec to build (in-process paths resolved), or SpecRefused / OutboundDenied / pydantic's ValidationError."""
    from explainers.classifiers.spec import parse_spec

    if not isinstance(spec, dict):
        raise SpecRefused("spec", "must be an object")
    s: Any = parse_spec(spec)  # one of the spec models; the branches below read their own fields
    if s.protocol in IN_PROCESS_CLASSIFIERS:
        if inline:
            raise SpecRefused(
                "protocol",
                f"{s.protocol!r} loads a model in-process and is operator-only: "
                "register it (admin) or serve it over HTTP",
            )
        path = model_path("path", s.path, settings.models_dir)
        return {**spec, "path": str(path)}
    check_url("url", s.url, policy)
    for name, value in s.headers.items():
        check_header_value(f"headers.{name}", name)
        check_header_value(f"headers.{name}", value)
    return spec


def build_classifier(
    spec: dict[str, Any],
    transport: httpx.BaseTransport | None,
    *,
    inline: bool,
    settings: Settings,
    policy: OutboundPolicy | None = None,
    label: str | None = None,
) -> Any:
    """Check the spec for its giver, then build the classifier (in-process load errors become a 422)."""
    from explainers.classifiers.spec import build_classifier as build

    checked = check_classifier(spec, inline=inline, settings=settings, policy=policy)
    if checked.get("protocol") in IN_PROCESS_CLASSIFIERS:
        try:
            return build(checked, cache=False)
        except (ImportError, MemoryError):
            raise
        except Exception as e:  # a file that is not a model: unpickling, config and weight errors vary
            raise SpecRefused(
                "path", f"cannot load a {checked['protocol']} model from it ({type(e).__name__})"
            ) from None
    return build(
        checked,
        transport=labelled(transport, "classifier", None if inline else label),
        cache=False,
        allow_local=False,
        slot_wait_s=settings.upstream.slot_wait_s,
    )


# ---- LLMs ----------------------------------------------------------------------------------
def secret_allowed(name: str, host: str, allow: list[str]) -> bool:
    """Whether `name` may be sent to `host`: listed as NAME, or as NAME@host for exactly this host."""
    for entry in allow:
        env, _, bound = entry.partition("@")
        if env == name and (not bound or bound.lower().rstrip(".") == host.lower().rstrip(".")):
            return True
    return False


def build_llm(
    spec: dict[str, Any],
    transport: httpx.BaseTransport | None,
    *,
    inline: bool,
    settings: Settings,
    policy: OutboundPolicy | None = None,
    label: str | None = None,
) -> Any:
    """Check an LLM spec for its giver and build the backend with bounded retries and deadline."""
    from explainers.generation.backends import BackendSpec, OpenAIBackend, build_backend

    if not isinstance(spec, dict):
        raise SpecRefused("spec", "must be an object")
    s = BackendSpec.model_validate(spec)
    if s.kind != "openai":
        if inline:
            raise SpecRefused(
                "kind",
                f"{s.kind!r} runs a model in-process and is operator-only: register it "
                "(admin) with POST /v1/llms, or use an OpenAI-compatible server",
            )
        path = model_path(
            "model_path" if s.model_path else "model",
            s.model_path or s.model,
            settings.models_dir,
        )
        try:
            return build_backend(s.model_copy(update={"model_path": str(path), "model": str(path)}))
        except (ImportError, MemoryError):
            raise
        except Exception as e:
            raise SpecRefused(
                "model_path", f"cannot load a {s.kind} model from it ({type(e).__name__})"
            ) from None
    if not s.base_url:
        raise SpecRefused("base_url", "an 'openai' LLM needs a base_url (e.g. http://127.0.0.1:8000/v1)")
    check_url("base_url", s.base_url, policy)
    host = httpx.URL(s.base_url).host
    key = s.api_key
    if s.api_key_env:
        if inline:
            raise SpecRefused(
                "api_key_env",
                "inline specs cannot reference server secrets; pass api_key, or use "
                "an LLM the operator registered",
            )
        if not secret_allowed(s.api_key_env, host, list(settings.llm.secret_envs)):
            raise SpecRefused(
                "api_key_env",
                f"{s.api_key_env!r} is not on the server's allow-list of secrets for "
                f"host {host!r} (CACE_LLM_SECRET_ENVS)",
            )
        key = os.environ.get(s.api_key_env)
        if not key:
            raise SpecRefused("api_key_env", f"{s.api_key_env!r} is not set on the server")
    if key is not None:
        check_header_value("api_key", key)
    deadline = settings.limits.request_timeout_s or None
    timeout = min(s.timeout_s, deadline) if deadline else s.timeout_s
    return OpenAIBackend(
        s.base_url,
        s.model,
        key,
        timeout_s=timeout,
        max_retries=s.max_retries,
        total_timeout_s=deadline,
        transport=labelled(transport, "llm", None if inline else label),
    )


def outbound_transport(settings: Settings) -> Any:
    """The deny-by-default transport every classifier and LLM client gets (allow-list: CACE_OUTBOUND_ALLOW)."""
    from explainers.net import OutboundPolicy, PolicyTransport

    return PolicyTransport(
        OutboundPolicy.from_allow(settings.upstream.allow), max_response_bytes=settings.upstream.max_bytes
    )
