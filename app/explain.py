"""One explanation, as the API and the effects jobs both run it.

Why here and not in a route: `POST /v1/explanations`, `:explain`, inline effects and effects
job items must resolve the domain, the classifier, the intervention's source value and the
explainer identically, and check requests against the domain's schema the same way. The library does the work
(`Explainer.explain`); this module only wires requests to it.
"""

from __future__ import annotations

import contextlib
import json
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
from pydantic import ValidationError

from app.problems import ApiError, field_error, validation_error
from app.resources import ExplainerLock, Runtime
from app.schemas.explanations import METHOD_OPTION_FIELDS, MethodRequest
from explainers import outbound
from explainers.artifacts import META
from explainers.classifiers.usage import metered
from explainers.concepts import ConceptSchema, Intervention
from explainers.domains import Domain
from explainers.errors import MissingResource
from explainers.labels import tagged
from explainers.registry import method_options
from explainers.types import Explanation, zero_explanation


@dataclass
class Resolved:
    """The parts of a request that do not depend on the text."""

    classifier: Any
    classifier_name: str
    domain: Domain
    explainer: Any
    lock: Any
    info: dict[str, Any]
    top_k: int
    method: str


@dataclass(frozen=True)
class Query:
    """One text to explain and what the caller knows about it."""

    text: str
    concept: str
    target: str
    source: str | None = None
    labels: dict[str, str] | None = None


def check_intervention(
    schema: ConceptSchema, concept: str, target: str, source: str | None, prefix: str
) -> None:
    if concept not in schema:
        raise field_error(
            f"{prefix}.intervention.concept", f"unknown concept {concept!r}; known: {schema.names}"
        )
    values = list(schema[concept].values)
    for what, value in (("target", target), ("source", source)):
        if value is not None and value not in values:
            raise field_error(
                f"{prefix}.intervention.{what}", f"{value!r} is not a value of {concept!r}; allowed: {values}"
            )
    if source is not None and source == target:
        raise field_error(
            f"{prefix}.intervention.source", "source equals target: the intervention changes nothing"
        )


def check_labels(schema: ConceptSchema, labels: dict[str, str] | None, where: str) -> None:
    """Known labels must name the domain's concepts and values (a 422 naming the field otherwise)."""
    for c, v in (labels or {}).items():
        if c not in schema:
            raise field_error(f"{where}.{c}", f"unknown concept {c!r}; known: {schema.names}")
        if v not in schema[c].values:
            raise field_error(
                f"{where}.{c}", f"{v!r} is not a value of {c!r}; allowed: {list(schema[c].values)}"
            )


def needs_labels(domain: Domain, concept: str) -> bool:
    """True when the concept's current value cannot be inferred in this domain (no usable tagger)."""
    return not domain.tagger_usable(concept)


def resolve(rt: Runtime, params: MethodRequest, prefix: str = "body") -> Resolved:
    """Domain, classifier and explainer for a request (ExplanationRequest or EffectsParams), with 4xx on bad refs."""
    s = rt.settings
    if params.top_k > s.limits.max_top_k:
        raise field_error(f"{prefix}.top_k", f"at most {s.limits.max_top_k}")
    try:
        domain = rt.domain(params.domain)
    except LookupError as e:
        raise field_error(
            f"{prefix}.domain", f"{str(e).strip(chr(39) + chr(34))}; known: {rt.domains.ids()}"
        ) from e
    iv = params.intervention
    check_intervention(domain.schema, iv.concept, iv.target, iv.source, prefix)
    clf_ref = params.classifier if params.classifier is not None else rt.default_classifier_name()
    if clf_ref is None:
        raise field_error(f"{prefix}.classifier", "required: this server has no default classifier")
    try:
        clf, clf_name = rt.classifier(clf_ref)
    except LookupError as e:
        raise field_error(f"{prefix}.classifier", str(e).strip("'\"")) from e
    except ValidationError as e:
        raise validation_error(e.errors(), f"{prefix}.classifier") from e
    except ModuleNotFoundError as e:
        raise ApiError(
            409, "Missing resource", f"inline classifier specs need module {e.name}", kind="missing-resource"
        ) from e
    except ValueError as e:
        raise field_error(f"{prefix}.classifier", str(e)) from e
    method = params.method or default_method(domain, clf_name)
    if method not in rt.methods():
        raise field_error(f"{prefix}.method", f"unknown method {method!r}; available: {sorted(rt.methods())}")
    reason = domain.unavailable_reason(method, iv.concept)  # concept-level: no pairs to transfer
    if reason:
        raise field_error(f"{prefix}.method", reason)
    options = params.method_options()
    declared = method_options(method)
    unknown = sorted(set(options) - declared)
    if unknown:
        raise field_error(
            f"{prefix}.{unknown[0]}",
            f"method {method!r} does not take {unknown[0]!r}; its options: {sorted(declared)}",
        )
    try:
        explainer, lock, info = rt.explainer(
            method, domain, llm=params.llm, options=options, classifier_name=clf_name
        )
    except LookupError as e:
        raise field_error(f"{prefix}.llm", str(e).strip("'\"")) from e
    except ValidationError as e:
        raise field_error(f"{prefix}.llm", str(e)) from e
    return Resolved(clf, clf_name, domain, explainer, lock, info, params.top_k, method)


