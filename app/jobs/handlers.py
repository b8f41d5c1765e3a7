"""The job kinds: effects (one item per text) and domain builds (one item).

Both inline effects requests and effects jobs run `EffectsHandler`, so a job's result
equals what the same request would return inline, and a resumed job equals an
uninterrupted one: each item is a pure function of (request, text), and CaCE's
bootstrap is seeded by the request.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import httpx
import numpy as np

from app import explain
from app.jobs.guards import BudgetedClassifier
from app.jobs.worker import RetryableError
from app.problems import ApiError
from app.resources import MIN_CALIBRATION_TEXTS, Runtime
from app.schemas import DomainGenerate, EffectsParams
from explainers.concepts import ConceptSchema, Intervention
from explainers.data.pool import Pool
from explainers.errors import BudgetExhausted, Cancelled, UpstreamUnavailable
from explainers.estimate import cace
from explainers.progress import Stages, cancellable, checkpoint
from explainers.types import Explanation, explain_batch, zero_explanation

log = logging.getLogger("cace.jobs")


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
        return self.process_batch(job_id, request, [(payload, index)])[0]

    def process_batch(
        self, job_id: str, request: dict[str, Any], items: list[tuple[Any, int]]
    ) -> list[dict[str, Any]]:
        """Rows for a batch of items, each stage once for the batch (see `rows`).

        Upstream outages become RetryableError (the worker retries the whole batch later);
        any other error fails the batch, and the worker re-runs its items one by one so that
        only the bad item fails.
        """
        params = EffectsParams.model_validate(request)
        try:
            r = self.resolved(job_id, params)
            return self.rows(r, params, [payload for payload, _ in items])
        except (UpstreamUnavailable, httpx.TransportError) as e:  # classifier or LLM, timeouts included
            raise RetryableError(f"{type(e).__name__}: {e}") from e
        except ApiError as e:
            if e.status == 503:  # busy (the explainer's lock within the item's deadline): try again later
                raise RetryableError(e.detail) from e
            raise ValueError(e.detail) from e

    def row(self, r: explain.Resolved, params: EffectsParams, payload: dict[str, Any]) -> dict[str, Any]:
        return self.rows(r, params, [payload])[0]

    def rows(
        self, r: explain.Resolved, params: EffectsParams, payloads: list[dict[str, Any]]
    ) -> list[dict[str, Any]]:
        """ICaCE rows for many texts, each stage once: one tagger call for the texts whose source
        value is unknown, one batched explanation (encoder, search, one classifier call) for the
        texts the intervention changes, one classifier call for the bases of those it does not.
        Each row equals what explaining its text alone gives (`explain.run`)."""
        iv = params.intervention
        texts = [p["text"] for p in payloads]
        labels: list[dict[str, str] | None] = [p.get("labels") for p in payloads]
        unknown = [i for i, lab in enumerate(labels) if iv.source is None and not (lab and iv.concept in lab)]
        if iv.source is None:
            known = explain.known_labels(r.domain, texts, labels, iv.concept)
            labels, sources = list(known), [lab[iv.concept] for lab in known]
        else:
            sources = [iv.source] * len(texts)
        interventions = [Intervention(iv.concept, iv.target, src) for src in sources]
        changed = [i for i, x in enumerate(interventions) if x.source != x.target]
        same = [i for i, x in enumerate(interventions) if x.source == x.target]
        exps: dict[int, Explanation] = {}
        if changed:
            with explain.explaining(r) as classifier:
                found = explain_batch(
                    r.explainer,
                    [texts[i] for i in changed],
                    [interventions[i] for i in changed],
                    classifier,
                    r.top_k,
                    base_labels=[labels[i] for i in changed],
                )
            exps.update(zip(changed, found, strict=True))
        if same:
            bases = np.asarray(r.classifier.predict_proba([texts[i] for i in same]), float)
            for i, base in zip(same, bases, strict=True):
                exp = zero_explanation(r.method, r.classifier.labels, base, interventions[i])
                exp.details["unchanged"] = True
                exps[i] = exp
        inferred = set(unknown)
        return [
            self._row(payloads[i], exps[i], interventions[i], i in inferred) for i in range(len(payloads))
        ]

    @staticmethod
    def _row(
        payload: dict[str, Any], exp: Explanation, intervention: Intervention, inferred: bool
    ) -> dict[str, Any]:
        unchanged = bool(exp.details.get("unchanged"))
        return {
            "id": payload.get("id"),
            "status": "unchanged" if unchanged else "done",
            "source": intervention.source,
            "source_inferred": inferred,
            "labels": list(exp.labels),
            "icace": [float(x) for x in exp.icace],
            "base_prediction": [float(x) for x in exp.base_prediction],
            "n_counterfactuals": int(exp.details.get("used", len(exp.counterfactuals))),
            # auto, calibrated: whether its calibration describes this text (explainers/estimators/shift.py)
            "valid": (exp.details.get("situation") or {}).get("valid"),
        }

    # The worker may pass `finalize` an iterator over the stored rows instead of a list (one pass).
    finalize_streams = True

    def finalize(
        self, job_id: str, request: dict[str, Any], rows: Iterable[dict[str, Any]]
    ) -> dict[str, Any]:
        self._resolved.pop(job_id, None)
        params = EffectsParams.model_validate(request)
        result = summarize(
            params, rows, max_failed_fraction=self.rt.settings.jobs.effects_max_failed_fraction
        )
        if isinstance(params.classifier, str):  # a job that explained its texts may queue a calibration
            try:
                domain = self.rt.domain(params.domain)
            except (LookupError, ValueError):  # deleted meanwhile: nothing to calibrate on
                return result
            self.rt.maybe_calibrate(domain, params.classifier, queued_by="effects job")
        return result


def summarize(
    params: EffectsParams, rows: Iterable[dict[str, Any]], *, max_failed_fraction: float = 1.0
) -> dict[str, Any]:
    """CaCE + CI over changed texts; raises ValueError if no text was changed, or if more than
    `max_failed_fraction` of the texts failed (a CaCE with a tight CI over the few texts that
    worked would misrepresent the request: the job fails instead, and its rows stay readable).

    One pass over `rows` (an iterator of a million stored rows is fine): counts and sources are
    tallied as rows arrive and only the changed texts' ICaCE vectors are kept, as compact arrays,
    for the bootstrap.
    """
    n_rows = n_results = failed = 0
    checked = not_valid = 0
    sources: Counter[str] = Counter()
    labels: list[str] | None = None
    blocks: list[np.ndarray] = []
    pending: list[list[float]] = []
    for r in rows:
        n_rows += 1
        if r["status"] == "failed":
            failed += 1
        x = r.get("result") if r["status"] == "done" else None
        if not x:
            continue
        n_results += 1
        sources[x["source"]] += 1
        if x["status"] == "done":
            labels = labels or x["labels"]
            pending.append(x["icace"])
            if x.get("valid") is not None:
                checked += 1
                not_valid += not x["valid"]
            if len(pending) == 4096:
                blocks.append(np.asarray(pending, dtype=float))
                pending = []
    if pending:
        blocks.append(np.asarray(pending, dtype=float))
    if n_rows and failed / n_rows > max_failed_fraction:
        raise ValueError(
            f"{failed} of {n_rows} texts failed ({failed / n_rows:.0%}), more than the "
            f"{max_failed_fraction:.0%} allowed (CACE_EFFECTS_MAX_FAILED_FRACTION): no CaCE is reported; "
            "the rows (with each text's error) stay at the job's rows link"
        )
    if labels is None:
        raise ValueError(
            f"no text could be explained: {n_results} already had "
            f"{params.intervention.concept}={params.intervention.target}, {failed} failed"
        )
    icaces = np.concatenate(blocks)
    est = cace(icaces, confidence=params.confidence, seed=params.seed)
    mean_abs = np.abs(icaces).mean(axis=0)
    warnings = []
    if failed:
        warnings.append(
            f"{failed} of {n_rows} texts failed and are not in the CaCE: it and its CI are over the "
            f"{len(icaces)} changed texts that succeeded, which may not represent all the texts"
        )
    if not_valid:
        warnings.append(
            f"for {not_valid} of {checked} changed texts the calibration behind auto does not hold (few "
            "calibration pairs had a base prediction like theirs, or the classifier was trained on the "
            "calibration's texts): auto answered them with its robust fallback and their expected error "
            "and interval are not claimed (each row's `valid`)"
        )
    return {
        "labels": labels,
        "cace": explain.as_map(labels, est.cace),
        "ci_low": explain.as_map(labels, est.ci_low),
        "ci_high": explain.as_map(labels, est.ci_high),
        "confidence": params.confidence,
        "summary": {
            "n_texts": n_rows,
            "n_changed": len(icaces),
            "n_unchanged": n_results - len(icaces),
            "n_used": len(icaces),
            "n_failed": failed,
            "sources": dict(sources),
            **({"calibration_checked": checked, "calibration_not_valid": not_valid} if checked else {}),
            "mean_abs_icace": explain.as_map(labels, mean_abs),
            "most_increased": labels[int(np.argmax(est.cace))],
            "most_decreased": labels[int(np.argmin(est.cace))],
            "method": params.method,
            "top_k": params.top_k,
            "intervention": params.intervention.model_dump(),
        },
        "warnings": warnings,
    }


def row_out(row: dict[str, Any]) -> dict[str, Any]:
    """A stored item as an EffectRow."""
    res = row.get("result") or {}
    labels = res.get("labels")
    status = res.get("status", row["status"]) if row["status"] == "done" else row["status"]
    payload = row.get("payload") or {}
    return {
        "index": row["index"],
        "id": res.get("id", payload.get("id")),
        "status": status,
        "source": res.get("source"),
        # Items of other job kinds (a report's searches, a build) carry labels but no per-text ICaCE.
        "icace": explain.as_map(labels, res["icace"]) if labels and "icace" in res else None,
        "base_prediction": (
            explain.as_map(labels, res["base_prediction"]) if labels and "base_prediction" in res else None
        ),
        "n_counterfactuals": res.get("n_counterfactuals"),
        "valid": res.get("valid"),
        "error": row.get("error"),
        "attempts": row.get("attempts"),
        "finished_at": row.get("finished_at"),
    }


def job_stages(rt: Runtime, job_id: str, what: str) -> Stages:
    """Progress of a one-item job's work, stored on its job row (at most once a second) for GET /v1/jobs."""
    return Stages(what, log=log.info, on_update=lambda snap: rt.store.set_job_stages(job_id, snap))


