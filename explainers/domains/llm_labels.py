"""Concept labels from an LLM: each text, each concept, a value and its confidence.

For a corpus that carries no labels (or labels on a few rows), the domain's LLM reads each
text and picks the concept's value from the schema's definitions. The prompt is built so that
servers can cache its prefix: the system message (the domain and every concept's definition)
is the same for every request, then the concept's options (numbered, each with its
description and example sentences) and its worked examples (human-labelled rows, when some
exist), and only then the text. Requests are sorted by concept so consecutive ones share that
whole prefix.

Scoring: one request per (text, concept) with max_tokens 1 and top_logprobs, read by
`explainers.llm_answers.first_token_distribution` as the `openai-chat` classifier does; where
the endpoint has no logprobs (or none of the options is among the top tokens) `samples`
answers are sampled and counted. A label's confidence is its probability. Every answer is
cached on disk by a hash of the prompt (`GenerationCache.put_value`), so an interrupted build
asks the LLM only for what it has not answered yet, and a second build of the same texts
asks nothing.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from explainers.concepts import Concept, ConceptSchema
from explainers.errors import UpstreamMalformed
from explainers.generation.backends import LLMBackend, LLMBadResponse
from explainers.generation.cache import GenerationCache, cache_key
from explainers.llm_answers import answer_option, first_token_distribution, norm
from explainers.types import Cost

MAX_EXAMPLE_CHARS = 300
Progress = Callable[[int, int], None] | None


@dataclass(frozen=True)
class LabelExample:
    """A human-labelled text shown as a worked example for one concept."""

    text: str
    value: str


@dataclass
class Label:
    value: str | None  # None: the LLM's answer named no option, even when sampled
    confidence: float
    distribution: dict[str, float]
    how: str  # "logprobs" | "sampling" | "failed"


@dataclass
class LabelRun:
    """Labels per text (concept -> Label) and what they cost."""

    labels: list[dict[str, Label]]
    cost: Cost = field(default_factory=Cost)
    cached: Cost = field(default_factory=Cost)
    cache_hits: int = 0
    by_method: Counter[str] = field(default_factory=Counter)
    wall_s: float = 0.0

    def values(self) -> list[dict[str, str | None]]:
        return [{c: lab.value for c, lab in row.items()} for row in self.labels]

    def report(self) -> dict[str, Any]:
        return {
            "llm_calls": self.cost.llm_calls,
            "prompt_tokens": self.cost.prompt_tokens,
            "completion_tokens": self.cost.completion_tokens,
            "cache_hits": self.cache_hits,
            "cached_llm_calls": self.cached.llm_calls,
            "scored_by": dict(self.by_method),
            "wall_s": round(self.wall_s, 2),
        }


class LabelPrompts:
    """Chat messages asking for one concept's value of one text (shared prefix first)."""

    def __init__(
        self,
        schema: ConceptSchema,
        examples: Mapping[str, Sequence[LabelExample]] | None = None,
        *,
        max_value_examples: int = 3,
    ) -> None:
        self.schema = schema
        self.examples = {c: list(v) for c, v in (examples or {}).items()}
        self.max_value_examples = max_value_examples

    def system(self) -> str:
        lines = [
            f"You read {self.schema.domain}s and say, for one aspect at a time, which option describes "
            "the text. The aspects are:"
        ]
        for c in self.schema.concepts:
            lines.append(f"- {c.name}: {c.description or ', '.join(c.values)}")
        lines.append("Answer with the number of the option only.")
        return "\n".join(lines)

    def options(self, concept: Concept) -> str:
        lines = [f"Aspect: {concept.name}" + (f" ({concept.description})" if concept.description else "")]
        lines.append("Options:")
        for i, v in enumerate(concept.values, 1):
            desc = concept.value_descriptions.get(v, "")
            lines.append(f"{i}. {v}" + (f": {desc}" if desc else ""))
            for ex in list(concept.value_examples.get(v, ()))[: self.max_value_examples]:
                lines.append(f'   e.g. "{ex}"')
        return "\n".join(lines)

    def messages(self, concept_name: str, text: str) -> list[dict[str, str]]:
        concept = self.schema[concept_name]
        number = {v: str(i) for i, v in enumerate(concept.values, 1)}
        parts = [self.options(concept)]
        for ex in self.examples.get(concept_name, []):
            parts.append(f"Text: {ex.text[:MAX_EXAMPLE_CHARS]}\nAnswer: {number[ex.value]}")
        parts.append(f"Text: {text}\nAnswer:")
        return [{"role": "system", "content": self.system()}, {"role": "user", "content": "\n\n".join(parts)}]

    @staticmethod
    def names(concept: Concept) -> dict[str, int]:
        """Answer tokens -> option index: the option numbers, and the value names where they do not clash."""
        names = {str(i): i - 1 for i in range(1, len(concept.values) + 1)}
        for i, v in enumerate(concept.values):
            names.setdefault(norm(v), i)
        return names


