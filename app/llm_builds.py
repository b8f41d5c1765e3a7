"""The service's side of building a domain from raw texts with an LLM (`params.llm_build`).

`POST /v1/domains` calls `check_definition` on each concept of a given schema and `prepare`
once it has the rows: `prepare` decides whether the build needs the LLM (asked for, or some
concept has no label in the corpus), checks what the LLM needs (definitions, a configured LLM,
the budget), estimates the time at the LLM's measured speed (the rates its previous builds
measured, stored with the generation cache; else a three-request probe, remembered for a while
per LLM) and returns the plan the 202 carries. The job (`app.jobs.handlers.DomainHandler`) runs
`explainers.domains.zero_label` with the stored options and reports every stage (labels,
llm_taggers, pairs, then the build's embed, taggers, space, save, load) to the job's one
`Stages`: `GET /v1/jobs/{id}`, `GET /v1/jobs`, `GET /v1/domains` (a domain still building) and
the UI all read that one snapshot from the job's row.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

from app.problems import ApiError, field_error
from app.resources import Runtime
from app.schemas import DomainLLMBuild, DomainParams
from app.schemas.types import unstorable
from explainers.concepts import ConceptSchema
from explainers.domains.zero_label import (
    LLMBuildOptions,
    LLMSpeed,
    PlanError,
    measure_speed,
    plan_build,
    stored_rates,
    undefined_concepts,
)
from explainers.errors import UpstreamError
from explainers.generation.cache import GenerationCache
from explainers.progress import Stages

MAX_DESCRIPTION = 2000
MAX_VALUE_EXAMPLES = 5
MAX_EXAMPLE_CHARS = 500
SPEED_TTL_S = 600.0
NO_LLM = (
    "no LLM is configured: set CACE_LLM_BASE_URL and CACE_LLM_MODEL (an OpenAI-compatible server), "
    "or register one at POST /v1/llms and name it in params.llm_build.llm"
)

_speeds: dict[str, tuple[float, LLMSpeed]] = {}
_speeds_lock = threading.Lock()


def check_definition(raw: dict[str, Any], where: str) -> None:
    """A concept's description, value descriptions and value examples: strings of bounded size, for its values."""
    values = raw.get("values") or []
    desc = raw.get("description", "")
    if isinstance(desc, str) and (len(desc) > MAX_DESCRIPTION or unstorable(desc)):
        raise field_error(f"{where}.description", f"at most {MAX_DESCRIPTION} characters of text")
    for key, limit in (("value_descriptions", MAX_DESCRIPTION), ("value_examples", MAX_VALUE_EXAMPLES)):
        got = raw.get(key)
        if got is None:
            continue
        if not isinstance(got, dict):
            raise field_error(f"{where}.{key}", "an object keyed by the concept's values")
        for value, item in got.items():
            at = f"{where}.{key}.{value}"
            if value not in values:
                raise field_error(at, f"not a value of this concept; values: {values}")
            items = [item] if key == "value_descriptions" else item
            if key == "value_examples" and (not isinstance(item, list) or len(item) > limit):
                raise field_error(at, f"a list of at most {limit} example sentences")
            for x in items:
                size = MAX_DESCRIPTION if key == "value_descriptions" else MAX_EXAMPLE_CHARS
                if not isinstance(x, str) or not x.strip() or len(x) > size or unstorable(x):
                    raise field_error(at, f"non-empty text of at most {size} characters")


def needs_llm(p: DomainParams, schema: ConceptSchema, rows: list[dict[str, Any]]) -> bool:
    return p.llm_build is not None or any(not any(c in r["labels"] for r in rows) for c in schema.names)


def _speed(rt: Runtime, name: str, backend: Any) -> LLMSpeed | None:
    key = f"{name}:{getattr(backend, 'base_url', '')}:{backend.model}"
    with _speeds_lock:
        hit = _speeds.get(key)
        if hit and time.monotonic() - hit[0] < SPEED_TTL_S:
            return hit[1]
    try:
        speed = measure_speed(backend)
    except UpstreamError as e:
        raise ApiError(
            502, "LLM unavailable", f"the LLM {name!r} did not answer the speed probe: {e}", kind="upstream"
        ) from e
    with _speeds_lock:
        _speeds[key] = (time.monotonic(), speed)
    return speed