def taken_options(method: str, requested: Mapping[str, Any]) -> dict[str, Any]:
    """The requested method options that `method` declares and that differ from the request's
    default (a report's `aggregation` is ignored by a method that does not aggregate, as before)."""
    declared = method_options(method)
    return {k: v for k, v in requested.items() if k in declared and v != METHOD_OPTION_FIELDS.get(k)}


def default_method(domain: Domain, classifier_name: str) -> str:
    """`auto` once the classifier is calibrated on the domain, `match` before.

    `match` needs neither a fit nor edit pairs, so it answers on any domain; where the domain
    has pairs, `method: auto` (uncalibrated: splice) or `splice` measure better on CEBaB
    (benchmarks/results/faithfulness_calibrated*.md, `uncal:*` rows).
    """
    try:
        calibrated = (domain.calibration_dir(classifier_name) / META).exists()
    except ValueError:  # an inline classifier has no calibration
        calibrated = False
    return "auto" if calibrated else "match"


def check_query(r: Resolved, q: Query, labels_field: str, source_field: str) -> None:
    """A text's labels fit the domain, and its source is known or inferable (422 naming the field otherwise)."""
    check_labels(r.domain.schema, q.labels, labels_field)
    if q.source is None and not (q.labels and q.concept in q.labels) and needs_labels(r.domain, q.concept):
        raise field_error(
            source_field,
            f"domain {r.domain.id!r} has no usable tagger for {q.concept!r}: pass "
            f"intervention.source or the text's {q.concept!r} label",
        )


def check_available(r: Resolved, concept: str, target: str, prefix: str) -> None:
    """The method can answer for this concept and target in this domain (422 on `method` saying why not)."""
    reason = r.domain.unavailable_reason(r.method, concept, target)
    if reason:
        raise field_error(f"{prefix}.method", reason)


def known_labels(
    domain: Domain, texts: list[str], given: list[dict[str, str] | None], concept: str
) -> list[dict[str, str]]:
    """Each text's labels with one for `concept`: the given ones, topped up by the domain's taggers
    (the one resolver, `explainers.labels.tagged`; one tagger call for the texts that need it)."""
    if domain.taggers is None and any(lab is None or concept not in lab for lab in given):
        raise MissingResource(f"domain {domain.id!r} has no concept taggers; pass the labels")
    return [lab or {} for lab in tagged(texts, given, domain.taggers, concept=concept)]


def source_for(domain: Domain, q: Query) -> tuple[str, bool, dict[str, str] | None]:
    """The concept's current value: given, else from known labels, else inferred by the domain's taggers."""
    if q.source is not None:
        return q.source, False, q.labels
    inferred = not (q.labels and q.concept in q.labels)
    labels = known_labels(domain, [q.text], [q.labels], q.concept)[0]
    return labels[q.concept], inferred, labels


