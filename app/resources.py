"""What a running service holds: the store, classifiers, LLMs, domains, explainers.

Why one object: routes and job workers must resolve domains, classifiers, LLM backends and
explainers the same way. Outbound clients live in `app.clients` (built through the URL
policy, closed when evicted); this module holds the defaults, the domains and the explainers.

The embedded defaults (the default domain: schema, pool, taggers, concept space; and its
reference classifier) load in a background thread so `/healthz` answers at once; each
component's state is kept in `components` and `/readyz` reports it. Every explainer is
built from one domain's data (`Domain.resources`), loaded (`Lifecycle.load`), cached per domain,
and closed when it is dropped: evicted from the cache, its domain deleted or rebuilt, its
calibration replaced, its LLM or classifier registration replaced. `/readyz` lists the default
domain's explainers with their state (loading, ready, failed and why).
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import threading
import time
import uuid
from collections import OrderedDict
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import httpx

from app.clients import Clients
from app.domains import DomainCatalog
from app.settings import Settings
from app.store import Store
from explainers.artifacts import META
from explainers.classifiers.base import Classifier
from explainers.classifiers.cache import CachingClassifier
from explainers.domains import BUILTIN as BUILTIN_DOMAINS
from explainers.domains import Domain
from explainers.labels import tagged
from explainers.progress import Stages, reporting_to
from explainers.registry import MissingResource, available, build_explainer

log = logging.getLogger("cace.resources")
# What the first start is doing: one line per stage and per 10% (explainers.progress.Stages).
startup_log = logging.getLogger("cace.startup")

BUILTIN = "builtin"
# The fewest classifier texts worth a calibration (calibrate() cuts a pool to whole origins).
MIN_CALIBRATION_TEXTS = 100
# How often one replica asks the store whether an auto-calibration may be queued for a (domain, classifier).
CALIBRATION_CHECK_EVERY_S = 5.0


class Component:
    """Load state of one embedded default, with its stages while it loads (`/readyz`, the log, the UI)."""

    def __init__(self, name: str, required: bool) -> None:
        self.name = name
        self.required = required
        self.status = "pending"
        self.detail = ""
        self.seconds: float | None = None
        self.stages = Stages(f"default {name}", log=startup_log.info)

    def to_dict(self) -> dict[str, Any]:
        progress = self.stages.snapshot()
        detail = self.detail
        if self.status == "loading" and progress["stage"]:
            detail = f"{progress['stage']}: {self.stages.line()}"
        return {
            "status": self.status,
            "detail": detail,
            "required": self.required,
            "seconds": self.seconds,
            "progress": progress,
        }


@dataclass(frozen=True)
class ExplainerKey:
    """What a built explainer depends on: one is built, and cached, per distinct key."""

    domain_id: str
    method: str
    llm: str | None  # the LLM's name (generate)
    stack_key: str | None  # the classifier whose fitted weights or calibration it uses (stacked, auto)
    options: tuple[tuple[str, Any], ...]  # the request's method options, sorted by key


# Explainers kept built at once (LRU); the oldest beyond it is closed.
MAX_EXPLAINERS = 16
# Failed builds remembered for /readyz (apart from the cache: a failure must not evict a built one).
MAX_FAILED_EXPLAINERS = 16


class ExplainerLock:
    """One explanation at a time over a cached explainer, and whether one is in flight.

    An explanation lets the mutex go while its classifier answers (`paused`, used by
    `app.explain.LockFreeCalls`), so one slow endpoint does not hold up every explanation of the
    method; it is still in flight then, and a dropped explainer is closed only once none is
    (`when_idle`), not merely when the mutex is free. Used like `threading.Lock`.
    """

    def __init__(self) -> None:
        self._mutex = threading.Lock()
        self._state = threading.Condition()
        self._in_flight = 0

    def acquire(self, blocking: bool = True, timeout: float = -1) -> bool:
        if not self._mutex.acquire(blocking, timeout):
            return False
        with self._state:
            self._in_flight += 1
        return True

    def release(self) -> None:
        with self._state:
            self._in_flight -= 1
            self._state.notify_all()
        self._mutex.release()

    def __enter__(self) -> ExplainerLock:
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()

    @contextlib.contextmanager
    def paused(self) -> Iterator[None]:
        """Let others take the mutex for a while (a classifier call); the explanation stays in flight."""
        self._mutex.release()
        try:
            yield
        finally:
            self._mutex.acquire()

    @property
    def idle(self) -> bool:
        return self._in_flight == 0

    def when_idle(self, fn: Callable[[], None]) -> None:
        """Run `fn` once no explanation is in flight (a new one waits until it is done)."""
        with self._state:
            while self._in_flight:
                self._state.wait()
            fn()


@dataclass
class CachedExplainer:
    """One explainer of the cache and its lifecycle: loading, then ready or failed (with why)."""

    key: ExplainerKey
    explainer: Any = None
    # Held while the explainer explains (it is not thread-safe); closing waits for it.
    lock: ExplainerLock = field(default_factory=ExplainerLock)
    status: str = "loading"
    detail: str = ""
    seconds: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "method": self.key.method,
            "classifier": self.key.stack_key,
            "llm": self.key.llm,
            # Names only: /readyz is public, and option values come from other clients' requests.
            "options": [k for k, _ in self.key.options],
            "status": self.status,
            "detail": self.detail,
            "seconds": self.seconds,
        }


def close_when_idle(entry: CachedExplainer) -> None:
    """Close a dropped explainer once no explanation is using it (at once when none is).

    With an explanation in flight the close waits for it in a thread of its own, so whoever
    dropped the explainer (a DELETE, an eviction) never waits.
    """
    explainer = entry.explainer
    if explainer is None:
        return

    def close() -> None:
        try:
            explainer.close()
        except Exception:  # noqa: BLE001 - it is being dropped: a failed close must not fail the caller
            log.exception("closing explainer %s failed", entry.key.method)

    if entry.lock.idle:
        entry.lock.when_idle(close)
        return
    threading.Thread(
        target=entry.lock.when_idle, args=(close,), name=f"cace-close-{entry.key.method}", daemon=True
    ).start()


@runtime_checkable
class Closeable(Protocol):
    """A job handler that holds something outside this process (RayEffectsHandler: its actors)."""

    def close(self) -> None: ...


# Builds the job handlers of a runtime (job kind -> handler); handlers need the runtime they serve.
HandlerFactory = Callable[["Runtime"], dict[str, Any]]


class Runtime:
    """Shared state of one service process.

    Everything it depends on comes in through the constructor: the settings, the job store, the
    URL-policy transport every outbound client is built on, and the factory of its job handlers.
    """

    def __init__(
        self,
        settings: Settings,
        store: Store,
        *,
        transport: httpx.BaseTransport | None = None,
        handlers: HandlerFactory | None = None,
    ) -> None:
        self.settings = settings
        self.store = store
        self.instance_id = (
            settings.instance_id or f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"
        )
        self.builtin_classifiers: dict[str, Classifier] = {}
        self.builtin_meta: dict[str, dict[str, Any]] = {}
        self._encoder: Any = None
        self.domains = DomainCatalog(
            Path(settings.data_dir) / "domains", self.encoder, on_evict=self.forget_domain
        )
        self.default_domain_id: str | None = None
        self.clients = Clients(settings, store, transport)
        self._explainers: OrderedDict[ExplainerKey, CachedExplainer] = OrderedDict()
        self._failed_explainers: OrderedDict[ExplainerKey, CachedExplainer] = OrderedDict()
        # The default domain while its explainers are prebuilt (before `default_domain_id` is set).
        self._warming_domain_id: str | None = None
        self._calibration_checked: dict[tuple[str, str], float] = {}
        self._lock = threading.RLock()
        self.components: dict[str, Component] = {}
        self.loaded = threading.Event()
        self.handlers: dict[str, Any] = handlers(self) if handlers else {}  # job kind -> handler
        self._prewarm_on_load = True

    # ---- embedded defaults ----------------------------------------------------------------
    def default_classifier_name(self) -> str | None:
        """The configured default classifier, else the default built-in domain's reference classifier."""
        s = self.settings
        if s.default_classifier:
            return None if s.default_classifier == "none" else s.default_classifier
        return BUILTIN_DOMAINS[s.default_domain][1] if s.default_domain in BUILTIN_DOMAINS else None

    def plan_defaults(self) -> list[tuple[str, bool, Callable[[], str]]]:
        steps: list[tuple[str, bool, Callable[[], str]]] = []
        if self.default_classifier_name():
            steps.append(("classifier", True, self._load_default_classifier))
        if self.settings.default_domain != "none":
            steps.append(("domain", True, self._load_default_domain))
        for name, required, _ in steps:
            self.components[name] = Component(name, required)
        return steps

    def load_defaults(self, *, prewarm: bool = True) -> None:
        """Load every configured default; failures are recorded, not raised (the rest still loads).

        `prewarm=False` (`cace serve --prepare-only`) builds the artifacts but not the in-memory
        explainers, which a process that exits would throw away.
        """
        self._prewarm_on_load = prewarm
        for name, _, fn in self.plan_defaults():
            comp = self.components[name]
            comp.status = "loading"
            started = time.perf_counter()
            try:
                comp.detail = fn()
                comp.status = "ready"
                startup_log.info(
                    "default %s ready in %.1fs: %s", name, time.perf_counter() - started, comp.detail
                )
            except ModuleNotFoundError as e:
                comp.status, comp.detail = "unavailable", f"library module missing: {e.name}"
            except Exception as e:  # keep serving what did load
                log.exception("loading default %s failed", name)
                comp.status, comp.detail = "failed", f"{type(e).__name__}: {e}"
            comp.seconds = round(time.perf_counter() - started, 2)
        self.loaded.set()

    def prewarm_methods(self) -> list[str]:
        """The methods built for the default domain and classifier before the service is ready."""
        return [m for m in self.settings.prewarm_methods if m in available()]

    def _prewarm(self, domain: Domain, stages: Stages) -> list[str]:
        """Build the default domain's explainers for the default classifier now, not in a first request.

        Each build (a fit on the corpus: splice's sentence index, auto's calibration) took up to
        tens of seconds inside the first request; they are cached like any other explainer.
        """
        name = self.default_classifier_name()
        classifier = self.builtin_classifiers.get(name) if name else None
        methods = self.prewarm_methods()
        built = []
        with stages.stage("explainers", ", ".join(methods)):
            for concept in domain.schema.names:  # each concept's projected corpus (built on first use)
                domain.space.pool_vectors(concept)
            sample = self._warm_up_query(domain) if classifier is not None else None
            for i, method in enumerate(methods):
                try:
                    explainer, lock, _ = self.explainer(method, domain, classifier_name=name)
                    built.append(method)
                except MissingResource as e:  # e.g. a method this domain cannot run: later requests say why
                    log.info("explainer %s not prebuilt for domain %s: %s", method, domain.id, e)
                    continue
                if sample is not None:
                    # One real explanation of a new text: the encoder's first run, the taggers,
                    # the indices and the classifier each pay their first-call costs here.
                    text, intervention, labels = sample
                    try:
                        with lock, reporting_to(None):  # its inner bars (one text) are not the stage's
                            explainer.explain(text, intervention, classifier, 5, base_labels=labels)
                    except Exception as e:  # a warm-up only: the request that hits it will say why
                        log.warning("warm-up explanation with %s failed: %s: %s", method, type(e).__name__, e)
                stages.update((i + 1) / len(methods), f"{i + 1}/{len(methods)} methods")
        return built

    def _warm_up_query(self, domain: Domain) -> tuple[str, Any, dict[str, str]] | None:
        """A new text (a corpus text, reworded) and an intervention on it that the domain can answer."""
        from explainers.concepts import Intervention

        if not len(domain.pool):
            return None
        text = f"{domain.pool.texts[0]} (warm-up)"
        labels = domain.taggers.predict([text])[0] if domain.taggers is not None else {}
        labels = {**domain.pool.labels[0], **labels}
        for concept in domain.schema.concepts:
            source = labels.get(concept.name)
            targets = [v for v in concept.values if v != source and domain.pool.indices_with(concept.name, v)]
            if source is not None and targets:
                return text, Intervention(concept.name, targets[0], source), labels
        return None

    @property
    def ready(self) -> bool:
        return self.loaded.is_set() and all(
            c.status == "ready" for c in self.components.values() if c.required
        )

    def _load_default_classifier(self) -> str:
        from explainers.artifacts import read_meta
        from explainers.reference import ensure_reference, load_reference

        name = self.default_classifier_name()
        assert name is not None
        stages = self.components["classifier"].stages
        with stages.stage("load", name):
            path = ensure_reference(name, self.settings.data_dir, self.settings.datasets_dir)
            clf = CachingClassifier(load_reference(path), key=f"{BUILTIN}:{name}")
        meta = read_meta(path)
        self.builtin_classifiers[name] = clf
        self.builtin_meta[name] = {
            "protocol": "builtin",
            "path": str(path),
            "labels": list(clf.labels),
            "dev_accuracy": meta.get("dev_accuracy"),
        }
        return f"{name} from {path}"

    def encoder(self) -> Any:
        """The one MiniLM encoder (and embedding cache) every domain, space and tagger shares."""
        with self._lock:
            if self._encoder is None:
                from explainers.embeddings import Encoder

                self._encoder = Encoder()
                startup_log.info(
                    "sentence encoder %s, backend %s", self._encoder.model_name, self._encoder.backend
                )
            return self._encoder

    def _load_default_domain(self) -> str:
        """A built-in domain by name (built on first start), or an operator's domain folder."""
        from explainers.domains import ensure_builtin, ensure_corpus_domain

        name = self.settings.default_domain
        stages = self.components["domain"].stages
        # Declared first so the stages the library adds (load, or a build's) come before it.
        if self._prewarm_on_load:
            stages.expect([("explainers", 1.5)])  # weight: see explainers.domains.build.BUILD_STAGES
        if name in BUILTIN_DOMAINS:
            domain = ensure_builtin(
                name,
                self.domains.root,
                self.settings.datasets_dir,
                encoder=self.encoder(),
                log=log.info,
                stages=stages,
            )
        else:  # a domain folder, or a folder with a corpus.jsonl built in place on first start
            from app.llm_builds import default_domain_build

            domain = ensure_corpus_domain(
                Path(name), encoder=self.encoder(), log=log.info, stages=stages,
                llm_build=default_domain_build(self),
            )  # fmt: skip
        self.forget_domain(domain.id)  # rebuilt over the newly loaded domain
        self._warming_domain_id = domain.id
        built = self._prewarm(domain, stages) if self._prewarm_on_load else []
        self.domains.pin(domain)
        self.default_domain_id = domain.id
        return (
            f"domain {domain.id}: {len(domain.pool)} texts, {len(domain.pool.pairs)} pairs; "
            f"explainers ready: {', '.join(built) or 'none'}"
        )

    def domain(self, domain_id: str | None) -> Domain:
        """The named domain, or the default; LookupError/MissingResource say what is missing."""
        if domain_id is None:
            if self.default_domain_id is None:
                state = self.components.get("domain")
                why = (
                    f" (default domain: {state.status}: {state.detail})"
                    if state
                    else " (CACE_DEFAULT_DOMAIN=none: name a domain in the request)"
                )
                raise MissingResource(f"no default domain is loaded{why}")
            domain_id = self.default_domain_id
        return self.domains.get(domain_id)

    # ---- classifiers and LLMs -------------------------------------------------------------
    def classifier(self, ref: str | dict[str, Any]) -> tuple[Classifier, str]:
        """A classifier by built-in or registered name, or inline spec, and a short name for it."""
        if isinstance(ref, str) and ref in self.builtin_classifiers:
            return self.builtin_classifiers[ref], ref
        try:
            return self.clients.classifier(ref)
        except LookupError:
            if ref == self.default_classifier_name() and not self.ready:
                raise MissingResource(f"classifier {ref!r} is still loading; see /readyz") from None
            raise

    def llm(self, ref: str | dict[str, Any] | None) -> tuple[Any, str] | tuple[None, None]:
        return self.clients.llm(ref)

    def forget(self, kind: str, name: str) -> None:
        """Drop cached clients and explainers of a deleted or replaced registration, closing them."""
        self.clients.forget(kind, name)
        self._drop_explainers(lambda k: name in (k.llm, k.stack_key))

    def forget_domain(self, domain_id: str) -> None:
        """Drop (and close) the explainers of a domain deleted or rebuilt, or whose calibration changed."""
        self._drop_explainers(lambda k: k.domain_id == domain_id)

    def close(self) -> None:
        """Release what this runtime holds (the service is stopping): every cached explainer, the
        job handlers' own workers (the Ray effects handler's actors), the outbound clients."""
        self._drop_explainers(lambda k: True)
        for handler in self.handlers.values():
            if isinstance(handler, Closeable):
                handler.close()
        self.clients.close()

    def _drop_explainers(self, which: Callable[[ExplainerKey], bool]) -> None:
        with self._lock:
            dropped = [self._explainers.pop(k) for k in [k for k in self._explainers if which(k)]]
            for k in [k for k in self._failed_explainers if which(k)]:
                self._failed_explainers.pop(k)
        for entry in dropped:
            close_when_idle(entry)

    def explainer_states(self) -> list[dict[str, Any]]:
        """The default domain's explainers (built, being built, or failed) with their state, for /readyz.

        Read without the runtime lock (a build holds it for seconds, and /readyz answers on the
        event loop): the dicts are copied at once, retried if a build changed them meanwhile.
        """
        domain_id = self.default_domain_id or self._warming_domain_id
        if domain_id is None:
            return []
        for _ in range(5):
            try:
                entries = [*self._explainers.values(), *self._failed_explainers.values()]
                break
            except RuntimeError:  # changed size during the copy
                continue
        else:
            return []
        return [e.to_dict() for e in entries if e.key.domain_id == domain_id]

    # ---- explainers -----------------------------------------------------------------------
    def methods(self) -> dict[str, str]:
        return available()

    def explainer(
        self,
        method: str,
        domain: Domain,
        *,
        llm: str | dict[str, Any] | None = None,
        options: Mapping[str, Any] | None = None,
        classifier_name: str | None = None,
    ) -> tuple[Any, ExplainerLock, dict[str, Any]]:
        """A built explainer over `domain`'s data (cached), its lock, and facts to report (LLM name).

        `options` are the method options a request set, already checked against the method's
        declaration (`app.explain.resolve`).

        `classifier_name` picks the stacking weights the domain's space holds for that classifier
        (`stacked` falls back to equal weights, and says so, when none were fit for it).
        """
        if method not in available():
            raise KeyError(method)
        info: dict[str, Any] = {}
        backend, llm_name = (None, None)
        if method == "generate":
            backend, llm_name = self.llm(llm)
            if backend is None:
                raise MissingResource(
                    "method 'generate' needs an LLM: pass `llm` (a registered name or spec), "
                    "or set CACE_LLM_BASE_URL and CACE_LLM_MODEL"
                )
            info["llm"] = llm_name
        # Methods fit per classifier: the stack's weights, and auto's calibration.
        stack_key = classifier_name if method.startswith("stacked") or method == "auto" else None
        key = ExplainerKey(domain.id, method, llm_name, stack_key, tuple(sorted((options or {}).items())))
        with self._lock:
            hit = self._explainers.get(key)
            if hit is not None:
                self._explainers.move_to_end(key)
            else:
                hit = self._build_explainer(key, domain, backend)
        return hit.explainer, hit.lock, info

    def _build_explainer(self, key: ExplainerKey, domain: Domain, backend: Any) -> CachedExplainer:
        """Build and load one explainer (under the runtime lock); its state shows in /readyz meanwhile."""
        entry = CachedExplainer(key)
        self._failed_explainers.pop(key, None)
        self._explainers[key] = entry  # listed as loading while it builds
        started = time.perf_counter()
        try:
            built_options = dict(key.options)
            res = domain.resources(encoder=self.encoder(), llm=backend)
            if key.method == "auto":
                path = domain.calibration_dir(key.stack_key) if key.stack_key else None
                if path is not None and (path / META).exists():
                    res.extra["calibration"] = path
            elif key.stack_key:
                built_options["stack_key"] = key.stack_key
            explainer = build_explainer(key.method, res, **built_options)
            entry.explainer = explainer
            explainer.load()
        except Exception as e:
            self._explainers.pop(key, None)
            entry.status, entry.detail = "failed", f"{type(e).__name__}: {e}"[:300]
            entry.seconds = round(time.perf_counter() - started, 2)
            self._failed_explainers[key] = entry
            while len(self._failed_explainers) > MAX_FAILED_EXPLAINERS:
                self._failed_explainers.popitem(last=False)
            close_when_idle(entry)  # what a half-loaded explainer holds
            raise
        entry.status, entry.seconds = "ready", round(time.perf_counter() - started, 2)
        while len(self._explainers) > MAX_EXPLAINERS:
            _, old = self._explainers.popitem(last=False)
            close_when_idle(old)
        return entry

    def maybe_calibrate(
        self, domain: Domain, classifier_name: str, queued_by: str = "explanation"
    ) -> str | None:
        """Queue the calibration of a classifier on a domain after its first successful explanation there.

        Only for built-in and registered classifiers (an inline spec is anyone's URL: no calibration
        is sent there); at most one queued or running per (domain, classifier) across replicas, none
        during the backoff after a failed one, none when the classifier's calibration budget is spent
        (all kept in the store). Off with CACE_AUTO_CALIBRATE=false. Returns the job id when one was queued.
        """
        s = self.settings
        if not s.calibration.auto or classifier_name.startswith("inline:") or not domain.pool.pairs:
            return None
        # The store decides (below); this only spares it a few writes per explanation on a busy replica.
        key, now = (domain.id, classifier_name), time.monotonic()
        with self._lock:
            if now < self._calibration_checked.get(key, 0.0):
                return None
            if len(self._calibration_checked) > 1024:
                self._calibration_checked.clear()
            self._calibration_checked[key] = now + CALIBRATION_CHECK_EVERY_S
        try:
            return self._queue_calibration(domain, classifier_name, queued_by)
        except Exception:  # the explanation that asked worked: a store blip here must not fail it
            log.exception("queueing the calibration of %r on %r failed", classifier_name, domain.id)
            return None

    def _queue_calibration(self, domain: Domain, classifier_name: str, queued_by: str) -> str | None:
        s = self.settings
        if classifier_name not in self.builtin_classifiers and (
            self.store.registry_get("classifier", classifier_name) is None
        ):
            return None
        if (domain.calibration_dir(classifier_name) / META).exists():
            return None
        left, _ = self.store.calibration_budget_left(
            classifier_name, s.calibration.budget_texts, s.calibration.budget_window_s
        )
        if left < MIN_CALIBRATION_TEXTS:
            return None
        if not self.store.claim_calibration(domain.id, classifier_name):
            return None
        request = {
            "domain_id": domain.id,
            "classifier": classifier_name,
            "max_pairs": s.calibration.max_pairs,
        }
        why = f"service: first {queued_by} of classifier {classifier_name!r} on domain {domain.id!r}"
        job_id = self.store.create_job(
            "calibration", request, [{}], limit=s.jobs.queue_limit, queued_by=why[:200]
        )
        self.store.set_calibration_job(domain.id, classifier_name, job_id)
        if job_id is not None:
            log.info("queued calibration job %s (%s)", job_id, why)
        return job_id

    def infer_labels(self, domain: Domain, texts: list[str]) -> list[dict[str, str]]:
        """The taggers' labels of `texts` (concepts whose tagger is usable in `domain`; others are absent)."""
        if domain.taggers is None:
            raise MissingResource(f"domain {domain.id!r} has no concept taggers; pass the labels")
        return [lab or {} for lab in tagged(texts, None, domain.taggers)]