def job_cancelled(store: Any, job_id: str) -> bool:
    """Whether a running job's work should stop (cancelled, or otherwise final) as the store says."""
    try:
        return store.job_status(job_id) not in ("queued", "running")
    except Exception:  # a store that blinks does not stop the work; the next check asks again
        log.warning("job %s: could not read its status", job_id, exc_info=True)
        return False


class CalibrationHandler:
    """Calibrate the estimators of one named classifier on one domain (one item), saved in the domain.

    Bounded: every classifier call is charged first to the classifier's calibration budget in the
    store (shared by replicas, counting every attempt), and checks whether the job was cancelled;
    how it ended sets the (domain, classifier)'s auto-calibration backoff there.
    """

    def __init__(self, rt: Runtime) -> None:
        self.rt = rt

    def process(self, job_id: str, request: dict[str, Any], payload: Any, index: int) -> dict[str, Any]:
        from explainers.estimators.calibration_fit import calibrate

        s, store = self.rt.settings, self.rt.store
        domain = self.rt.domain(request["domain_id"])
        name = request["classifier"]
        clf, _ = self.rt.classifier(name)
        try:
            if job_cancelled(store, job_id):
                raise Cancelled("cancelled")
            left, window_end = store.calibration_budget_left(
                name, s.calibration.budget_texts, s.calibration.budget_window_s
            )
            max_texts = min(s.calibration.max_texts, left)
            if max_texts < MIN_CALIBRATION_TEXTS:
                raise BudgetExhausted(
                    f"classifier {name!r} has {left} of its {s.calibration.budget_texts} calibration texts "
                    f"per {s.calibration.budget_window_s:g} s left (CACE_CALIBRATION_BUDGET_TEXTS); a "
                    f"calibration needs at least {MIN_CALIBRATION_TEXTS}",
                    retry_at=window_end,
                )
            budgeted = BudgetedClassifier(
                clf,
                store=store,
                budget_key=name,
                budget_texts=s.calibration.budget_texts,
                window_s=s.calibration.budget_window_s,
            )
            # Every classifier chunk and every stage's progress is a checkpoint: a cancel stops it there.
            with cancellable(lambda: job_cancelled(store, job_id), interval_s=0.5):
                cal = calibrate(
                    budgeted,
                    domain.pool,
                    domain.space,
                    self.rt.encoder(),
                    taggers=domain.taggers,
                    max_pairs=request.get("max_pairs") or s.calibration.max_pairs,
                    max_classifier_texts=max_texts,
                    classifier_name=name,
                    trained_on=request.get("trained_on"),
                    log=lambda _: checkpoint(),  # called between stages: a cancel is seen there too
                    stages=job_stages(self.rt, job_id, f"calibration of {name} on {domain.id}"),
                )
        except (UpstreamUnavailable, httpx.TransportError) as e:
            raise RetryableError(f"{type(e).__name__}: {e}") from e
        except Cancelled:
            # A cancelled job is never finalized: its backoff is set here (no auto re-queue at once).
            store.calibration_outcome(
                domain.id,
                name,
                error="cancelled",
                backoff_s=s.calibration.backoff_s,
                backoff_max_s=s.calibration.backoff_max_s,
            )
            raise
        except BudgetExhausted as e:
            store.calibration_defer(domain.id, name, e.retry_at)
            raise
        cal.meta["pairs_origin"] = domain.pairs_origin  # the expected error was measured on these pairs
        # Cancelled past its last checkpoint (e.g. by the domain's delete), or the domain is gone:
        # nothing is saved, so no `calibrations/` folder reappears where a deleted domain was.
        if job_cancelled(store, job_id):
            raise Cancelled("cancelled")
        if not self.rt.domains.save_calibration(domain, name, cal):
            raise LookupError(f"domain {domain.id!r} was deleted while it was being calibrated")
        self.rt.forget_domain(domain.id)  # `auto` explainers rebuild with the calibration
        return {"domain_id": domain.id, "classifier": name, **domain.calibrations()[name]}

    def finalize(self, job_id: str, request: dict[str, Any], rows: list[dict[str, Any]]) -> dict[str, Any]:
        s = self.rt.settings
        row = rows[0]
        error = None if row["status"] == "done" else (row.get("error") or "calibration failed")
        self.rt.store.calibration_outcome(
            request["domain_id"],
            request["classifier"],
            error=error,
            backoff_s=s.calibration.backoff_s,
            backoff_max_s=s.calibration.backoff_max_s,
        )
        if error is not None:
            raise ValueError(error)
        return row["result"]


