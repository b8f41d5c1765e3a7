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


def spec_key(spec: dict[str, Any]) -> str:
    """A short, stable key for a spec (same spec, same cached client)."""
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

    def __init__(
        self, settings: Settings, store: Store, transport: httpx.BaseTransport | None = None
    ) -> None:
        self.settings = settings
        self.store = store
        self.transport = transport  # the URL-policy transport every outbound client is built on
        self._classifiers: OrderedDict[str, Classifier] = OrderedDict()
        self._llms: OrderedDict[str, Any] = OrderedDict()
        self._lock = threading.RLock()

    def build(self, kind: str, spec: dict[str, Any], *, inline: bool, label: str | None) -> Any:
        """The one place a spec becomes a client: checked for its giver (`app.specs`: inline specs may not
        load in-process models or name server secrets), then built on the URL-policy transport."""
        from app.specs import build_classifier, build_llm

        build = build_classifier if kind == "classifier" else build_llm
        policy = getattr(self.transport, "policy", None)
        return build(spec, self.transport, inline=inline, settings=self.settings, policy=policy, label=label)

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
                built = self.build("classifier", spec, inline=inline, label=None if inline else name)
                remember(self._classifiers, key, CachingClassifier(built, key=key))
            return self._classifiers[key], name

    def llm(self, ref: str | dict[str, Any] | None) -> tuple[Any, str] | tuple[None, None]:
        """A registered LLM by name, an inline spec, or (None) the server's default LLM, if any."""
        if ref is None:
            s = self.settings
            if not (s.llm.base_url and s.llm.model):
                return None, None
            spec: dict[str, Any] = {
                "kind": "openai",
                "base_url": s.llm.base_url,
                "model": s.llm.model,
                "api_key": s.llm.api_key,
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
                    self._llms, key, self.build("llm", spec, inline=name.startswith("inline:"), label=name)
                )
            return self._llms[key], name

    def close(self) -> None:
        """Close every cached client (the service is stopping)."""
        with self._lock:
            for cache in (self._classifiers, self._llms):
                while cache:
                    close_quietly(cache.popitem()[1])

    def forget(self, kind: str, name: str) -> None:
        """Drop and close the clients of a deleted or replaced registration."""
        with self._lock:
            cache = self._classifiers if kind == "classifier" else self._llms
            prefix = f"registered:{name}:" if kind == "classifier" else f"{name}:"
            for key in [k for k in cache if k.startswith(prefix)]:
                close_quietly(cache.pop(key))
