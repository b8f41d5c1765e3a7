"""The service's outbound clients: classifiers and LLM backends by registered name or inline spec.

Every client is built here, through `app.specs` (what a spec may do, by who gave it) with the
URL-policy transport, so no code path can reach a URL the policy refuses. Clients are cached
(a few dozen) and closed when evicted or forgotten: an evicted HTTP client's connection pool
and thread pool are released, not leaked.
"""

from __future__ import annotations

import hashlib
import json
import threading
from collections import OrderedDict
from typing import Any

import httpx

from app.settings import Settings
from app.store import Store
from explainers.classifiers.base import Classifier
from explainers.classifiers.cache import CachingClassifier

MAX_CLIENTS = 32


def build_classifier_from_spec(
    spec: dict[str, Any],
    transport: httpx.BaseTransport | None = None,
    *,
    allow_local: bool = True,
    settings: Any = None,
    label: str | None = None,
) -> Classifier:
    """The one place the service turns an endpoint spec into a Classifier (rules: `app.specs`).

    `allow_local=False` (inline specs in requests) refuses in-process protocols, which load
    (unpickle) files from the server's disk; registered specs, an admin action, may use them.
    """
    from app.specs import build_classifier

    return build_classifier(
        spec,
        transport,
        inline=not allow_local,
        settings=settings,
        policy=getattr(transport, "policy", None),
        label=label,
    )


def build_llm_from_spec(
    spec: dict[str, Any],
    transport: httpx.BaseTransport | None = None,
    *,
    inline: bool = False,
    settings: Any = None,
    label: str | None = None,
) -> Any:
    """The one place the service turns an LLM spec into a backend (rules: `app.specs`)."""
    from app.specs import build_llm

    return build_llm(
        spec,
        transport,
        inline=inline,
        settings=settings,
        policy=getattr(transport, "policy", None),
        label=label,
    )


def spec_key(spec: dict[str, Any]) -> str:
    return hashlib.sha1(json.dumps(spec, sort_keys=True, default=str).encode()).hexdigest()[:16]


def close_quietly(client: Any) -> None:
    """Close a client (or the one a cache wraps); a close that fails must not fail the request."""
    for obj in (client, getattr(client, "inner", None)):
        close = getattr(obj, "close", None)
        if callable(close):
            try:
                close()
            except Exception:  # noqa: BLE001 - best effort: the client is being dropped anyway
                pass
            return


def remember(cache: OrderedDict, key: Any, value: Any, limit: int = MAX_CLIENTS) -> None:
    """Insert as newest; evict (and close) the oldest beyond `limit`."""
    cache[key] = value
    cache.move_to_end(key)
    while len(cache) > limit:
        _, old = cache.popitem(last=False)
        close_quietly(old[0] if isinstance(old, tuple) else old)


class Clients:
    """Classifier and LLM clients, built once per spec and closed when dropped."""

    def __init__(self, settings: Settings, store: Store) -> None:
        self.settings = settings
        self.store = store
        self.transport: httpx.BaseTransport | None = None  # the URL-policy transport (set by the app factory)
        self._classifiers: OrderedDict[str, Classifier] = OrderedDict()
        self._llms: OrderedDict[str, Any] = OrderedDict()
        self._lock = threading.RLock()

    def classifier(self, ref: str | dict[str, Any]) -> tuple[Classifier, str]:
        """A registered classifier by name, or an inline spec (never in-process), and its short name."""
        if isinstance(ref, dict):
            key = "inline:" + spec_key(ref)
            spec, name, inline = ref, key, True
        else:
            row = self.store.registry_get("classifier", ref)
            if row is None:
                raise LookupError(f"classifier {ref!r} is not registered")
            spec, name, inline = row["spec"], ref, False
            key = f"registered:{ref}:{spec_key(spec)}"
        with self._lock:
            if key not in self._classifiers:
                built = build_classifier_from_spec(
                    spec,
                    self.transport,
                    allow_local=not inline,
                    settings=self.settings,
                    label=None if inline else name,
                )
                remember(self._classifiers, key, CachingClassifier(built, key=key))
            return self._classifiers[key], name

    def llm(self, ref: str | dict[str, Any] | None) -> tuple[Any, str] | tuple[None, None]:
        """A registered LLM by name, an inline spec, or (None) the server's default LLM, if any."""
        if ref is None:
            s = self.settings
            if not (s.llm_base_url and s.llm_model):
                return None, None
            spec: dict[str, Any] = {
                "kind": "openai",
                "base_url": s.llm_base_url,
                "model": s.llm_model,
                "api_key": s.llm_api_key,
            }
            name = "default"
        elif isinstance(ref, dict):
            spec, name = ref, "inline:" + spec_key(ref)
        else:
            row = self.store.registry_get("llm", ref)
            if row is None:
                raise LookupError(f"LLM {ref!r} is not registered")
            spec, name = row["spec"], ref
        key = name + ":" + spec_key(spec)
        with self._lock:
            if key not in self._llms:
                remember(
                    self._llms,
                    key,
                    build_llm_from_spec(
                        spec,
                        self.transport,
                        inline=name.startswith("inline:"),
                        settings=self.settings,
                        label=name,
                    ),
                )
            return self._llms[key], name

    def forget(self, kind: str, name: str) -> None:
        """Drop and close the clients of a deleted or replaced registration."""
        with self._lock:
            cache = self._classifiers if kind == "classifier" else self._llms
            prefix = f"registered:{name}:" if kind == "classifier" else f"{name}:"
            for key in [k for k in cache if k.startswith(prefix)]:
                close_quietly(cache.pop(key))
