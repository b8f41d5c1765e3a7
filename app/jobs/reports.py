"""Report and comparison jobs: one item per text, the work in `explainers.reports`.

`plan` checks a request against the domain (4xx naming the field, the skipped cells and why)
and pins everything the items need (domain, classifier names, method, cells), so a resumed job
runs exactly what was asked. Each item is a pure function of (request, text): the batch's
searches, the placebo subset (seeded per cell) and the classifier scores; `finalize` builds the
report or the comparison from the stored items.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import httpx
import numpy as np
from pydantic import ValidationError

from app import explain
from app.jobs.worker import RetryableError
from app.problems import ApiError, field_error, validation_error
from app.resources import ExplainerLock, Runtime
from app.schemas import ComparisonRequest, EffectText, ReportRequest
from explainers.artifacts import META
from explainers.domains import Domain
from explainers.errors import UpstreamUnavailable
from explainers.reports import Cell, ReportScorer, plan_cells, summarize_comparison, summarize_report
from explainers.reports.report import ScoreStats, calibration_lookup

KINDS = ("report", "comparison")


def _classifier(rt: Runtime, ref: Any, where: str) -> tuple[Any, str]:
    try:
        return rt.classifier(ref)
    except LookupError as e:
        raise field_error(where, str(e).strip("'\"")) from e
    except ValidationError as e:
        raise validation_error(e.errors(), where) from e
    except ModuleNotFoundError as e:
        raise ApiError(
            409, "Missing resource", f"inline classifier specs need module {e.name}", kind="missing-resource"
        ) from e
    except ValueError as e:
        raise field_error(where, str(e)) from e


def _explainer(rt: Runtime, domain: Domain, params: ReportRequest | ComparisonRequest, name: str) -> Any:
    if params.method not in rt.methods():
        raise field_error(
            "body.method", f"unknown method {params.method!r}; available: {sorted(rt.methods())}"
        )
    try:
        explainer, lock, _ = rt.explainer(
            params.method,
            domain,
            llm=params.llm,
            options=explain.taken_options(params.method, {"aggregation": params.aggregation}),
            classifier_name=name,
        )
    except LookupError as e:
        raise field_error("body.llm", str(e).strip("'\"")) from e
    if not hasattr(explainer, "counterfactuals_batch"):
        raise field_error(
            "body.method",
            f"method {params.method!r} estimates without counterfactual texts, so its counterfactuals cannot be "
            "shared between labels and classifiers; use match, splice, splice_median, approx_match or pt_match",
        )
    if params.aggregation != "mean" and not hasattr(explainer, "aggregation"):
        raise field_error("body.aggregation", f"method {params.method!r} does not aggregate counterfactuals")
    return explainer, lock


def _texts(rt: Runtime, domain: Domain, params: ReportRequest | ComparisonRequest) -> list[dict[str, Any]]:
    """Payloads {text, id?, labels?}: the request's texts, or a seeded sample of the domain's corpus."""
    s = rt.settings
    if params.texts is not None:
        if len(params.texts) > s.limits.max_report_texts:
            raise field_error(
                "body.texts",
                f"at most {s.limits.max_report_texts} texts per report, got {len(params.texts)}",
                status=413,
            )
        out = []
        for i, t in enumerate(params.texts):
            item = EffectText(text=t) if isinstance(t, str) else t
            if len(item.text) > s.limits.max_text_chars:
                raise field_error(f"body.texts.{i}", f"at most {s.limits.max_text_chars} characters")
            explain.check_labels(domain.schema, item.labels, f"body.texts.{i}.labels")
            out.append(item.model_dump(exclude_none=True))
        return out
    size = params.sample.size if params.sample is not None else 200
    seed = params.sample.seed if params.sample is not None else 0
    if size > s.limits.max_report_texts:
        raise field_error(
            "body.sample.size", f"at most {s.limits.max_report_texts} texts per report", status=413
        )
    pool = domain.pool
    rng = np.random.default_rng(seed)
    rows = sorted(rng.choice(len(pool), size=min(size, len(pool)), replace=False).tolist())
    ids = pool.ids
    return [
        {"text": pool.texts[r], "id": ids[r] if ids else str(r), "labels": dict(pool.labels[r])}
        for r in rows
        if len(pool.texts[r]) <= s.limits.max_text_chars
    ]


def plan(
    rt: Runtime, params: ReportRequest | ComparisonRequest, kind: str
) -> tuple[dict[str, Any], list[Any]]:
    """The job's pinned request and its payloads, or a 4xx naming what is wrong."""
    s = rt.settings
    if params.top_k > s.limits.max_top_k:
        raise field_error("body.top_k", f"at most {s.limits.max_top_k}")
    try:
        domain = rt.domain(params.domain)
    except LookupError as e:
        raise field_error(
            "body.domain", f"{str(e).strip(chr(39) + chr(34))}; known: {rt.domains.ids()}"
        ) from e
    schema = domain.schema
    for i, c in enumerate(params.concepts or []):
        if c not in schema:
            raise field_error(f"body.concepts.{i}", f"unknown concept {c!r}; known: {schema.names}")
    if isinstance(params, ComparisonRequest):
        refs: list[Any] = list(params.classifiers)
        where = [f"body.classifiers.{i}" for i in range(len(refs))]
        for c, v in (params.thresholds or {}).items():
            if c not in schema:
                raise field_error(f"body.thresholds.{c}", f"unknown concept {c!r}; known: {schema.names}")
            if not 0.0 <= v <= 1.0:
                raise field_error(f"body.thresholds.{c}", "a threshold is between 0 and 1")
    else:
        ref = params.classifier if params.classifier is not None else rt.default_classifier_name()
        if ref is None:
            raise field_error("body.classifier", "required: this server has no default classifier")
        refs, where = [ref], ["body.classifier"]
    resolved = [_classifier(rt, r, w) for r, w in zip(refs, where, strict=True)]
    names = [n for _, n in resolved]
    if len(resolved) == 2:
        if names[0] == names[1]:
            raise field_error("body.classifiers", "the two classifiers are the same")
        if list(resolved[0][0].labels) != list(resolved[1][0].labels):
            raise field_error(
                "body.classifiers",
                f"the classifiers' labels differ ({list(resolved[0][0].labels)} vs {list(resolved[1][0].labels)}); "
                "CaCE differences need the same labels in the same order",
            )
    _explainer(rt, domain, params, names[0])
    payloads = _texts(rt, domain, params)
    if not payloads:
        raise field_error("body.sample", "no text of the corpus fits the server's max_text_chars")
    cells, skipped = [], []
    for cell in plan_cells(schema, params.concepts):
        reason = domain.unavailable_reason(params.method, cell.concept, cell.target)
        if reason is None and not domain.tagger_usable(cell.concept):
            if not any(cell.concept in (p.get("labels") or {}) for p in payloads):
                reason = (
                    f"domain {domain.id!r} has no usable tagger for {cell.concept!r} and no text carries its "
                    f"{cell.concept!r} label, so no text's current value is known"
                )
        if reason is None:
            cells.append(cell)
        else:
            skipped.append({**cell.as_dict(), "reason": reason})
    if not cells:
        raise ApiError(
            422,
            "Nothing to report",
            "every cell is skipped: " + "; ".join(f"{s['key']}: {s['reason']}" for s in skipped[:6]),
            kind="no-cells",
            extra={"skipped": skipped},
        )
    for name in names:
        rt.maybe_calibrate(domain, name, queued_by="report")
    request = params.model_dump(mode="json", exclude={"texts"})
    request.update(
        domain=domain.id,
        classifier_refs=refs,
        classifier_names=names,
        labels=list(resolved[0][0].labels),
        cells=[c.as_dict() for c in cells],
        skipped=skipped,
        n_texts=len(payloads),
    )
    return request, payloads


