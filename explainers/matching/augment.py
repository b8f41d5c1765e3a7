"""Counterfactual groups for a corpus without human edits: add LLM-generated ones.

A concept space learns from groups of texts that share an origin (T: the treated concept
changed, C: a confounder changed). A corpus like CEBaB's `train_exclusive` holds one text
per origin, so it yields no groups; the paper's realistic setting generates them. This
module plans which edits to ask for (a few concepts per source, each to another value),
asks any counterfactual generator for them (normally `GenerationExplainer`, whose
verification and SQLite cache make a long run resumable), and returns a new `Pool`: the
original texts plus every kept edit, labelled with the intended values, sharing its
source's origin, with a (source, edit, concept) pair for each.

Labels of an edit are the *intended* ones (the source's labels with the treated concept
set to the target); when the generator verifies with concept taggers, edits that did not
reach the target are already dropped.
"""

from __future__ import annotations

import random
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from explainers.concepts import Intervention
from explainers.data.pool import Pool
from explainers.types import Cost, CounterfactualExplainer


@dataclass(frozen=True)
class PlannedEdit:
    source: int  # pool index of the text to edit
    intervention: Intervention


@dataclass
class AugmentReport:
    """What an augmentation run asked for, kept, rejected and cost; stored in the space meta."""

    corpus: int = 0  # texts before augmenting
    sources: int = 0
    planned: int = 0
    kept: int = 0
    duplicates_of_pool: int = 0
    rejections: Counter[str] = field(default_factory=Counter)
    kept_by_concept: Counter[str] = field(default_factory=Counter)
    cost: Cost = field(default_factory=Cost)  # LLM calls and tokens spent by this run
    cached: Cost = field(default_factory=Cost)  # what the generations replayed from the cache once cost
    cache_hits: int = 0
    errors: int = 0
    wall_s: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return {
            "corpus_texts": self.corpus,
            "sources": self.sources,
            "planned_edits": self.planned,
            "kept_edits": self.kept,
            "keep_rate": round(self.kept / self.planned, 4) if self.planned else None,
            "duplicates_of_pool": self.duplicates_of_pool,
            "rejections": dict(self.rejections),
            "kept_by_concept": dict(self.kept_by_concept),
            "llm_calls": self.cost.llm_calls,
            "prompt_tokens": self.cost.prompt_tokens,
            "completion_tokens": self.cost.completion_tokens,
            "cache_hits": self.cache_hits,
            "cached_llm_calls": self.cached.llm_calls,
            "cached_prompt_tokens": self.cached.prompt_tokens,
            "cached_completion_tokens": self.cached.completion_tokens,
            "cached_llm_time_s": round(self.cached.wall_time_s, 1),
            "errors": self.errors,
            "wall_s": round(self.wall_s, 1),
        }


def plan_edits(
    pool: Pool,
    *,
    n_sources: int | None = None,
    concepts_per_source: int = 2,
    seed: int = 0,
) -> list[PlannedEdit]:
    """Pick sources and, per source, `concepts_per_source` distinct concepts to change.

    Two concepts per source give every trained concept both a T group (the edit on it) and a
    C group (the edit on another concept) for the same origin. Targets are drawn among the
    concept's other values; sources whose label is unknown to the schema are still edited
    (the prompt then names no current value). Sorted by (concept, target) so consecutive
    prompts share their longest prefix, which llama.cpp reuses from its KV cache.
    """
    rng = random.Random(seed)
    names = list(pool.schema.names)
    order = list(range(len(pool)))
    rng.shuffle(order)
    if n_sources is not None:
        order = order[:n_sources]
    plan: list[PlannedEdit] = []
    for i in order:
        for concept in rng.sample(names, min(concepts_per_source, len(names))):
            values = [v for v in pool.schema[concept].values if v != pool.labels[i].get(concept)]
            target = rng.choice(values)
            source = pool.labels[i].get(concept)
            source = source if source in pool.schema[concept].values else None
            plan.append(PlannedEdit(i, Intervention(concept, target, source)))
    plan.sort(key=lambda e: (e.intervention.concept, e.intervention.target, e.source))
    return plan


