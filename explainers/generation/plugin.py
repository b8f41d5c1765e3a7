"""Registers the `generate` method with `explainers.registry` (and a benchmark resource hook).

The factory needs `resources.llm` (an `LLMBackend`); `resources.taggers`, when present,
turns on the tagger checks. Options it declares (all optional; the registry refuses others):
temperature, max_tokens, budget_factor, sample_budget, max_rounds, sampling,
max_concurrency, check_confounders, aggregation, cache_path (or resources.extra
["generation_cache"]), fewshot (a list of `FewShot`, or resources.extra["fewshot"]).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from explainers.generation.cache import GenerationCache
from explainers.generation.explainer import GenerationExplainer
from explainers.generation.prompts import PromptBuilder
from explainers.registry import Resources, register

_OPTIONS = (
    "temperature",
    "max_tokens",
    "budget_factor",
    "sample_budget",
    "max_rounds",
    "oversample",
    "sampling",
    "max_concurrency",
    "check_confounders",
    "aggregation",
)


@register(
    "generate",
    "LLM-generated counterfactuals, verified and filtered (Gat et al.)",
    options=(*_OPTIONS, "cache_path", "fewshot"),
)
def make_generate(resources: Resources, **options: Any) -> GenerationExplainer:
    """LLM-generated counterfactuals, verified and filtered (Gat et al.)."""
    llm = resources.need("llm", "generate")
    extra = resources.extra or {}
    cache_path = options.get("cache_path") or extra.get("generation_cache")
    fewshot = options.get("fewshot") or extra.get("fewshot") or ()
    kwargs = {k: options[k] for k in _OPTIONS if options.get(k) is not None}
    return GenerationExplainer(
        llm,
        resources.schema,
        prompts=PromptBuilder(resources.schema, fewshot),
        taggers=resources.taggers,
        cache=GenerationCache(cache_path) if cache_path else None,
        seed=resources.seed,
        **kwargs,
    )


def bench_resource_hook(resources: Resources, options: Mapping[str, Any]) -> None:
    """`--resource llm_base_url=URL --resource llm_model=NAME [llm_api_key_env=VAR]` gives the bench an LLM."""
    if resources.llm is not None or not options.get("llm_base_url"):
        return
    from explainers.generation.backends import BackendSpec, build_backend

    resources.llm = build_backend(
        BackendSpec(
            kind="openai",
            base_url=str(options["llm_base_url"]),
            model=str(options.get("llm_model") or "default"),
            api_key_env=options.get("llm_api_key_env"),
            timeout_s=float(options.get("llm_timeout_s") or 300.0),
        )
    )