class DomainHandler:
    """Build a domain from an uploaded corpus (one item; the lease heartbeat covers long training)."""

    def __init__(self, rt: Runtime) -> None:
        self.rt = rt

    def process(self, job_id: str, request: dict[str, Any], payload: Any, index: int) -> dict[str, Any]:
        from explainers.domains import build_domain, pool_from_rows

        schema = ConceptSchema.from_dict(request["schema"])
        domain_id = request["domain_id"]
        # Cancelling the job stops the build at its next checkpoint (a training batch, an embedding
        # batch, a stage): the store says so to every replica; the build's folder is then removed.
        # One Stages for the whole job: an LLM build's stages, then build_domain's, in one percent.
        stages = job_stages(self.rt, job_id, f"domain build {domain_id}")
        with cancellable(lambda: self._cancelled(job_id)):
            if request.get("llm_build"):  # no labels or edits in the corpus: an LLM makes them first
                from app.llm_builds import run_llm_stages
                from explainers.domains.zero_label import stage_plan

                stages.expect(stage_plan(request["llm_build"]["plan"], len(payload["corpus"])))
                pool, hooks = run_llm_stages(
                    self.rt, job_id, schema, payload["corpus"], request["llm_build"], stages
                )
            else:
                pool, hooks = pool_from_rows(payload["corpus"], schema), {}
            augment = self._augmenter(job_id, pool, request["generate"]) if request.get("generate") else None
            domain = build_domain(
                self.rt.domains.root,
                domain_id,
                pool,
                encoder=self.rt.encoder(),
                augment=augment,
                stages=stages,
                **hooks,
            )
        self.rt.forget_domain(domain_id)
        d = domain.describe()
        return {
            "domain_id": domain_id,
            "stats": d["stats"],
            "taggers": d["taggers"],
            "space": d["space"],
            "methods": d["methods"],
            "generation": d["generation"],
            "provenance": d["provenance"],
            "llm_build": d["llm_build"],
        }

    def _cancelled(self, job_id: str) -> bool:
        return job_cancelled(self.rt.store, job_id)

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
                raise RetryableError(
                    f"the LLM {name!r} produced no counterfactual ({report['errors']} failed requests)"
                )
            return out, {**report, "llm_name": name}

        return run

    def finalize(self, job_id: str, request: dict[str, Any], rows: list[dict[str, Any]]) -> dict[str, Any]:
        self.rt.domains.release_build(request["domain_id"], job_id)
        row = rows[0]
        if row["status"] != "done":
            raise ValueError(row.get("error") or "domain build failed")
        return row["result"]
