"""One explanation, as the API and the effects jobs both run it.

Why here and not in a route: `POST /v1/explanations`, inline effects and effects job
items must resolve the classifier, the intervention's source value and the explainer
identically, and map library errors to the same problems. The library does the work
(`Explainer.explain`); this module only wires requests to it.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
from pydantic import ValidationError

from app.problems import ApiError, field_error
from app.resources import Runtime
from explainers.concepts import Intervention
from explainers.types import Explanation, zero_explanation


@dataclass
class Resolved:
    """The parts of a request that do not depend on the text."""

    classifier: Any
    classifier_name: str
    explainer: Any
    lock: Any
    info: dict[str, Any]
    top_k: int


def check_intervention(rt: Runtime, concept: str, target: str, source: str | None, prefix: str = "body") -> None:
    schema = rt.schema
    if concept not in schema:
        raise field_error(f"{prefix}.intervention.concept", f"unknown concept {concept!r}; known: {schema.names}")
    values = list(schema[concept].values)
    for what, value in (("target", target), ("source", source)):
        if value is not None and value not in values:
            raise field_error(f"{prefix}.intervention.{what}", f"{value!r} is not a value of {concept!r}; "
                                                                f"allowed: {values}")
    if source is not None and source == target:
        raise field_error(f"{prefix}.intervention.source", "source equals target: the intervention changes nothing")


def resolve(rt: Runtime, params: Any, prefix: str = "body") -> Resolved:
    """Classifier and explainer for a request (ExplanationRequest or EffectsParams), with 4xx on bad refs."""
    s = rt.settings
    if params.top_k > s.max_top_k:
        raise field_error(f"{prefix}.top_k", f"at most {s.max_top_k}")
    iv = params.intervention
    check_intervention(rt, iv.concept, iv.target, iv.source, prefix)
    try:
        clf, clf_name = rt.classifier(params.classifier)
    except LookupError as e:
        raise field_error(f"{prefix}.classifier", str(e).strip("'\"")) from e
    except ValidationError as e:
        errors = [{"field": ".".join([f"{prefix}.classifier", *map(str, err["loc"])]), "message": err["msg"]}
                  for err in e.errors()]
        raise ApiError(422, "Request validation failed", "; ".join(f"{x['field']}: {x['message']}" for x in errors),
                       kind="validation", errors=errors) from e
    except ModuleNotFoundError as e:
        raise ApiError(409, "Missing resource", f"inline classifier specs need module {e.name}",
                       kind="missing-resource") from e
    except ValueError as e:
        raise field_error(f"{prefix}.classifier", str(e)) from e
    if params.space is not None and not rt.spaces.exists(params.space):
        raise field_error(f"{prefix}.space", f"space {params.space!r} does not exist")
    try:
        explainer, lock, info = rt.explainer(params.method, space_id=params.space, llm=params.llm,
                                             aggregation=params.aggregation,
                                             similarity_threshold=params.similarity_threshold,
                                             classifier_name=clf_name)
    except KeyError as e:
        raise field_error(f"{prefix}.method", f"unknown method {params.method!r}; available: "
                                              f"{sorted(rt.methods())}") from e
    except LookupError as e:
        raise field_error(f"{prefix}.llm", str(e).strip("'\"")) from e
    except ValidationError as e:
        raise field_error(f"{prefix}.llm", str(e)) from e
    return Resolved(clf, clf_name, explainer, lock, info, params.top_k)


def source_for(rt: Runtime, text: str, concept: str, source: str | None, labels: dict[str, str] | None
               ) -> tuple[str, bool, dict[str, str] | None]:
    """The concept's current value: given, else from known labels, else inferred by the taggers."""
    if source is not None:
        return source, False, labels
    if labels and concept in labels:
        return labels[concept], False, labels
    inferred = rt.infer_labels([text])[0]
    merged = {**inferred, **(labels or {})}
    return merged[concept], True, merged


def run(rt: Runtime, r: Resolved, method: str, text: str, concept: str, target: str, source: str | None,
        labels: dict[str, str] | None) -> tuple[Explanation, Intervention, bool, dict[str, float]]:
    """Explain one text; returns the explanation, the full intervention, whether the source was inferred, timings."""
    started = time.perf_counter()
    src, inferred, labels = source_for(rt, text, concept, source, labels)
    t_source = time.perf_counter()
    intervention = Intervention(concept, target, src)
    if src == target:
        base = np.asarray(r.classifier.predict_proba([text]), float)[0]
        exp = zero_explanation(method, r.classifier.labels, base, intervention)
        exp.details["note"] = f"the text already has {concept}={target}; changing it to {target} changes nothing"
        exp.details["unchanged"] = True
    else:
        with r.lock:
            exp = r.explainer.explain(text, intervention, r.classifier, r.top_k, base_labels=labels)
    done = time.perf_counter()
    timings = {"total_ms": round((done - started) * 1000, 3), "source_inference_ms": round((t_source - started) * 1000, 3),
               "explain_ms": round((done - t_source) * 1000, 3)}
    return exp, intervention, inferred, timings


def as_map(labels: list[str], values: Any) -> dict[str, float]:
    return {lab: float(v) for lab, v in zip(labels, values, strict=True)}


def response(exp: Explanation, r: Resolved, method: str, intervention: Intervention, inferred: bool,
             timings: dict[str, float]) -> dict[str, Any]:
    labels = list(exp.labels)
    details = plain(exp.details)
    cfs = []
    for c in exp.counterfactuals:
        d = asdict(c)
        d["prediction"] = as_map(labels, c.prediction) if c.prediction is not None else None
        cfs.append(d)
    return {
        "method": method, "classifier": r.classifier_name, "labels": labels,
        "base_prediction": as_map(labels, exp.base_prediction), "icace": as_map(labels, exp.icace),
        "intervention": {"concept": intervention.concept, "target": intervention.target,
                         "source": intervention.source, "source_inferred": inferred},
        "uncertainty": {"spread": as_map(labels, exp.spread),
                        "n_counterfactuals": int(exp.details.get("used", len(exp.counterfactuals)))},
        "counterfactuals": cfs, "cost": asdict(exp.cost), "timings": timings,
        "space_id": r.info.get("space_id") or exp.details.get("space_id"), "llm": r.info.get("llm"),
        "details": details,
    }


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