def augment_pool(
    pool: Pool,
    generator: CounterfactualExplainer,
    plan: list[PlannedEdit],
    *,
    per_edit: int = 1,
    log: Callable[[str], None] | None = None,
    log_every: int = 25,
) -> tuple[Pool, AugmentReport]:
    """`pool` plus the kept generations of `plan`, with their pairs; see the module docstring.

    A failed generation (LLM error) counts in the report and the run goes on: one bad
    request must not lose hours of generated work. An edit identical to a text already in the
    pool is not added twice; the pair points at that text only when it has the same origin
    and exactly the intended labels.
    """
    if pool.origins is None:
        raise ValueError("augmenting needs a pool with origins")
    started = time.perf_counter()
    texts, labels = list(pool.texts), [dict(lab) for lab in pool.labels]
    ids = list(pool.ids) if pool.ids is not None else [f"pool:{i}" for i in range(len(pool))]
    origins = list(pool.origins)
    pairs = list(pool.pairs)
    row_of = {t: i for i, t in enumerate(texts)}
    report = AugmentReport(corpus=len(pool), sources=len({e.source for e in plan}), planned=len(plan))
    for n, edit in enumerate(plan, 1):
        src = edit.source
        try:
            kept, details = generator.counterfactuals(
                texts[src], edit.intervention, per_edit, base_labels=pool.labels[src]
            )
        except Exception as e:  # noqa: BLE001 - an outage mid-run is reported, not fatal
            report.errors += 1
            report.rejections[f"error:{type(e).__name__}"] += per_edit
            continue
        report.rejections.update({k: v for k, v in details.get("rejections", {}).items()})
        if details.get("cost") is not None:
            report.cost.add(details["cost"])
        report.cache_hits += int(details.get("cache_hits", 0))
        cached = details.get("cached_cost") or {}
        report.cached.add(Cost(llm_calls=cached.get("llm_calls", 0), prompt_tokens=cached.get("prompt_tokens", 0),
                               completion_tokens=cached.get("completion_tokens", 0),
                               wall_time_s=cached.get("llm_time_s", 0.0)))  # fmt: skip
        for cf in kept:
            new_labels = dict(pool.labels[src], **{edit.intervention.concept: edit.intervention.target})
            row = row_of.get(cf.text)
            if row is None:
                row = row_of[cf.text] = len(texts)
                texts.append(cf.text)
                labels.append(new_labels)
                ids.append(f"{ids[src]}~{edit.intervention.concept}={edit.intervention.target}")
                origins.append(origins[src])
            else:
                report.duplicates_of_pool += 1
                if origins[row] != origins[src] or labels[row] != new_labels:
                    # Another origin's text, or an earlier edit of src that stands for other labels:
                    # either way not this intervention's counterfactual.
                    continue
            pairs.append((src, row, edit.intervention.concept))
            report.kept += 1
            report.kept_by_concept[edit.intervention.concept] += 1
        if log and n % log_every == 0:
            log(f"augment: {n}/{len(plan)} edits, {report.kept} kept, {time.perf_counter() - started:.0f} s")
    report.wall_s = time.perf_counter() - started
    out = pool.with_edits(texts, labels, ids, origins, pairs)
    return out, report


def generation_augmenter(
    backend: Any,
    *,
    n_sources: int | None = None,
    concepts_per_source: int = 2,
    cache: str | Path | None = None,
    taggers: Any | None = None,
    temperature: float = 0.7,
    max_tokens: int = 160,
    seed: int = 0,
    log: Callable[[str], None] | None = None,
) -> Callable[[Pool], tuple[Pool, dict[str, Any]]]:
    """An `augment` hook (for `build_cebab_space` or the service's space jobs) over an LLM backend.

    Zero-shot prompts, because a corpus without human edits has no worked examples to show
    (the realistic setting). One sample per planned edit, verified, and checked with
    `taggers` (a `TaggerSet`) when given; the SQLite `cache` lets an interrupted run pick up
    where it stopped.
    """

    def augment(pool: Pool) -> tuple[Pool, dict[str, Any]]:
        from explainers.generation.cache import GenerationCache
        from explainers.generation.explainer import GenerationExplainer

        generator = GenerationExplainer(
            backend, pool.schema, taggers=taggers, cache=GenerationCache(cache) if cache else None,
            temperature=temperature, max_tokens=max_tokens, sample_budget=1, max_rounds=1, max_concurrency=1,
            seed=seed,
        )  # fmt: skip
        plan = plan_edits(pool, n_sources=n_sources, concepts_per_source=concepts_per_source, seed=seed)
        try:
            out, report = augment_pool(pool, generator, plan, log=log)
        finally:
            generator.close()
        return out, {
            **report.to_dict(),
            "llm": {"kind": backend.kind, "model": backend.model},
            "prompting": "zero-shot",
            "temperature": temperature,
            "max_tokens": max_tokens,
            "verified_by_taggers": taggers is not None,
            "concepts_per_source": concepts_per_source,
            "seed": seed,
        }

    return augment


def llm_augmenter(
    base_url: str,
    model: str,
    *,
    taggers: str | Path | None = None,
    **options: Any,
) -> Callable[[Pool], tuple[Pool, dict[str, Any]]]:
    """`generation_augmenter` for an OpenAI-compatible server at `base_url`, taggers from a folder."""
    from explainers.generation.backends import BackendSpec, build_backend

    tagger_set = None
    if taggers is not None:
        from explainers.taggers import TaggerSet

        tagger_set = TaggerSet.load(Path(taggers))
    backend = build_backend(BackendSpec(kind="openai", base_url=base_url, model=model, timeout_s=300.0))
    return generation_augmenter(backend, taggers=tagger_set, **options)
