"""Counterfactual pairs from an LLM, for a domain whose corpus has no human edits.

For every concept and direction (source value -> target value) the budget allows, texts with
the source value are edited by the domain's LLM through the generation machinery
(`explainers.generation`: backends, cache, prompts, verification), with three additions:

* retrieval-augmented prompts: the worked examples of each request are the kept edits of the
  same concept and direction whose source texts are nearest to this text (word overlap), so
  the LLM sees how this domain's edits look once a few exist. Edits run in batches of the
  LLM's concurrency; a batch sees what the earlier batches kept, which keeps the prompts (and
  so the on-disk cache keys) the same when an interrupted build runs again;
* one-sentence edits: the instruction asks to rewrite the one sentence about the concept (or
  add one); an edit that changes more than `max_changed_sentences` sentences is dropped as
  `too_many_sentences` (one-sentence edits are what `splice` transplants);
* checks beyond the text checks: the taggers (trained on the LLM's labels, usable concepts
  only) must read the target and the other concepts unchanged, and the LLM itself labels the
  edit's other concepts, which must keep the source's values (`llm_confounder_changed`); an edit
  nearly identical to one already kept for the concept is a `near_duplicate`.

Every rejection is counted by reason. A kept edit joins the pool with its source's origin and
the intended labels (the source's, with the concept set to the target), and a pair.
"""

from __future__ import annotations

import difflib
import random
import re
import time
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from explainers.concepts import ConceptSchema, Intervention
from explainers.data.pool import Pool
from explainers.domains.llm_labels import LLMLabeller
from explainers.generation.backends import LLMBackend
from explainers.generation.cache import GenerationCache
from explainers.generation.prompts import FewShot, PromptBuilder
from explainers.generation.verify import Tagger, Verifier
from explainers.matching.augment import PlannedEdit
from explainers.types import Cost

_SENTENCE = re.compile(r"(?<=[.!?])\s+")
_WORD = re.compile(r"\w+")


def sentences(text: str) -> list[str]:
    return [s.strip() for s in _SENTENCE.split(text.strip()) if s.strip()]


def changed_sentences(source: str, edit: str) -> int:
    """How many sentences an edit replaced, removed or added (0 for the same sentences)."""
    a, b = sentences(source), sentences(edit)
    ops = difflib.SequenceMatcher(a=a, b=b, autojunk=False).get_opcodes()
    return sum(max(i2 - i1, j2 - j1) for tag, i1, i2, j1, j2 in ops if tag != "equal")


def words(text: str) -> frozenset[str]:
    return frozenset(w.lower() for w in _WORD.findall(text))


def jaccard(a: frozenset[str], b: frozenset[str]) -> float:
    return len(a & b) / len(a | b) if a or b else 1.0


class RetrievalPrompts(PromptBuilder):
    """Edit prompts whose examples are the nearest kept edits of the same concept and direction."""

    def __init__(self, schema: ConceptSchema, *, max_examples: int = 2) -> None:
        super().__init__(schema, max_examples=max_examples)
        # (concept, source value, target value) -> kept edits, in the order they were kept.
        self.kept: dict[tuple[str, str | None, str], list[FewShot]] = {}
        self._visible: dict[tuple[str, str | None, str], int] = {}

    def freeze(self) -> None:
        """What the next batch may see: everything kept so far (never edits of its own batch)."""
        self._visible = {k: len(v) for k, v in self.kept.items()}

    def add(self, example: FewShot) -> None:
        iv = example.intervention
        self.kept.setdefault((iv.concept, iv.source, iv.target), []).append(example)

    def nearest(self, text: str, intervention: Intervention) -> list[FewShot]:
        key = (intervention.concept, intervention.source, intervention.target)
        pool = self.kept.get(key, [])[: self._visible.get(key, 0)]
        mine = words(text)
        ranked = sorted(range(len(pool)), key=lambda i: (-jaccard(mine, words(pool[i].source)), i))
        return [pool[i] for i in ranked[: self.max_examples]]

    def instruction(
        self, text: str, intervention: Intervention, labels: Mapping[str, str] | None = None
    ) -> str:
        concept = self.schema[intervention.concept]
        base = super().instruction(text, intervention, labels)
        head, sep, tail = base.partition("\n\n")
        return (
            f"{head} Rewrite only the one sentence about the {concept.name}; if no sentence is about it, "
            f"add one short sentence. Copy every other sentence word for word.{sep}{tail}"
        )

    def messages(
        self, text: str, intervention: Intervention, labels: Mapping[str, str] | None = None
    ) -> list[dict[str, str]]:
        msgs = [{"role": "system", "content": self.system()}]
        for ex in self.nearest(text, intervention):
            msgs.append({"role": "user", "content": self.instruction(ex.source, ex.intervention, ex.labels)})
            msgs.append({"role": "assistant", "content": ex.edited})
        msgs.append({"role": "user", "content": self.instruction(text, intervention, labels)})
        return msgs


