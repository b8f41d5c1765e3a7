"""What a running service holds: the store, classifiers, LLMs, pool, taggers, spaces, explainers.

Why one object: routes and job workers must build classifiers, LLM backends and
explainers the same way, and other layers hook in here. In particular every outbound
client (classifier or LLM endpoint) is built by `build_classifier_from_spec` /
`build_llm_from_spec`, which pass `outbound_transport` (a URL-policy httpx transport the
security layer may set on `app.state`) to the library, so no code path can bypass it.

The embedded defaults (reference tfidf-lr classifier, CEBaB pool, taggers, concept
space) load in a background thread so `/healthz` answers at once; each component's
state is kept in `components` and `/readyz` reports it.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import socket
import threading
import time
import uuid
from collections import OrderedDict
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

from app.settings import Settings
from app.spaces import SpaceCatalog
from app.store import Store
from explainers.classifiers.base import Classifier
from explainers.concepts import CEBAB_SCHEMA, ConceptSchema
from explainers.registry import MissingResource, Resources, available, build_explainer

log = logging.getLogger("cace.resources")

BUILTIN = "builtin"
# Methods that search a trained concept space, and those that use one when there is one.
SPACE_METHODS = ("match", "match_dr", "stacked")
OPTIONAL_SPACE_METHODS = ("pair_transfer",)


def build_classifier_from_spec(spec: dict[str, Any], transport: httpx.BaseTransport | None = None, *,
                               allow_local: bool = True, settings: Any = None, label: str | None = None
                               ) -> Classifier:
    """The one place the service turns an endpoint spec into a Classifier (rules: `app.specs`).

    `allow_local=False` (inline specs in requests) refuses in-process protocols, which load
    (unpickle) files from the server's disk; registered specs, an admin action, may use them.
    """
    from app.specs import build_classifier

    return build_classifier(spec, transport, inline=not allow_local, settings=settings,
                            policy=getattr(transport, "policy", None), label=label)


def build_llm_from_spec(spec: dict[str, Any], transport: httpx.BaseTransport | None = None, *, inline: bool = False,
                        settings: Any = None, label: str | None = None) -> Any:
    """The one place the service turns an LLM spec into a backend (rules: `app.specs`)."""
    from app.specs import build_llm

    return build_llm(spec, transport, inline=inline, settings=settings, policy=getattr(transport, "policy", None),
                     label=label)


def spec_key(spec: dict[str, Any]) -> str:
    return hashlib.sha1(json.dumps(spec, sort_keys=True, default=str).encode()).hexdigest()[:16]


class Component:
    """Load state of one embedded default."""

    def __init__(self, name: str, required: bool) -> None:
        self.name = name
        self.required = required
        self.status = "pending"
        self.detail = ""
        self.seconds: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"status": self.status, "detail": self.detail, "required": self.required, "seconds": self.seconds}


class Runtime:
    """Shared state of one service process."""

    def __init__(self, settings: Settings, store: Store) -> None:
        self.settings = settings
        self.store = store
        self.schema: ConceptSchema = CEBAB_SCHEMA
        self.instance_id = settings.instance_id or f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"
        self.outbound_transport: httpx.BaseTransport | None = None
        self.builtin_classifiers: dict[str, Classifier] = {}
        self.builtin_meta: dict[str, dict[str, Any]] = {}
        self.pool: Any = None
        self.encoder: Any = None
        self.taggers: Any = None
        self.spaces = SpaceCatalog(Path(settings.data_dir) / "spaces")
        self.default_space_id: str | None = None
        self._classifiers: OrderedDict[str, Classifier] = OrderedDict()
        self._llms: OrderedDict[str, Any] = OrderedDict()
        self._explainers: OrderedDict[tuple, tuple[Any, threading.Lock]] = OrderedDict()
        self._lock = threading.RLock()
        self.components: dict[str, Component] = {}
        self.loaded = threading.Event()

    # ---- embedded defaults ----------------------------------------------------------------
    def plan_defaults(self) -> list[tuple[str, bool, Callable[[], str]]]:
        s = self.settings
        steps: list[tuple[str, bool, Callable[[], str]]] = []
        if s.default_classifier:
            steps.append(("classifier", True, self._load_default_classifier))
        if s.default_pool:
            steps.append(("pool", True, self._load_pool))
            steps.append(("encoder", False, self._load_encoder))
        if s.default_taggers:
            steps.append(("taggers", False, self._load_taggers))
        if s.default_space and s.default_pool:
            steps.append(("space", False, self._load_space))
        for name, required, _ in steps:
            self.components[name] = Component(name, required)
        return steps

    def load_defaults(self) -> None:
        """Load every configured default; failures are recorded, not raised (the rest still loads)."""
        for name, _, fn in self.plan_defaults():
            comp = self.components[name]
            comp.status = "loading"
            started = time.perf_counter()
            try:
                comp.detail = fn()
                comp.status = "ready"
                with self._lock:
                    self._explainers.clear()  # rebuild with the newly loaded resource
            except ModuleNotFoundError as e:
                comp.status, comp.detail = "unavailable", f"library module missing: {e.name}"
            except Exception as e:  # keep serving what did load
                log.exception("loading default %s failed", name)
                comp.status, comp.detail = "failed", f"{type(e).__name__}: {e}"
            comp.seconds = round(time.perf_counter() - started, 2)
        self.loaded.set()

    @property
    def ready(self) -> bool:
        return self.loaded.is_set() and all(c.status == "ready" for c in self.components.values() if c.required)

    def _load_default_classifier(self) -> str:
        from explainers.artifacts import read_meta
        from explainers.reference import ensure_reference, load_reference

        name = self.settings.default_classifier
        path = ensure_reference(name, self.settings.data_dir, self.settings.cebab_dir)
        clf = self._cached(load_reference(path), f"{BUILTIN}:{name}")
        meta = read_meta(path)
        self.builtin_classifiers[name] = clf
        self.builtin_meta[name] = {"protocol": "builtin", "path": str(path), "labels": list(clf.labels),
                                   "dev_accuracy": meta.get("dev_accuracy")}
        return f"{name} from {path}"

    def _load_pool(self) -> str:
        from explainers.bench.pools import cebab_pool

        self.pool = cebab_pool(self.settings.default_pool, self.settings.cebab_dir)
        return f"CEBaB {self.settings.default_pool}: {len(self.pool)} texts, {len(self.pool.pairs)} pairs"

    def _load_encoder(self) -> str:
        from explainers.embeddings import Encoder

        enc = Encoder()
        enc.encode(self.pool.texts)  # warm the cache so the first pt_match request is fast
        self.encoder = enc
        self.spaces._encoder = enc  # one encoder (and embedding cache) for pool, baselines and spaces
        return enc.model_name

    def _load_taggers(self) -> str:
        from explainers.taggers import TaggerSet, ensure_taggers

        path = ensure_taggers(self.settings.data_dir, data_dir=self.settings.cebab_dir)
        self.taggers = TaggerSet.load(path)
        return f"taggers from {path}"

    def _load_space(self) -> str:
        space_id = self.spaces.ensure_default(self.settings.data_dir, self.settings.cebab_dir)
        self.default_space_id = space_id
        return f"space {space_id}"

    @staticmethod
    def _cached(clf: Classifier, key: str) -> Classifier:
        try:
            from explainers.classifiers.cache import CachingClassifier
        except ModuleNotFoundError:
            return clf
        return CachingClassifier(clf, key=key)

    # ---- classifiers and LLMs -------------------------------------------------------------
    def classifier(self, ref: str | dict[str, Any]) -> tuple[Classifier, str]:
        """A classifier by registered name or inline spec, and a short name for it."""
        if isinstance(ref, dict):
            key = "inline:" + spec_key(ref)
            with self._lock:
                if key not in self._classifiers:
                    self._remember(self._classifiers, key, self._cached(
                        build_classifier_from_spec(ref, self.outbound_transport, allow_local=False,
                                                   settings=self.settings), key))
                return self._classifiers[key], key
        if ref in self.builtin_classifiers:
            return self.builtin_classifiers[ref], ref
        row = self.store.registry_get("classifier", ref)
        if row is None:
            if ref == self.settings.default_classifier and not self.ready:
                raise MissingResource(f"classifier {ref!r} is still loading; see /readyz")
            raise LookupError(f"classifier {ref!r} is not registered")
        key = f"registered:{ref}:{spec_key(row['spec'])}"
        with self._lock:
            if key not in self._classifiers:
                self._remember(self._classifiers, key, self._cached(
                    build_classifier_from_spec(row["spec"], self.outbound_transport, settings=self.settings,
                                               label=ref), key))
            return self._classifiers[key], ref

    def llm(self, ref: str | dict[str, Any] | None) -> tuple[Any, str] | tuple[None, None]:
        if ref is None:
            s = self.settings
            if not (s.llm_base_url and s.llm_model):
                return None, None
            ref = {"kind": "openai", "base_url": s.llm_base_url, "model": s.llm_model, "api_key": s.llm_api_key}
            name = "default"
        elif isinstance(ref, dict):
            name = "inline:" + spec_key(ref)
        else:
            row = self.store.registry_get("llm", ref)
            if row is None:
                raise LookupError(f"LLM {ref!r} is not registered")
            name, ref = ref, row["spec"]
        key = name + ":" + spec_key(ref)
        with self._lock:
            if key not in self._llms:
                self._remember(self._llms, key, build_llm_from_spec(
                    ref, self.outbound_transport, inline=name.startswith("inline:"), settings=self.settings,
                    label=name))
            return self._llms[key], name

    def forget(self, kind: str, name: str) -> None:
        """Drop cached clients for a deleted or replaced registration."""
        with self._lock:
            cache = self._classifiers if kind == "classifier" else self._llms
            prefix = f"registered:{name}:" if kind == "classifier" else f"{name}:"
            for k in [k for k in cache if k.startswith(prefix)]:
                cache.pop(k)
            for k in [k for k in self._explainers if k[3] == name]:
                self._explainers.pop(k)

    @staticmethod
    def _remember(cache: OrderedDict, key: Any, value: Any, limit: int = 32) -> None:
        cache[key] = value
        cache.move_to_end(key)
        while len(cache) > limit:
            cache.popitem(last=False)

    # ---- explainers -----------------------------------------------------------------------
    def methods(self) -> dict[str, str]:
        return available()

    def explainer(self, method: str, *, space_id: str | None = None, llm: str | dict[str, Any] | None = None,
                  aggregation: str = "mean", similarity_threshold: float | None = None,
                  classifier_name: str | None = None) -> tuple[Any, threading.Lock, dict[str, Any]]:
        """A built explainer (cached), its lock, and facts to report (space id, LLM name).

        `classifier_name` picks the stacking weights a space holds for that classifier
        (`stacked` falls back to equal weights, and says so, when none were fit for it).
        """
        if method not in available():
            raise KeyError(method)
        info: dict[str, Any] = {}
        space = None
        needs_space = method in SPACE_METHODS
        if needs_space or (method in OPTIONAL_SPACE_METHODS and (space_id or self.default_space_id)):
            space_id = space_id or self.default_space_id
            if space_id is None:
                state = self.components.get("space")
                why = f" (default space: {state.status}: {state.detail})" if state else ""
                raise MissingResource(f"method {method!r} needs a concept space, and none is loaded{why}")
            space = self.spaces.load(space_id)
            info["space_id"] = space_id
            needs_space = True
        backend, llm_name = (None, None)
        if method == "generate":
            backend, llm_name = self.llm(llm)
            if backend is None:
                raise MissingResource("method 'generate' needs an LLM: pass `llm` (a registered name or spec), "
                                      "or set CACE_LLM_BASE_URL and CACE_LLM_MODEL")
            info["llm"] = llm_name
        stack_key = classifier_name if method.startswith("stacked") else None
        key = (method, space_id if needs_space else None, aggregation, llm_name, similarity_threshold, stack_key)
        with self._lock:
            hit = self._explainers.get(key)
            if hit is None:
                res = Resources(schema=self.schema, pool=self.pool, encoder=self.encoder, space=space, llm=backend,
                                taggers=self.taggers, seed=0)
                options: dict[str, Any] = {"aggregation": aggregation}
                if similarity_threshold is not None:
                    options["similarity_threshold"] = similarity_threshold
                if stack_key:
                    options["stack_key"] = stack_key
                hit = (build_explainer(method, res, **options), threading.Lock())
                self._remember(self._explainers, key, hit, limit=16)
        return hit[0], hit[1], info

    def infer_labels(self, texts: list[str]) -> list[dict[str, str]]:
        if self.taggers is None:
            state = self.components.get("taggers")
            why = f" (taggers: {state.status}: {state.detail})" if state else ""
            raise MissingResource("the intervention has no source value and no concept taggers are loaded to infer it;"
                                  f" pass intervention.source{why}")
        return [dict(x) for x in self.taggers.predict(texts)]
