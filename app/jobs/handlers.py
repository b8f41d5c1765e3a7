"""The job kinds: effects (one item per text) and domain builds (one item).

Both inline effects requests and effects jobs run `EffectsHandler`, so a job's result
equals what the same request would return inline, and a resumed job equals an
uninterrupted one: each item is a pure function of (request, text), and CaCE's
bootstrap is seeded by the request.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

import httpx
import numpy as np

from app import explain
from app.jobs.worker import RetryableError
from app.problems import ApiError
from app.resources import Runtime
from app.schemas import DomainGenerate, EffectsParams
from explainers.concepts import ConceptSchema
from explainers.errors import UpstreamUnavailable
from explainers.estimate import cace
from explainers.registry import Pool


class EffectsHandler:
    """ICaCE per text, then CaCE with a bootstrap CI over the texts the intervention changes."""

    def __init__(self, rt: Runtime) -> None:
        self.rt = rt
        self._resolved: dict[str, explain.Resolved] = {}

    def resolved(self, job_id: str, params: EffectsParams) -> explain.Resolved:
        r = self._resolved.get(job_id)
        if r is None:
            r = explain.resolve(self.rt, params)
            if len(self._resolved) > 32:
                self._resolved.clear()
            self._resolved[job_id] = r
        return r

    def process(self, job_id: str, request: dict[str, Any], payload: Any, index: int) -> dict[str, Any]:
        params = EffectsParams.model_validate(request)
        try:
            r = self.resolved(job_id, params)
            return self.row(r, params, payload)
        except (UpstreamUnavailable, httpx.TransportError) as e:  # classifier or LLM, timeouts included
            raise RetryableError(f"{type(e).__name__}: {e}") from e
        except ApiError as e:
            raise ValueError(e.detail) from e

    def row(self, r: explain.Resolved, params: EffectsParams, payload: dict[str, Any]) -> dict[str, Any]:
        iv = params.intervention
        q = explain.Query(payload["text"], iv.concept, iv.target, iv.source, payload.get("labels"))
        exp, intervention, inferred, _ = explain.run(self.rt, r, q)
        unchanged = bool(exp.details.get("unchanged"))
        return {
            "id": payload.get("id"), "status": "unchanged" if unchanged else "done",
            "source": intervention.source, "source_inferred": inferred,
            "labels": list(exp.labels), "icace": [float(x) for x in exp.icace],
            "base_prediction": [float(x) for x in exp.base_prediction],
            "n_counterfactuals": int(exp.details.get("used", len(exp.counterfactuals))),
        }

    def finalize(self, job_id: str, request: dict[str, Any], rows: list[dict[str, Any]]) -> dict[str, Any]:
        self._resolved.pop(job_id, None)
        params = EffectsParams.model_validate(request)
        return summarize(params, rows)


def summarize(params: EffectsParams, rows: list[dict[str, Any]]) -> dict[str, Any]:
    """CaCE + CI over changed texts; raises ValueError if no text was changed."""
    results = [r["result"] for r in rows if r["status"] == "done" and r.get("result")]
    changed = [x for x in results if x["status"] == "done"]
    failed = sum(1 for r in rows if r["status"] == "failed")
    if not changed:
        raise ValueError(f"no text could be explained: {len(results)} already had "
                         f"{params.intervention.concept}={params.intervention.target}, {failed} failed")
    labels = changed[0]["labels"]
    icaces = np.array([x["icace"] for x in changed], dtype=float)
    est = cace(icaces, confidence=params.confidence, seed=params.seed)
    sources = Counter(x["source"] for x in results)
    mean_abs = np.abs(icaces).mean(axis=0)
    return {
        "labels": labels,
        "cace": explain.as_map(labels, est.cace),
        "ci_low": explain.as_map(labels, est.ci_low),
        "ci_high": explain.as_map(labels, est.ci_high),
        "confidence": params.confidence,
        "summary": {
            "n_texts": len(rows), "n_changed": len(changed), "n_unchanged": len(results) - len(changed),
            "n_failed": failed, "sources": dict(sources),
            "mean_abs_icace": explain.as_map(labels, mean_abs),
            "most_increased": labels[int(np.argmax(est.cace))], "most_decreased": labels[int(np.argmin(est.cace))],
            "method": params.method, "top_k": params.top_k,
            "intervention": params.intervention.model_dump(),
        },
    }


def row_out(row: dict[str, Any]) -> dict[str, Any]:
    """A stored item as an EffectRow."""
    res = row.get("result") or {}
    labels = res.get("labels")
    status = res.get("status", row["status"]) if row["status"] == "done" else row["status"]
    payload = row.get("payload") or {}
    return {
        "index": row["index"], "id": res.get("id", payload.get("id")), "status": status, "source": res.get("source"),
        "icace": explain.as_map(labels, res["icace"]) if labels else None,
        "base_prediction": explain.as_map(labels, res["base_prediction"]) if labels else None,
        "n_counterfactuals": res.get("n_counterfactuals"), "error": row.get("error"),
        "attempts": row.get("attempts"), "finished_at": row.get("finished_at"),
    }


class CalibrationHandler:
    """Calibrate the estimators of one named classifier on one domain (one item), saved in the domain."""

    def __init__(self, rt: Runtime) -> None:
        self.rt = rt

    def process(self, job_id: str, request: dict[str, Any], payload: Any, index: int) -> dict[str, Any]:
        from explainers.estimators.calibration import calibrate

        domain = self.rt.domain(request["domain_id"])
        name = request["classifier"]
        clf, _ = self.rt.classifier(name)
        try:
            cal = calibrate(clf, domain.pool, domain.space, self.rt.encoder(), taggers=domain.taggers,
                            max_pairs=request.get("max_pairs") or self.rt.settings.calibration_max_pairs,
                            max_classifier_texts=self.rt.settings.calibration_max_texts, classifier_name=name)
        except (UpstreamUnavailable, httpx.TransportError) as e:
            raise RetryableError(f"{type(e).__name__}: {e}") from e
        cal.save(domain.calibration_dir(name))
        self.rt.forget_domain(domain.id)  # `auto` explainers rebuild with the calibration
        return {"domain_id": domain.id, "classifier": name, **domain.calibrations()[name]}

    def finalize(self, job_id: str, request: dict[str, Any], rows: list[dict[str, Any]]) -> dict[str, Any]:
        self.rt.calibration_finished(request["domain_id"], request["classifier"])
        row = rows[0]
        if row["status"] != "done":
            raise ValueError(row.get("error") or "calibration failed")
        return row["result"]


class DomainHandler:
    """Build a domain from an uploaded corpus (one item; the lease heartbeat covers long training)."""

    def __init__(self, rt: Runtime) -> None:
        self.rt = rt

    def process(self, job_id: str, request: dict[str, Any], payload: Any, index: int) -> dict[str, Any]:
        from explainers.domains import build_domain, pool_from_rows

        schema = ConceptSchema.from_dict(request["schema"])
        pool = pool_from_rows(payload["corpus"], schema)
        augment = self._augmenter(job_id, pool, request["generate"]) if request.get("generate") else None
        domain_id = request["domain_id"]
        domain = build_domain(self.rt.domains.root, domain_id, pool, encoder=self.rt.encoder(), augment=augment)
        self.rt.forget_domain(domain_id)
        d = domain.describe()
        return {"domain_id": domain_id, "stats": d["stats"], "taggers": d["taggers"], "space": d["space"],
                "methods": d["methods"], "generation": d["generation"]}

    def _augmenter(self, job_id: str, pool: Pool, gen: dict[str, Any]) -> Any:
        """Add LLM-generated counterfactuals, cached per job so a re-run item resumes, not restarts.

        Edits are checked by taggers fit on this corpus's own labels (never another domain's).
        """
        from explainers.matching.augment import generation_augmenter
        from explainers.taggers import TaggerSet

        opts = DomainGenerate.model_validate(gen)  # the stored request, with the API's defaults
        backend, name = self.rt.llm(opts.llm)
        if backend is None:
            raise ValueError("generate needs an LLM and none is configured")
        taggers = TaggerSet(pool.schema).fit(pool.texts, pool.labels) if opts.verify_with_taggers else None
        cache = Path(self.rt.settings.data_dir) / "generations" / f"domain-{job_id}.sqlite"
        cache.parent.mkdir(parents=True, exist_ok=True)
        augment = generation_augmenter(
            backend, n_sources=opts.sources, concepts_per_source=opts.concepts_per_source, cache=cache,
            taggers=taggers, temperature=opts.temperature, max_tokens=opts.max_tokens,
        )  # fmt: skip

        def run(p: Pool) -> tuple[Pool, dict[str, Any]]:
            out, report = augment(p)
            if report["kept_edits"] == 0 and report["errors"]:
                raise RetryableError(f"the LLM {name!r} produced no counterfactual ({report['errors']} failed "
                                     "requests)")
            return out, {**report, "llm_name": name}

        return run

    def finalize(self, job_id: str, request: dict[str, Any], rows: list[dict[str, Any]]) -> dict[str, Any]:
        row = rows[0]
        if row["status"] != "done":
            raise ValueError(row.get("error") or "domain build failed")
        return row["result"]