def examples_from_rows(
    texts: Sequence[str],
    labels: Sequence[Mapping[str, str]],
    schema: ConceptSchema,
    *,
    per_value: int = 1,
    seed: int = 0,
) -> tuple[dict[str, list[LabelExample]], set[int]]:
    """Worked examples per concept from human-labelled rows (short ones first, one value at a time),
    and the row indices used, which the accuracy check then leaves out."""
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(texts)).tolist()
    order.sort(key=lambda i: len(texts[i]))
    out: dict[str, list[LabelExample]] = {}
    used: set[int] = set()
    for c in schema.concepts:
        for v in c.values:
            picked = [i for i in order if labels[i].get(c.name) == v and len(texts[i]) <= MAX_EXAMPLE_CHARS]
            for i in picked[:per_value]:
                out.setdefault(c.name, []).append(LabelExample(texts[i], v))
                used.add(i)
    return out, used


class LLMLabeller:
    """Labels texts for the schema's concepts with an LLM backend; see the module docstring."""

    def __init__(
        self,
        backend: LLMBackend,
        schema: ConceptSchema,
        *,
        prompts: LabelPrompts | None = None,
        cache: GenerationCache | None = None,
        max_concurrency: int = 4,
        top_logprobs: int = 20,
        samples: int = 5,
        temperature: float = 1.0,
        seed: int = 0,
    ) -> None:
        if max_concurrency < 1:
            raise ValueError("max_concurrency must be >= 1")
        self.backend = backend
        self.schema = schema
        self.prompts = prompts or LabelPrompts(schema)
        self.cache = cache
        self.max_concurrency = max_concurrency
        self.top_logprobs = top_logprobs
        self.samples = samples
        self.temperature = temperature
        self.seed = seed
        # None: not known yet; False: the endpoint sent no logprobs once, so sample from then on.
        self.logprobs: bool | None = None if hasattr(backend, "answer_logprobs") else False
        if cache is not None and (cache.get_value(self._endpoint_key()) or {}).get("no_logprobs"):
            self.logprobs = False  # learnt by an earlier run: do not ask this endpoint again
        self._lock = threading.Lock()

    def _endpoint_key(self) -> str:
        return (
            f"label:endpoint:{self.backend.kind}:{self.backend.model}:{getattr(self.backend, 'base_url', '')}"
        )

    def label(
        self, texts: Sequence[str], concepts: Sequence[str] | None = None, progress: Progress = None
    ) -> LabelRun:
        """A label per text and concept (all concepts unless `concepts`), concurrently."""
        names = list(concepts) if concepts is not None else self.schema.names
        started = time.perf_counter()
        run = LabelRun(labels=[{} for _ in texts])
        # Concept-major order: consecutive requests share the system message and the concept block.
        tasks = [(c, i) for c in names for i in range(len(texts))]
        done = 0

        def one(task: tuple[str, int]) -> tuple[str, int, Label, Cost, bool]:
            c, i = task
            return (c, i, *self._score(c, texts[i]))

        with ThreadPoolExecutor(max_workers=self.max_concurrency, thread_name_prefix="llm-label") as ex:
            try:
                for c, i, lab, cost, hit in ex.map(one, tasks):
                    run.labels[i][c] = lab
                    run.by_method[lab.how] += 1
                    (run.cached if hit else run.cost).add(cost)
                    run.cache_hits += int(hit)
                    done += 1
                    if progress is not None:
                        progress(done, len(tasks))  # may raise Cancelled (a cancelled job)
            except BaseException:
                # Do not wait for the queued requests: what was answered is cached for a re-run.
                ex.shutdown(wait=False, cancel_futures=True)
                raise
        run.wall_s = time.perf_counter() - started
        return run

    # -- one (text, concept) ------------------------------------------------------------------
    def _key(self, messages: list[dict[str, str]], how: str) -> str:
        n = 1 if how == "logprobs" else self.samples
        temperature = 0.0 if how == "logprobs" else self.temperature
        return "label:" + how + ":" + cache_key(
            self.backend.kind, self.backend.model, messages, n=n, temperature=temperature,
            max_tokens=1 if how == "logprobs" else 8, seed=self.seed,
        )  # fmt: skip

    def _score(self, concept_name: str, text: str) -> tuple[Label, Cost, bool]:
        concept = self.schema[concept_name]
        messages = self.prompts.messages(concept_name, text)
        names = LabelPrompts.names(concept)
        cost = Cost()
        hit = True
        if self.logprobs is not False:
            pairs, h = self._logprob_pairs(messages, cost)
            hit = hit and h
            if pairs is not None:
                try:
                    dist = first_token_distribution(pairs, names, concept.values, "LLM labeller")
                    return self._label(concept, dist, "logprobs"), cost, hit
                except UpstreamMalformed:
                    pass  # no option among the top tokens: ask in full answers instead
        answers, h = self._sampled(messages, cost)
        hit = hit and h
        counts = np.zeros(len(concept.values))
        for a in answers:
            j = answer_option(a, names)
            if j is not None:
                counts[j] += 1
        if not counts.any():
            return Label(None, 0.0, {}, "failed"), cost, hit
        return self._label(concept, counts / counts.sum(), "sampling"), cost, hit

    @staticmethod
    def _label(concept: Concept, dist: np.ndarray, how: str) -> Label:
        j = int(np.argmax(dist))
        return Label(
            concept.values[j],
            round(float(dist[j]), 4),
            {v: round(float(p), 4) for v, p in zip(concept.values, dist, strict=True)},
            how,
        )

    def _logprob_pairs(
        self, messages: list[dict[str, str]], cost: Cost
    ) -> tuple[list[tuple[str, float]] | None, bool]:
        key = self._key(messages, "logprobs")
        if self.cache is not None:
            got = self.cache.get_value(key)
            if got is not None:
                cost.add(_cost(got["usage"]))
                return [(str(t), float(lp)) for t, lp in got["pairs"]], True
        try:
            pairs, usage = self.backend.answer_logprobs(  # type: ignore[attr-defined]
                messages, top_logprobs=self.top_logprobs, seed=self.seed
            )
        except LLMBadResponse as e:
            if "logprobs" not in str(e):
                raise
            with self._lock:
                self.logprobs = False
            if self.cache is not None:
                self.cache.put_value(self._endpoint_key(), self.backend.model, {"no_logprobs": True})
            return None, False
        with self._lock:
            self.logprobs = True
        record = {"prompt_tokens": usage.prompt_tokens, "completion_tokens": usage.completion_tokens,
                  "calls": usage.calls, "wall_time_s": usage.wall_time_s}  # fmt: skip
        cost.add(_cost(record))
        if self.cache is not None:
            self.cache.put_value(key, self.backend.model, {"pairs": pairs, "usage": record})
        return pairs, False

    def _sampled(self, messages: list[dict[str, str]], cost: Cost) -> tuple[list[str], bool]:
        key = self._key(messages, "sampling")
        if self.cache is not None:
            got = self.cache.get_value(key)
            if got is not None:
                cost.add(_cost(got["usage"]))
                return list(got["answers"]), True
        comp = self.backend.chat(
            messages, n=self.samples, temperature=self.temperature, max_tokens=8, seed=self.seed
        )
        record = {"prompt_tokens": comp.prompt_tokens, "completion_tokens": comp.completion_tokens,
                  "calls": comp.calls, "wall_time_s": comp.wall_time_s}  # fmt: skip
        cost.add(_cost(record))
        if self.cache is not None:
            self.cache.put_value(key, self.backend.model, {"answers": comp.texts, "usage": record})
        return comp.texts, False