def run(rt: Runtime, r: Resolved, q: Query) -> tuple[Explanation, Intervention, bool, dict[str, float]]:
    """Explain one text; returns the explanation, the full intervention, whether the source was inferred, timings."""
    started = time.perf_counter()
    src, inferred, labels = source_for(r.domain, q)
    t_source = time.perf_counter()
    intervention = Intervention(q.concept, q.target, src)
    locked = t_source
    if src == q.target:
        base = np.asarray(r.classifier.predict_proba([q.text]), float)[0]
        exp = zero_explanation(r.method, r.classifier.labels, base, intervention)
        exp.details["note"] = f"the text already has {q.concept}={q.target}; changing it changes nothing"
        exp.details["unchanged"] = True
    else:
        # Methods outside the counterfactual path (pair-transfer, stacks, CONEXP, ...) call the classifier
        # themselves: a prompted-LLM classifier's tokens they spend are metered here (a meter only sees
        # calls no inner meter counted, so nothing is counted twice).
        with explaining(r) as classifier:
            locked = time.perf_counter()
            with metered() as usage:
                exp = r.explainer.explain(q.text, intervention, classifier, r.top_k, base_labels=labels)
        exp.cost.add_classifier_llm(usage)
    done = time.perf_counter()
    waited_lock = locked - t_source
    timings = {
        "total_ms": round((done - started) * 1000, 3),
        "lock_wait_ms": round(waited_lock * 1000, 3),
        "source_inference_ms": round((t_source - started) * 1000, 3),
        "explain_ms": round((done - t_source - waited_lock) * 1000, 3),
    }
    return exp, intervention, inferred, timings


class LockFreeCalls:
    """The classifier as an explainer holding its lock sees it: the lock is let go during each call.

    Why: the explainer's lock serialises its own steps (search, generation state), but a
    classifier call inside it made one slow endpoint (a drip, a hang) hold up every explanation
    of that method, whatever classifier those asked for, until its deadline. The standard flow
    (find counterfactuals, score them, estimate) keeps its state in locals across the call.
    """

    def __init__(self, inner: Any, lock: ExplainerLock) -> None:
        self.inner = inner
        self._lock = lock
        self._holder = threading.get_ident()  # built by the thread that holds the lock

    @property
    def labels(self) -> list[str]:
        return list(self.inner.labels)

    def predict_proba(self, texts: Sequence[str]) -> np.ndarray:
        if threading.get_ident() != self._holder:  # a helper thread of the explainer: the lock is not its own
            return np.asarray(self.inner.predict_proba(texts))
        with self._lock.paused():  # still in flight: a dropped explainer is not closed meanwhile
            return np.asarray(self.inner.predict_proba(texts))

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


@contextlib.contextmanager
def explaining(r: Resolved) -> Iterator[Any]:
    """Hold the explainer's lock, waiting no longer than the request's deadline; yield the classifier to use.

    A 503 (Retry-After) when the lock does not come free in time: the thread goes back instead of
    queueing past the point where its client already has a 504.
    """
    left = outbound.remaining()
    if not r.lock.acquire(timeout=-1 if left is None else max(0.0, left)):
        raise ApiError(
            503,
            "Explainer busy",
            f"the {r.method!r} explainer did not come free within the request's deadline",
            kind="overloaded",
            headers={"Retry-After": "1"},
        )
    try:
        yield LockFreeCalls(r.classifier, r.lock)
    finally:
        r.lock.release()


def explain_one(
    rt: Runtime, req: Any, prefix: str = "body", received_at: float | None = None
) -> dict[str, Any]:
    """The whole path of one ExplanationRequest: resolve, check, explain, answer (routes and `:explain`).

    `received_at` (time.perf_counter() when the request arrived) makes `timings.total_ms` count
    the wait before this function ran too; resolving (with any explainer built on the way) and
    waiting for the explainer's lock are timed on their own.
    """
    began = time.perf_counter()
    arrived = received_at if received_at is not None and received_at <= began else began
    if len(req.text) > rt.settings.limits.max_text_chars:
        raise field_error(f"{prefix}.text", f"at most {rt.settings.limits.max_text_chars} characters")
    r = resolve(rt, req, prefix)
    iv = req.intervention
    q = Query(req.text, iv.concept, iv.target, iv.source, req.base_labels)
    check_query(r, q, f"{prefix}.base_labels", f"{prefix}.intervention.source")
    check_available(r, iv.concept, iv.target, prefix)
    resolved = time.perf_counter()
    exp, intervention, inferred, timings = run(rt, r, q)
    started = time.perf_counter()
    readings = concept_readings(rt, r.domain, req.text, exp)
    timings = {
        **timings,
        "concepts_ms": round((time.perf_counter() - started) * 1000, 3),
        "total_ms": round((time.perf_counter() - arrived) * 1000, 3),
        "waited_ms": round((began - arrived) * 1000, 3),
        "resolve_ms": round((resolved - began) * 1000, 3),
    }
    out = response(exp, r, intervention, inferred, timings)
    rt.maybe_calibrate(r.domain, r.classifier_name)  # only after an explanation that worked
    if readings is not None:
        out["base_concepts"], per_cf = readings
        for cf, read in zip(out["counterfactuals"], per_cf, strict=True):
            cf["concepts"] = read
    return out


