"""Explainers by name, built from shared resources.

The benchmark (`--explainers zero,approx,match`) and the service (`"method": "match"`)
both ask for an explainer by name. Each method module registers a factory here with
`@register("name")`; a factory takes the `Resources` a deployment has (a labelled pool,
an encoder, a trained space, an LLM, taggers) plus options, and raises
`MissingResource` if something it needs is absent, so callers can say what is missing.

Each method declares the options it takes where it registers (`register(..., options=...)`):
`build_explainer` rejects any other option with `UnknownOption`, naming the method and the
allowed keys, and the service validates a request's fields against the same declaration
(`method_options`). A composite method (`stacked`, `auto`) builds other registered methods and
also takes their options, handing each component only the ones it declares (`options_for`).
A run that shares one set of options across many methods (the benchmark, the calibration)
gives each method `options_for(name, shared)`.

What `build_explainer` returns has the `Lifecycle` of `explainers.types` (the contract test
checks every registered method): `load()` does up front what its first explanation would
otherwise do, `ready` says it did, `close()` releases what it holds. The service loads each
explainer it caches and closes each it drops; a script may skip both (it explains all the same).
"""

from __future__ import annotations

import importlib
import threading
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field
from typing import Any

from explainers.concepts import ConceptSchema
from explainers.data.pool import Pool
from explainers.errors import MissingResource, UnknownOption
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


@dataclass(frozen=True)
class Method:
    """A registered method: its factory, a one-line description and the options it declares."""

    name: str
    factory: Factory
    description: str
    options: frozenset[str]
    composite: bool = False  # builds other registered methods and passes them their options


_METHODS: dict[str, Method] = {}
_loaded = False
# Held while the plugins import: concurrent first callers wait for all factories instead of
# seeing a half-filled registry ("unknown method 'match'; available: []").
_load_lock = threading.RLock()


def register(
    name: str, description: str = "", *, options: Collection[str] = (), composite: bool = False
) -> Callable[[Factory], Factory]:
    """Register a factory under `name`, with the option keys it takes (all others are refused)."""

    def deco(factory: Factory) -> Factory:
        desc = description or (factory.__doc__ or "").strip().split("\n")[0]
        _METHODS[name] = Method(name, factory, desc, frozenset(options), composite)
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
    return {name: m.description for name, m in sorted(_METHODS.items())}


def _method(name: str) -> Method:
    _load_plugins()
    if name not in _METHODS:
        raise KeyError(f"unknown method {name!r}; available: {sorted(_METHODS)}")
    return _METHODS[name]


def method_options(name: str) -> frozenset[str]:
    """The options `name` itself uses (what the service checks a request's fields against)."""
    return _method(name).options


def allowed_options(name: str) -> frozenset[str]:
    """Every option `build_explainer(name, ...)` accepts: its own, and a composite's components' too."""
    method = _method(name)
    if not method.composite:
        return method.options
    parts = (m.options for m in _METHODS.values() if not m.composite)
    return method.options.union(*parts)


def options_for(name: str, options: Mapping[str, Any]) -> dict[str, Any]:
    """The part of a shared set of options that `name` takes (for runs over many methods)."""
    allowed = allowed_options(name)
    return {k: v for k, v in options.items() if k in allowed}


def build_explainer(name: str, resources: Resources, **options: Any) -> Explainer:
    """Build method `name` over `resources`; an option it does not declare is an `UnknownOption`."""
    method = _method(name)
    unknown = sorted(set(options) - allowed_options(name))
    if unknown:
        raise UnknownOption(
            f"method {name!r} does not take option(s) {unknown}; allowed: {sorted(allowed_options(name))}"
        )
    return method.factory(resources, **options)