def _cost(usage: Mapping[str, Any]) -> Cost:
    return Cost(
        llm_calls=int(usage.get("calls", 1)),
        prompt_tokens=int(usage.get("prompt_tokens", 0)),
        completion_tokens=int(usage.get("completion_tokens", 0)),
        wall_time_s=float(usage.get("wall_time_s", 0.0)),
    )


def label_report(
    run: LabelRun,
    schema: ConceptSchema,
    human: Sequence[Mapping[str, str]],
    *,
    exclude: set[int] = frozenset(),  # type: ignore[assignment]
) -> dict[str, dict[str, Any]]:
    """Per concept: mean confidence, value counts, failures and, where rows carry human labels (not
    used as worked examples), the LLM's accuracy against them beside the human majority rate.

    `usable_labels` is False when the LLM does no better than always answering the most common
    human value (its labels would teach the taggers nothing); None when no human label checks it.
    """
    out: dict[str, dict[str, Any]] = {}
    for c in schema.concepts:
        labs = [row[c.name] for row in run.labels if c.name in row]
        conf = [lab.confidence for lab in labs if lab.value is not None]
        checked = [
            (run.labels[i][c.name].value, h[c.name])
            for i, h in enumerate(human)
            if i not in exclude and h.get(c.name) in c.values and c.name in run.labels[i]
        ]
        acc = majority = None
        if checked:
            acc = sum(a == b for a, b in checked) / len(checked)
            majority = Counter(b for _, b in checked).most_common(1)[0][1] / len(checked)
        out[c.name] = {
            "mean_confidence": round(float(np.mean(conf)), 4) if conf else None,
            "values": dict(Counter(lab.value or "(failed)" for lab in labs)),
            "failed": sum(lab.value is None for lab in labs),
            "human_checked": len(checked),
            "accuracy_vs_human": None if acc is None else round(acc, 4),
            "human_majority_rate": None if majority is None else round(majority, 4),
            "usable_labels": None if acc is None or majority is None else bool(acc > majority),
        }
    return out