def concept_readings(
    rt: Runtime, domain: Domain, text: str, exp: Explanation
) -> tuple[dict[str, str], list[dict[str, str]]] | None:
    """The domain's taggers' reading of every concept, on the text and on each counterfactual.

    Why: a counterfactual should change the target concept only; one that also changed another
    concept (a splice sentence praising food and service together) confounds the estimate, and
    the reader can only see that if the taggers read both texts. One batched tagger call; None
    when the domain has no taggers. Concepts without a usable tagger are absent.
    """
    if domain.taggers is None:
        return None
    read = rt.infer_labels(domain, [text, *(c.text for c in exp.counterfactuals)])
    return read[0], read[1:]


def as_map(labels: list[str], values: Any) -> dict[str, float]:
    return {lab: float(v) for lab, v in zip(labels, values, strict=True)}


def response(
    exp: Explanation, r: Resolved, intervention: Intervention, inferred: bool, timings: dict[str, float]
) -> dict[str, Any]:
    labels = list(exp.labels)
    details = plain(exp.details)
    cfs = []
    for c in exp.counterfactuals:
        d = asdict(c)
        d["prediction"] = as_map(labels, c.prediction) if c.prediction is not None else None
        cfs.append(d)
    return {
        "method": r.method,
        "classifier": r.classifier_name,
        "labels": labels,
        "base_prediction": as_map(labels, exp.base_prediction),
        "icace": as_map(labels, exp.icace),
        "intervention": {
            "concept": intervention.concept,
            "target": intervention.target,
            "source": intervention.source,
            "source_inferred": inferred,
        },
        "uncertainty": uncertainty(exp, labels),
        "counterfactuals": cfs,
        "cost": asdict(exp.cost),
        "timings": timings,
        "domain": r.domain.id,
        "space_id": r.domain.space.meta.get("name"),
        "pool": {"texts": len(r.domain.pool), "pairs": len(r.domain.pool.pairs)},
        "llm": r.info.get("llm"),
        "details": details,
    }


def uncertainty(exp: Explanation, labels: list[str]) -> dict[str, Any]:
    """Spread over the counterfactuals; for calibrated estimators also a per-label interval and expected error."""
    out: dict[str, Any] = {
        "spread": as_map(labels, exp.spread),
        "n_counterfactuals": int(exp.details.get("used", len(exp.counterfactuals))),
    }
    interval = exp.details.get("interval")
    if interval:
        out["interval"] = {
            lab: [lo, hi] for lab, lo, hi in zip(labels, interval["lower"], interval["upper"], strict=True)
        }
        out["coverage"] = interval.get("coverage")
    if exp.details.get("expected_error"):
        out["expected_error"] = exp.details["expected_error"]
        out["pairs_origin"] = (exp.details.get("calibration") or {}).get("pairs_origin")
    if exp.details.get("situation"):
        out["valid"] = exp.details["situation"].get("valid")
        out["situation"] = exp.details["situation"]
    return out


def plain(value: Any) -> Any:
    """JSON-safe copy of method details (numpy arrays and scalars become lists and floats)."""

    def default(o: Any) -> Any:
        if isinstance(o, np.ndarray):
            return o.tolist()
        if isinstance(o, np.generic):
            return o.item()
        if hasattr(o, "__dataclass_fields__"):
            return asdict(o)
        return str(o)

    return json.loads(json.dumps(value, default=default))