def directions(schema: ConceptSchema) -> list[tuple[str, str, str]]:
    """Every (concept, source value, target value) with source != target."""
    return [(c.name, s, t) for c in schema.concepts for s in c.values for t in c.values if s != t]


def plan_pair_edits(
    labels: Sequence[Mapping[str, str]], schema: ConceptSchema, per_direction: int, *, seed: int = 0
) -> list[PlannedEdit]:
    """Up to `per_direction` texts per (concept, direction) whose label is the source value, each
    text edited at most once per concept; grouped by direction so prompts share their prefix."""
    rng = random.Random(seed)
    plan: list[PlannedEdit] = []
    for concept, src, tgt in directions(schema):
        have = [i for i, lab in enumerate(labels) if lab.get(concept) == src]
        taken = {e.source for e in plan if e.intervention.concept == concept}
        free = [i for i in have if i not in taken]
        rng.shuffle(free)
        plan += [PlannedEdit(i, Intervention(concept, tgt, src)) for i in sorted(free[:per_direction])]
    return plan


@dataclass
class PairsReport:
    planned: int = 0
    kept: int = 0
    one_sentence: int = 0
    rejections: Counter[str] = field(default_factory=Counter)
    kept_by_direction: Counter[str] = field(default_factory=Counter)
    cost: Cost = field(default_factory=Cost)
    cached: Cost = field(default_factory=Cost)
    cache_hits: int = 0
    errors: int = 0
    wall_s: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return {
            "planned_edits": self.planned,
            "kept_edits": self.kept,
            "keep_rate": round(self.kept / self.planned, 4) if self.planned else None,
            "one_sentence_edits": self.one_sentence,
            "rejections": dict(self.rejections),
            "kept_by_direction": dict(sorted(self.kept_by_direction.items())),
            "llm_calls": self.cost.llm_calls,
            "prompt_tokens": self.cost.prompt_tokens,
            "completion_tokens": self.cost.completion_tokens,
            "cache_hits": self.cache_hits,
            "cached_llm_calls": self.cached.llm_calls,
            "errors": self.errors,
            "wall_s": round(self.wall_s, 2),
        }


