"""Explainers by name, built from shared resources.

The benchmark (`--explainers zero,approx,match`) and the service (`"method": "match"`)
both ask for an explainer by name. Each method module registers a factory here with
`@register("name")`; a factory takes the `Resources` a deployment has (a labelled pool,
an encoder, a trained space, an LLM, taggers) plus options, and raises
`MissingResource` if something it needs is absent, so callers can say what is missing.
"""

from __future__ import annotations

import importlib
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from explainers.concepts import ConceptSchema
from explainers.data.pool import Pool
from explainers.errors import MissingResource
from explainers.types import Explainer

# Modules that register factories when imported; missing optional ones are skipped.
PLUGIN_MODULES = (
    "explainers.baselines",
    "explainers.matching.plugin",
    "explainers.generation.plugin",
    "explainers.estimators.auto",
    "explainers.splice",
)


@dataclass
class Resources:
    schema: ConceptSchema
    pool: Pool | None = None
    encoder: Any | None = None  # explainers.embeddings.Encoder
    space: Any | None = None  # a trained concept space (explainers.matching)
    llm: Any | None = None  # an LLM backend (explainers.generation)
    taggers: Any | None = None  # concept taggers (explainers.taggers)
    seed: int = 0
    extra: dict[str, Any] = field(default_factory=dict)

    def need(self, name: str, method: str) -> Any:
        value = getattr(self, name, None)
        if value is None:
            raise MissingResource(f"method {method!r} needs a {name}, and none is configured")
        return value


Factory = Callable[..., Explainer]
_FACTORIES: dict[str, tuple[Factory, str]] = {}
_loaded = False
# Held while the plugins import: concurrent first callers wait for all factories instead of
# seeing a half-filled registry ("unknown method 'match'; available: []").
_load_lock = threading.RLock()


def register(name: str, description: str = "") -> Callable[[Factory], Factory]:
    def deco(factory: Factory) -> Factory:
        _FACTORIES[name] = (factory, description or (factory.__doc__ or "").strip().split("\n")[0])
        return factory

    return deco


def _load_plugins() -> None:
    global _loaded
    if _loaded:
        return
    with _load_lock:
        if _loaded:
            return
        for mod in PLUGIN_MODULES:
            try:
                importlib.import_module(mod)
            except ModuleNotFoundError as e:
                if e.name != mod:  # a real import error inside the plugin must not be hidden
                    raise
        _loaded = True  # only once every factory is registered


def available() -> dict[str, str]:
    """Registered method names and one-line descriptions."""
    _load_plugins()
    return {name: desc for name, (_, desc) in sorted(_FACTORIES.items())}


def build_explainer(name: str, resources: Resources, **options: Any) -> Explainer:
    _load_plugins()
    if name not in _FACTORIES:
        raise KeyError(f"unknown method {name!r}; available: {sorted(_FACTORIES)}")
    return _FACTORIES[name][0](resources, **options)


def build_many(names: Sequence[str], resources: Resources, **options: Any) -> dict[str, Explainer]:
    return {n: build_explainer(n, resources, **options) for n in names}