@dataclass
class _Job:
    domain: Domain
    classifiers: list[Any]
    scorer: ReportScorer
    lock: ExplainerLock
    cells: list[Cell]


class ReportHandler:
    """Runs report and comparison items (a batch of texts at a time) and builds the result."""

    finalize_streams = False  # the top texts need the payloads

    def __init__(self, rt: Runtime, kind: str) -> None:
        self.rt = rt
        self.kind = kind
        self._jobs: dict[str, _Job] = {}
        self._guard = threading.Lock()

    def _job(self, job_id: str, request: dict[str, Any]) -> _Job:
        with self._guard:
            hit = self._jobs.get(job_id)
        if hit is not None:
            return hit
        domain = self.rt.domain(request["domain"])
        classifiers = [self.rt.classifier(ref)[0] for ref in request["classifier_refs"]]
        explainer, lock, _ = self.rt.explainer(
            request["method"],
            domain,
            llm=request.get("llm"),
            options=explain.taken_options(
                request["method"], {"aggregation": request.get("aggregation", "mean")}
            ),
            classifier_name=request["classifier_names"][0],
        )
        scorer = ReportScorer(
            explainer,
            top_k=int(request["top_k"]),
            space=domain.space,
            placebo=self.kind == "report" and bool(request.get("placebo", True)),
            seed=int(request.get("seed", 0)),
        )
        cells = [Cell(c["concept"], c["source"], c["target"]) for c in request["cells"]]
        job = _Job(domain, classifiers, scorer, lock, cells)
        with self._guard:
            if len(self._jobs) > 16:
                self._jobs.clear()
            self._jobs[job_id] = job
        return job

    def process(self, job_id: str, request: dict[str, Any], payload: Any, index: int) -> dict[str, Any]:
        return self.process_batch(job_id, request, [(payload, index)])[0]

    def process_batch(
        self, job_id: str, request: dict[str, Any], items: list[tuple[Any, int]]
    ) -> list[dict[str, Any]]:
        try:
            job = self._job(job_id, request)
            texts = [p["text"] for p, _ in items]
            labels = [dict(p.get("labels") or {}) for p, _ in items]
            wanted = {c.concept for c in job.cells if job.domain.tagger_usable(c.concept)}
            missing = [i for i, lab in enumerate(labels) if wanted - set(lab)]
            if missing:  # one tagger call for the texts whose labels are not all known
                tags = self.rt.infer_labels(job.domain, [texts[i] for i in missing])
                for i, tagged in zip(missing, tags, strict=True):
                    labels[i] = {**tagged, **labels[i]}
            stats = ScoreStats()
            with job.lock:
                results = job.scorer.score(texts, labels, job.cells, job.classifiers, stats)
        except (UpstreamUnavailable, httpx.TransportError) as e:
            raise RetryableError(f"{type(e).__name__}: {e}") from e
        except ApiError as e:
            raise ValueError(e.detail) from e
        # The batch's cost, on its first item (a sum over items is the job's cost).
        results[0]["cost"] = {
            "searches": stats.searches,
            "placebo_searches": stats.placebo_searches,
            "classifier_calls": stats.classifier_calls,
            "classifier_texts": stats.classifier_texts,
        }
        return results

    def finalize(
        self, job_id: str, request: dict[str, Any], rows: Iterable[dict[str, Any]]
    ) -> dict[str, Any]:
        with self._guard:
            self._jobs.pop(job_id, None)
        rows = list(rows)
        cells = [Cell(c["concept"], c["source"], c["target"]) for c in request["cells"]]
        n_boot = self.rt.settings.jobs.effects_n_boot
        common: dict[str, Any] = {
            "labels": request["labels"],
            "cells": cells,
            "skipped": request.get("skipped", []),
            "confidence": request["confidence"],
            "n_boot": n_boot,
            "seed": request["seed"],
            "top_texts": request["top_texts"],
        }
        if self.kind == "comparison":
            names = request["classifier_names"]
            result = summarize_comparison(
                rows,
                names=(names[0], names[1]),
                threshold=request["threshold"],
                thresholds=request.get("thresholds"),
                **common,
            )
        else:
            result = summarize_report(
                rows, alpha=request["alpha"], calibration=self._calibration(request), **common
            )
        if not result["cells"]:
            raise ValueError(
                "no cell could be estimated: "
                + "; ".join(f"{s['key']}: {s['reason']}" for s in result["skipped"][:6])
            )
        result.update(
            domain=request["domain"],
            method=request["method"],
            top_k=request["top_k"],
            n_texts=len(rows),
            cost=_cost(rows),
        )
        if self.kind == "report":
            result["classifier"] = request["classifier_names"][0]
        return result

    def _calibration(self, request: dict[str, Any]) -> Any:
        from explainers.estimators.calibration import Calibration

        domain = self.rt.domain(request["domain"])
        try:
            path = domain.calibration_dir(request["classifier_names"][0])
        except ValueError:  # an inline classifier has no calibration
            return None
        if not (path / META).exists():
            return None
        return calibration_lookup(Calibration.load(path), request["labels"])


def _cost(rows: Sequence[dict[str, Any]]) -> dict[str, int]:
    total: dict[str, int] = {}
    for r in rows:
        for k, v in ((r.get("result") or {}).get("cost") or {}).items():
            total[k] = total.get(k, 0) + int(v)
    return total
