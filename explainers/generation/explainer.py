"""`GenerationExplainer`: ICaCE from LLM-written counterfactuals, verified and filtered.

One explanation asks the LLM for K edits of the text (only the treated concept changed),
rejects the ones that fail verification, and asks again, within a sample budget, until K
are kept or the budget is spent. The response says how many were kept of how many asked,
why each rejected one was dropped, and what it cost (calls, tokens, wall time), so a user
can judge how much evidence stands behind the estimate.
"""

from __future__ import annotations

import contextvars
import math
import threading
import time
from collections import Counter
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from explainers.concepts import ConceptSchema, Intervention
from explainers.generation.backends import Completion, LLMBackend, LLMError, LLMUnavailable
from explainers.generation.cache import GenerationCache, cache_key
from explainers.generation.prompts import PromptBuilder, clean_output
from explainers.generation.verify import Tagger, Verifier
from explainers.labels import tagged
from explainers.types import Cost, Counterfactual, CounterfactualExplainer


class GenerationExplainer(CounterfactualExplainer):
    """Counterfactuals by prompting an LLM; see the module docstring.

    sampling="calls" sends one request per sample (each with its own seed), in parallel up
    to `max_concurrency` requests in flight for this explainer; sampling="n" sends one
    request with n samples (the backend falls back to repeated calls if the server ignores
    n). `sample_budget` caps the samples per explanation (default `budget_factor` * K).
    """

    name = "generate"

    def __init__(
        self,
        backend: LLMBackend,
        schema: ConceptSchema,
        *,
        prompts: PromptBuilder | None = None,
        taggers: Tagger | None = None,
        verifier: Verifier | None = None,
        cache: GenerationCache | None = None,
        temperature: float = 0.8,
        max_tokens: int = 160,
        budget_factor: float = 3.0,
        sample_budget: int | None = None,
        max_rounds: int = 3,
        oversample: float = 1.0,
        sampling: str = "calls",
        max_concurrency: int = 2,
        seed: int = 0,
        check_confounders: bool = False,
        aggregation: str = "mean",
    ) -> None:
        super().__init__(aggregation=aggregation)
        if sampling not in ("calls", "n"):
            raise ValueError("sampling must be 'calls' or 'n'")
        if max_concurrency < 1:
            raise ValueError("max_concurrency must be >= 1")
        self.backend = backend
        self.schema = schema
        self.prompts = prompts or PromptBuilder(schema)
        self.taggers = taggers
        self.verifier = verifier or Verifier(schema, taggers, check_confounders=check_confounders)
        self.cache = cache
        self.temperature = temperature
        self.max_tokens = max_tokens
        self.budget_factor = budget_factor
        self.sample_budget = sample_budget
        self.max_rounds = max_rounds
        self.oversample = oversample
        self.sampling = sampling
        self.max_concurrency = max_concurrency
        self.seed = seed
        self._pool = ThreadPoolExecutor(max_workers=max_concurrency, thread_name_prefix="llm")
        self._lock = threading.Lock()

    def _close(self) -> None:
        # Its request threads; the LLM backend is the caller's (the service shares one per LLM).
        self._pool.shutdown(wait=False, cancel_futures=True)

    # -- one LLM request, through the cache --------------------------------------------------
    def _request(self, messages: list[dict[str, str]], n: int, seed: int) -> tuple[Completion, bool]:
        key = cache_key(
            self.backend.kind,
            self.backend.model,
            messages,
            n=n,
            temperature=self.temperature,
            max_tokens=self.max_tokens,
            seed=seed,
        )
        if self.cache is not None:
            hit = self.cache.get(key)
            if hit is not None:
                return hit, True
        comp = self.backend.chat(
            messages, n=n, temperature=self.temperature, max_tokens=self.max_tokens, seed=seed
        )
        if self.cache is not None:
            self.cache.put(key, self.backend.model, comp)
        return comp, False

    def _source_labels(self, text: str, base_labels: Mapping[str, str] | None) -> dict[str, str] | None:
        """Given labels (of this schema's concepts; none given when empty), else the taggers'."""
        given = {k: v for k, v in base_labels.items() if k in self.schema} if base_labels else None
        return tagged([text], [given], self.taggers)[0]

    def counterfactuals(
        self,
        text: str,
        intervention: Intervention,
        top_k: int,
        *,
        base_labels: Mapping[str, str] | None = None,
    ) -> tuple[list[Counterfactual], dict[str, Any]]:
        started = time.perf_counter()
        self.schema.validate(intervention)
        labels = self._source_labels(text, base_labels)
        if (
            intervention.source is None
            and labels
            and labels.get(intervention.concept) in (self.schema[intervention.concept].values)
        ):
            if labels[intervention.concept] != intervention.target:
                intervention = intervention.with_source(labels[intervention.concept])
        messages = self.prompts.messages(text, intervention, labels)
        budget = (
            self.sample_budget if self.sample_budget is not None else math.ceil(self.budget_factor * top_k)
        )
        cost = Cost()
        cached = Cost()
        rejections: Counter[str] = Counter()
        errors: list[str] = []
        kept: list[Counterfactual] = []
        seen: set[str] = set()
        generated = asked = rounds = cache_hits = 0
        while len(kept) < top_k and rounds < self.max_rounds and asked < budget:
            need = min(math.ceil((top_k - len(kept)) * self.oversample), budget - asked)
            round_seed = self.seed + rounds * 100_003
            if self.sampling == "n":
                reqs = [(need, round_seed)]
            else:
                reqs = [(1, round_seed + j) for j in range(need)]
            # Each call runs in a copy of the caller's context: the request's outbound deadline holds there too.
            ctx = contextvars.copy_context()
            futures = [self._pool.submit(ctx.copy().run, self._request, messages, n, s) for n, s in reqs]
            asked += need
            rounds += 1
            for (n, _), fut in zip(reqs, futures, strict=True):
                try:
                    comp, hit = fut.result()
                except LLMError as e:
                    rejections["failed"] += n
                    errors.append(f"{type(e).__name__}: {e}")
                    continue
                into = cached if hit else cost
                cache_hits += int(hit)
                into.llm_calls += comp.calls
                into.prompt_tokens += comp.prompt_tokens
                into.completion_tokens += comp.completion_tokens
                into.wall_time_s += comp.wall_time_s
                texts = [clean_output(t) for t in comp.texts]
                generated += len(texts)
                report = self.verifier.verify(
                    text,
                    texts,
                    intervention,
                    finish_reasons=comp.finish_reasons,
                    source_labels=labels,
                    seen=seen,
                )
                rejections.update(report.rejections)
                for v in report.kept:
                    if len(kept) >= top_k:
                        rejections["surplus"] += 1
                        continue
                    kept.append(
                        Counterfactual(
                            text=v.text,
                            source_id=f"llm:{self.backend.model}:r{rounds}:{len(kept)}",
                            verification={"tags": v.tags, "round": rounds},
                        )
                    )
        if generated == 0 and errors:
            # Nothing came back at all: that is an outage, not "no effect".
            raise LLMUnavailable(f"no counterfactual could be generated: {errors[-1]}")
        cost.wall_time_s = time.perf_counter() - started
        details: dict[str, Any] = {
            "requested": top_k,
            "kept": len(kept),
            "samples_asked": asked,
            "generated": generated,
            "rounds": rounds,
            "rejections": dict(rejections),
            "llm": {"kind": self.backend.kind, "model": self.backend.model},
            "intervention_source": intervention.source,
            "cache_hits": cache_hits,
            "cached_cost": {
                "llm_calls": cached.llm_calls,
                "prompt_tokens": cached.prompt_tokens,
                "completion_tokens": cached.completion_tokens,
                "llm_time_s": round(cached.wall_time_s, 3),
            },
            "verified_by_tagger": self.taggers is not None,
            "cost": cost,
        }
        if errors:
            details["errors"] = errors[:5]
        return kept, details