def generate_pairs(
    pool: Pool,
    plan: Sequence[PlannedEdit],
    backend: LLMBackend,
    *,
    labeller: LLMLabeller,
    taggers: Tagger | None = None,
    cache: GenerationCache | None = None,
    max_concurrency: int = 4,
    max_changed_sentences: int = 1,
    near_duplicate: float = 0.9,
    temperature: float = 0.7,
    max_tokens: int = 200,
    seed: int = 0,
    progress: Callable[[int, int], None] | None = None,
) -> tuple[Pool, PairsReport]:
    """`pool` plus the kept LLM edits of `plan` and their pairs; see the module docstring."""
    from explainers.generation.explainer import GenerationExplainer

    if pool.origins is None:
        raise ValueError("LLM pairs need a pool with origins")
    started = time.perf_counter()
    schema = pool.schema
    prompts = RetrievalPrompts(schema)
    verifier = Verifier(schema, taggers, check_confounders=True)
    generator = GenerationExplainer(
        backend, schema, prompts=prompts, taggers=taggers, verifier=verifier, cache=cache,
        temperature=temperature, max_tokens=max_tokens, sample_budget=1, max_rounds=1,
        max_concurrency=max_concurrency, seed=seed,
    )  # fmt: skip
    texts, labels = list(pool.texts), [dict(lab) for lab in pool.labels]
    ids = list(pool.ids) if pool.ids is not None else [str(i) for i in range(len(pool))]
    origins, pairs = list(pool.origins), list(pool.pairs)
    row_of = {t: i for i, t in enumerate(texts)}
    kept_words: dict[str, list[frozenset[str]]] = {}
    report = PairsReport(planned=len(plan))

    def one(edit: PlannedEdit) -> tuple[PlannedEdit, list[str], dict[str, Any] | None]:
        try:
            cfs, details = generator.counterfactuals(
                texts[edit.source], edit.intervention, 1, base_labels=labels[edit.source]
            )
        except Exception as e:  # noqa: BLE001 - one failed request must not lose the build's work
            return edit, [], {"error": f"{type(e).__name__}: {e}"}
        return edit, [c.text for c in cfs], details

    try:
        with ThreadPoolExecutor(max_workers=max_concurrency, thread_name_prefix="llm-pairs") as ex:
            for start in range(0, len(plan), max_concurrency):
                prompts.freeze()
                batch = plan[start : start + max_concurrency]
                for edit, cands, details in ex.map(one, batch):
                    if details is None or "error" in details:
                        report.errors += 1
                        report.rejections["error"] += 1
                        continue
                    report.rejections.update(details.get("rejections", {}))
                    if details.get("cost") is not None:
                        report.cost.add(details["cost"])
                    report.cache_hits += int(details.get("cache_hits", 0))
                    report.cached.llm_calls += int(details.get("cached_cost", {}).get("llm_calls", 0))
                    for cand in cands:
                        reason = _extra_reason(
                            texts[edit.source], cand, edit, labels[edit.source], labeller, report,
                            kept_words.get(edit.intervention.concept, []), max_changed_sentences, near_duplicate,
                        )  # fmt: skip
                        if reason:
                            report.rejections[reason] += 1
                            continue
                        iv = edit.intervention
                        new_labels = dict(labels[edit.source], **{iv.concept: iv.target})
                        if cand in row_of:
                            report.rejections["duplicate_of_corpus"] += 1
                            continue
                        row = row_of[cand] = len(texts)
                        texts.append(cand)
                        labels.append(new_labels)
                        ids.append(f"{ids[edit.source]}~{iv.concept}={iv.target}")
                        origins.append(origins[edit.source])
                        pairs.append((edit.source, row, iv.concept))
                        kept_words.setdefault(iv.concept, []).append(words(cand))
                        prompts.add(FewShot(texts[edit.source], cand, iv, labels[edit.source]))
                        report.kept += 1
                        report.one_sentence += int(changed_sentences(texts[edit.source], cand) <= 1)
                        report.kept_by_direction[f"{iv.concept}:{iv.source}->{iv.target}"] += 1
                if progress is not None:
                    progress(min(start + max_concurrency, len(plan)), len(plan))
    finally:
        generator.close()
    report.wall_s = time.perf_counter() - started
    out = pool.with_edits(texts, labels, ids, origins, pairs)
    return out, report


def _extra_reason(
    source: str,
    cand: str,
    edit: PlannedEdit,
    source_labels: Mapping[str, str],
    labeller: LLMLabeller,
    report: PairsReport,
    kept: Sequence[frozenset[str]],
    max_changed: int,
    near: float,
) -> str | None:
    """The checks the generation verifier does not make (see the module docstring), cheapest first."""
    if changed_sentences(source, cand) > max_changed:
        return "too_many_sentences"
    mine = words(cand)
    if any(jaccard(mine, other) >= near for other in kept):
        return "near_duplicate"
    others = [c for c in labeller.schema.confounders(edit.intervention.concept) if c in source_labels]
    if not others:
        return None
    run = labeller.label([cand], others)
    report.cost.add(run.cost)
    report.cached.add(run.cached)
    report.cache_hits += run.cache_hits
    read = run.labels[0]
    if any(read[c].value is not None and read[c].value != source_labels[c] for c in others):
        return "llm_confounder_changed"
    return None