def prepare(
    rt: Runtime, p: DomainParams, schema: ConceptSchema, rows: list[dict[str, Any]]
) -> dict[str, Any] | None:
    """The stored `llm_build` request part (options, LLM name, plan), or None for a labelled corpus.

    4xx naming the field: a concept the LLM cannot label (no description, no label), no LLM
    configured, a budget too small for the labels or for any concept pair.
    """
    if not needs_llm(p, schema, rows):
        return None
    undefined = undefined_concepts(rows, schema)
    if undefined:
        raise field_error(
            "body.params.schema.concepts",
            f"concept(s) {undefined} have no description and no text carries their label: the LLM "
            "needs a definition (description, value_descriptions, value_examples) to label them",
        )
    opts = p.llm_build or DomainLLMBuild()
    try:
        backend, name = rt.llm(opts.llm)
    except LookupError as e:
        raise field_error("body.params.llm_build.llm", str(e).strip("'\"")) from e
    if backend is None:
        raise field_error("body.params.llm_build.llm", NO_LLM)
    budget = rt.settings.llm.build_max_calls
    options = LLMBuildOptions(
        max_llm_calls=min(opts.max_llm_calls or budget, budget),
        edits_per_direction=opts.edits_per_direction,
        max_concurrency=opts.max_concurrency,
        shots_per_value=opts.shots_per_value,
        max_changed_sentences=opts.max_changed_sentences,
        temperature=opts.temperature,
        max_tokens=opts.max_tokens,
        seed=opts.seed,
    )
    try:  # the cheap checks first: no LLM call for a plan that cannot fit
        plan_build(rows, schema, options, budget=budget)
    except PlanError as e:
        raise field_error(e.where, e.message) from e
    rates = stored_rates(build_cache(rt), backend)
    # Previous builds' rates are the better estimate; the probe only fills a stage they lack.
    speed = None if rates is not None and rates.complete else _speed(rt, name or "default", backend)
    plan = plan_build(rows, schema, options, budget=budget, speed=speed, rates=rates)
    return {"llm": opts.llm, "llm_name": name, "options": options.to_dict(), "plan": plan}


def build_cache(rt: Runtime) -> GenerationCache:
    """The one on-disk cache of every LLM build's answers (and the rates they measured)."""
    return GenerationCache(Path(rt.settings.data_dir) / "generations" / "llm-build.sqlite")


def read_progress(rt: Runtime, job_id: str) -> dict[str, Any] | None:
    """A build job's stages as its job row holds them (the numbers GET /v1/jobs/{id} shows)."""
    job = rt.store.get_job(job_id) or {}
    return job.get("stages")


def run_llm_stages(
    rt: Runtime,
    job_id: str,
    schema: ConceptSchema,
    rows: list[dict[str, Any]],
    stored: dict[str, Any],
    stages: Stages | None = None,
) -> tuple[Any, dict[str, Any]]:
    """Labels, taggers and pairs by the LLM (in the job); the pool and build_domain's hooks.

    Every LLM answer goes through one cache file under the data dir, keyed by prompt hash: a
    restarted job (or a second build of the same texts) replays what was answered already.
    An LLM outage is retryable (the worker tries the item again later, from the cache).
    """
    from app.jobs.worker import RetryableError
    from explainers.domains import zero_label
    from explainers.errors import UpstreamUnavailable

    backend, name = rt.llm(stored.get("llm"))
    if backend is None:
        raise ValueError(NO_LLM)
    options = LLMBuildOptions(**stored["options"])
    try:
        result = zero_label.run(
            rows, schema, backend, options, stored["plan"], cache=build_cache(rt), llm_name=name, stages=stages,
        )  # fmt: skip
    except UpstreamUnavailable as e:
        raise RetryableError(f"LLM {name!r}: {e}") from e
    return result.pool, {"taggers_builder": result.taggers_builder, "finish": result.finish}


def default_domain_build(rt: Runtime) -> Any:
    """The LLM stages of a default domain built from raw texts (`CACE_DEFAULT_DOMAIN` = a folder
    with corpus.jsonl and a schema.json of concept definitions, no labels), for
    `ensure_corpus_domain`: the server's default LLM, the build budget, the same cache and
    rates as uploaded builds. Its stages show in `/readyz` as a CEBaB build's do."""
    from explainers.domains import DomainBuildError, zero_label

    def build(
        rows: list[dict[str, Any]], schema: ConceptSchema, stages: Stages
    ) -> tuple[Any, dict[str, Any]]:
        undefined = undefined_concepts(rows, schema)
        if undefined:
            raise DomainBuildError(
                "default_domain",
                f"concept(s) {undefined} have no description in schema.json and no row carries their label",
            )
        backend, name = rt.llm(None)
        if backend is None:
            raise DomainBuildError("default_domain", NO_LLM)
        budget = rt.settings.llm.build_max_calls
        options = LLMBuildOptions(max_llm_calls=budget)
        cache = build_cache(rt)
        rates = stored_rates(cache, backend)
        try:
            zero_label.plan_build(rows, schema, options, budget=budget, field="default_domain")
            speed = None if rates is not None and rates.complete else measure_speed(backend)
            plan = plan_build(
                rows, schema, options, budget=budget, speed=speed, rates=rates, field="default_domain"
            )
        except PlanError as e:
            raise DomainBuildError("default_domain", f"{e.message} (CACE_LLM_BUILD_MAX_CALLS)") from e
        stages.expect(zero_label.stage_plan(plan, len(rows)))
        result = zero_label.run(
            rows, schema, backend, options, plan, cache=cache, llm_name=name, stages=stages
        )
        return result.pool, {"taggers_builder": result.taggers_builder, "finish": result.finish}

    return build
