"""A domain from raw texts and concept definitions: an LLM instead of hand labels and human edits.

The stages (each LLM answer cached on disk by prompt hash, so a re-run resumes):

1. `plan_build`: what the build will ask of the LLM (calls, tokens, estimated time at the LLM's
   measured speed) before anything is spent; a plan over the budget, or one that leaves no
   edit for any concept direction, is refused (`PlanError` naming the field);
2. labels: every text, every concept, by `llm_labels.LLMLabeller` (rows that carry a human
   label keep it; a few of them are the prompts' worked examples, the rest check the LLM);
3. taggers trained on those labels (so requests never wait on the LLM), used to verify edits;
4. pairs: `llm_pairs.generate_pairs`, every concept and direction the budget allows;
5. `build.build_domain` trains the space and writes the domain, whose `meta.json` records the
   provenance (which labels and pairs are human, which LLM-made), the labelling report per
   concept (accuracy against human labels where there are some, mean confidence, tagger
   agreement with the LLM on held-out texts), the pairs report and what the build cost.

Progress: `run` reports its stages (`LLM_STAGES`: labels, llm_taggers, pairs) to the same
`explainers.progress.Stages` that `build_domain` then reports embed, taggers, space, save and
load to; `stage_plan` declares them all up front, weighted by the plan's expected seconds, so
the percent never goes back and the ETA (from the rate measured in this run) covers the whole
job. A restarted job replays its cached answers in seconds and then continues.

Time: the plan's `estimated_seconds` comes from the measured speed of the configured LLM:
the wall-clock rates of its previous builds (`BuildRates`, an exponential average stored in the
generation cache per endpoint, measured at the build's concurrency, so parallel slots count),
else a three-request probe (`measure_speed`), which runs one request at a time on a possibly
busy machine and is the rougher of the two. The build's report sets the estimate beside the
measured wall time.

A concept whose LLM labels are no better than the majority rate of the human labels that check
them, or whose tagger does not beat the majority rate of its (LLM) labels, is marked unusable,
as a tagger is in any domain.
"""

from __future__ import annotations

import json
import math
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from explainers.concepts import ConceptSchema
from explainers.data.pool import Pool
from explainers.domains.llm_labels import LabelPrompts, LLMLabeller, examples_from_rows, label_report
from explainers.domains.llm_pairs import directions, generate_pairs, plan_pair_edits
from explainers.generation.backends import LLMBackend, LLMUnavailable
from explainers.generation.cache import GenerationCache
from explainers.progress import Stages, checkpoint

CHARS_PER_TOKEN = 4.0  # a rough rule for English text; the plan says it is an estimate
SPEED_PROBE = "Say the word 'ready'."
Log = Callable[[str], None] | None
Progress = Callable[[dict[str, Any]], None] | None


class PlanError(ValueError):
    """A build the plan refuses; `where` names the request field."""

    def __init__(self, where: str, message: str) -> None:
        super().__init__(f"{where}: {message}")
        self.where = where
        self.message = message


@dataclass(frozen=True)
class LLMBuildOptions:
    """How far the LLM may go in one build (the API's `llm_build` block; defaults for the CLI)."""

    max_llm_calls: int = 20000
    edits_per_direction: int | None = (
        None  # None: as many as the budget allows, up to max_edits_per_direction
    )
    max_edits_per_direction: int = 50
    max_concurrency: int = 4
    shots_per_value: int = 1
    label_samples: int = 5
    max_changed_sentences: int = 1
    temperature: float = 0.7
    max_tokens: int = 200
    seed: int = 0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class LLMSpeed:
    """Seconds per prompt token and per generated token, measured on the configured LLM."""

    prompt_s_per_token: float
    completion_s_per_token: float
    call_overhead_s: float
    measured: bool = True


def measure_speed(backend: LLMBackend) -> LLMSpeed:
    """The LLM's speed from three tiny timed requests (after an untimed warm-up): a short and a long prompt answered with one token
    (overhead and prompt processing), then the short one again with 8 tokens (generation; its prompt
    is in the server's cache by then). On a busy machine this is noisy; the plan says it estimates."""

    def timed(text: str, max_tokens: int) -> tuple[float, int, int]:
        t0 = time.perf_counter()
        c = backend.chat(
            [{"role": "user", "content": text}], n=1, temperature=0.0, max_tokens=max_tokens, seed=0
        )
        return time.perf_counter() - t0, c.prompt_tokens, c.completion_tokens

    # Untimed first: a server's first request may pay one-time costs (buffers, graph) that the
    # build's calls do not. The probe stays noisy on a busy machine (results/zero_label_movies.md:
    # 5-11 s "overhead" per call where the build's calls took ~1 s); stored rates replace it.
    timed(SPEED_PROBE, 1)
    t_short, p_short, _ = timed(SPEED_PROBE, 1)
    t_long, p_long, _ = timed(SPEED_PROBE + " " + "The service was slow but the soup was hot. " * 12, 1)
    t_gen, _, generated = timed(SPEED_PROBE, 8)
    per_prompt = max(t_long - t_short, 0.0) / max(p_long - p_short, 1)
    overhead = max(t_short - p_short * per_prompt, 0.0)
    per_token = max(t_gen - overhead, 0.0) / max(generated, 1)
    return LLMSpeed(per_prompt, per_token, overhead)


# Stage weights for `Stages`: the LLM stages get their expected seconds; the build stages
# (weights calibrated on CEBaB's 11,728 texts, see build.BUILD_STAGES) shrink with the corpus.
LLM_STAGES = ("labels", "llm_taggers", "pairs")
CEBAB_TEXTS = 11728
RATES_ALPHA = 0.5  # weight of the newest build in the stored average


@dataclass(frozen=True)
class BuildRates:
    """Wall-clock seconds per estimated token, measured in previous builds against one LLM endpoint.

    `label_s_per_token`: labelling wall time per estimated prompt token of the calls the LLM
    answered (not the cached ones); `edit_s_per_token`: pair-stage wall time (the edit and its LLM
    checks) per estimated source-text token of each answered edit. Both are measured at the
    build's concurrency, so a server with parallel slots shows its real throughput.
    """

    label_s_per_token: float | None
    edit_s_per_token: float | None
    concurrency: int
    builds: int = 1
    # Edits made / edits planned: the plan books every direction in full, but a direction whose
    # source value no text has (labels collapsed onto one value) makes none.
    edit_fill: float = 1.0

    @property
    def complete(self) -> bool:
        """Whether they estimate both LLM stages (else the probe fills in)."""
        return self.label_s_per_token is not None and self.edit_s_per_token is not None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def rates_key(backend: LLMBackend) -> str:
    return f"llm-build:rates:{backend.kind}:{backend.model}:{getattr(backend, 'base_url', '')}"


def stored_rates(cache: GenerationCache | None, backend: LLMBackend) -> BuildRates | None:
    """The rates previous builds measured against this endpoint, or None."""
    got = cache.get_value(rates_key(backend)) if cache is not None else None
    if not isinstance(got, dict):
        return None
    try:
        return BuildRates(**got)
    except TypeError:  # an older record's fields: measure again
        return None


def _blend(old: float | None, new: float | None) -> float | None:
    if new is None:
        return old
    return new if old is None else RATES_ALPHA * new + (1 - RATES_ALPHA) * old


def record_rates(cache: GenerationCache | None, backend: LLMBackend, measured: BuildRates) -> BuildRates:
    """Fold one build's rates into the stored average (what the next plan estimates with)."""
    old = stored_rates(cache, backend)
    rates = measured
    if old is not None:
        rates = BuildRates(
            _blend(old.label_s_per_token, measured.label_s_per_token),
            _blend(old.edit_s_per_token, measured.edit_s_per_token),
            measured.concurrency,
            old.builds + 1,
            float(_blend(old.edit_fill, measured.edit_fill) or 1.0),
        )
    if cache is not None:
        cache.put_value(rates_key(backend), backend.model, rates.to_dict())
    return rates


def stage_plan(plan: Mapping[str, Any], n_texts: int) -> list[tuple[str, float]]:
    """Every stage of an LLM build with its expected share (see LLM_STAGES' comment)."""
    from explainers.domains.build import BUILD_STAGES

    est = plan.get("estimated") or {}
    # In BUILD_STAGES' unit (20 CPU seconds); without a time estimate, a second per call.
    labels = float(est.get("labels_s") or plan["labelling"]["llm_calls"]) / 20
    pairs = float(est.get("pairs_s") or plan["pairs"]["llm_calls"]) / 20
    scale = max(n_texts, 50) / CEBAB_TEXTS
    return [("labels", labels), ("llm_taggers", 0.05), ("pairs", pairs)] + [
        (name, w * scale) for name, w in BUILD_STAGES
    ]


def _tokens(text: str) -> int:
    return int(math.ceil(len(text) / CHARS_PER_TOKEN))


def human_labels(rows: Sequence[Mapping[str, Any]], schema: ConceptSchema) -> list[dict[str, str]]:
    return [
        {c: v for c, v in (r.get("labels") or {}).items() if c in schema and v in schema[c].values}
        for r in rows
    ]


def undefined_concepts(rows: Sequence[Mapping[str, Any]], schema: ConceptSchema) -> list[str]:
    """Concepts the LLM cannot label: no description in the schema and no row carrying a label."""
    labelled = {c for r in rows for c in (r.get("labels") or {})}
    return [c.name for c in schema.concepts if not c.defined and c.name not in labelled]


def plan_build(
    rows: Sequence[Mapping[str, Any]],
    schema: ConceptSchema,
    options: LLMBuildOptions,
    *,
    budget: int,
    speed: LLMSpeed | None = None,
    rates: BuildRates | None = None,
    field: str = "body.params.llm_build",
) -> dict[str, Any]:
    """LLM calls, tokens and time the build will take; PlanError when it cannot fit `budget`.

    The time comes from `rates` (previous builds against this LLM) where they cover a stage,
    else from `speed` (the probe); None when neither is given.
    """
    texts = [str(r["text"]) for r in rows]
    human = human_labels(rows, schema)
    examples, _ = examples_from_rows(texts, human, schema, per_value=options.shots_per_value)
    prompts = LabelPrompts(schema, examples)
    n_concepts = len(schema.names)
    label_calls = len(texts) * n_concepts
    label_prompt_tokens = sum(
        _tokens("".join(m["content"] for m in prompts.messages(c, t))) for c in schema.names for t in texts
    )
    cells = directions(schema)
    per_edit = 1 + (n_concepts - 1)  # the edit, then the LLM reads each other concept of it
    cap = min(budget, options.max_llm_calls)
    if label_calls >= cap:
        raise PlanError(
            f"{field}.max_llm_calls",
            f"labelling {len(texts)} texts for {n_concepts} concepts takes {label_calls} LLM calls, "
            f"the budget allows {cap} (CACE_LLM_BUILD_MAX_CALLS={budget}, max_llm_calls="
            f"{options.max_llm_calls}): raise it or send fewer texts",
        )
    if options.edits_per_direction is not None:
        per_direction = options.edits_per_direction
    else:
        per_direction = min(
            options.max_edits_per_direction, (cap - label_calls) // max(len(cells) * per_edit, 1)
        )
    edits = len(cells) * per_direction
    edit_calls = edits * per_edit
    if per_direction < 1 or label_calls + edit_calls > cap:
        raise PlanError(
            f"{field}.max_llm_calls",
            f"the budget ({cap} LLM calls) is too small to give any concept pairs: labelling takes "
            f"{label_calls} calls and one edit for each of the {len(cells)} concept directions "
            f"{len(cells) * per_edit} more",
        )
    avg_text = sum(_tokens(t) for t in texts) / max(len(texts), 1)
    system_tokens = 120 + 20 * n_concepts
    edit_prompt = system_tokens + 3 * (2 * avg_text + 60)  # two retrieved examples and the text
    edit_prompt_tokens = int(edits * edit_prompt)
    edit_completion_tokens = int(edits * avg_text * 1.1)
    check_prompt_tokens = int(edits * (n_concepts - 1) * (label_prompt_tokens / max(label_calls, 1)))
    calls = label_calls + edit_calls
    prompt_tokens = label_prompt_tokens + edit_prompt_tokens + check_prompt_tokens
    completion_tokens = label_calls + edit_completion_tokens + edits * (n_concepts - 1)
    plan: dict[str, Any] = {
        "texts": len(texts),
        "concepts": n_concepts,
        "human_labelled_texts": sum(1 for h in human if h),
        "labelling": {
            "llm_calls": label_calls,
            "prompt_tokens": label_prompt_tokens,
            "completion_tokens": label_calls,
        },  # fmt: skip
        "pairs": {
            "directions": len(cells),
            "edits_per_direction": per_direction,
            "planned_edits": edits,
            "llm_calls": edit_calls,
            "prompt_tokens": edit_prompt_tokens + check_prompt_tokens,
            "completion_tokens": edit_completion_tokens + edits * (n_concepts - 1),
        },
        "llm_calls": calls,
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "budget": cap,
        "tokens_are": f"estimates ({CHARS_PER_TOKEN:g} characters per token); calls are exact upper bounds",
    }
    labels_s = pairs_s = None
    how: dict[str, str] = {}
    if speed is not None:
        labels_s = (
            label_calls * speed.call_overhead_s
            + label_prompt_tokens * speed.prompt_s_per_token
            + label_calls * speed.completion_s_per_token
        )
        pairs_s = (
            edit_calls * speed.call_overhead_s
            + (edit_prompt_tokens + check_prompt_tokens) * speed.prompt_s_per_token
            + (edit_completion_tokens + edits * (n_concepts - 1)) * speed.completion_s_per_token
        )
        how = {"labels": "probe", "pairs": "probe"}
        plan["speed"] = {
            "prompt_tokens_per_s": round(1 / speed.prompt_s_per_token, 1)
            if speed.prompt_s_per_token
            else None,
            "completion_tokens_per_s": (
                round(1 / speed.completion_s_per_token, 1) if speed.completion_s_per_token else None
            ),
            "call_overhead_s": round(speed.call_overhead_s, 3),
            "measured": speed.measured,
            "note": "one request at a time; a server with parallel slots (vLLM, llama.cpp -np) runs "
            f"up to {options.max_concurrency} at once, so this is an upper bound",
        }
    if rates is not None:
        if rates.label_s_per_token is not None:
            labels_s, how["labels"] = label_prompt_tokens * rates.label_s_per_token, "previous builds"
        if rates.edit_s_per_token is not None:
            pairs_s = edits * rates.edit_fill * avg_text * rates.edit_s_per_token
            how["pairs"] = "previous builds"
        plan["rates"] = rates.to_dict()
    if labels_s is not None and pairs_s is not None:
        plan["estimated_seconds"] = round(labels_s + pairs_s, 1)
        plan["estimated"] = {"labels_s": round(labels_s, 1), "pairs_s": round(pairs_s, 1), "from": how}
    else:
        plan["estimated_seconds"] = None
    return plan


@dataclass
class ZeroLabelResult:
    pool: Pool
    taggers_builder: Callable[[Path], dict[str, dict[str, Any]]]
    finish: Callable[[Path], dict[str, Any]]  # writes provenance.json, returns the meta fields


def run(
    rows: Sequence[Mapping[str, Any]],
    schema: ConceptSchema,
    backend: LLMBackend,
    options: LLMBuildOptions,
    plan: Mapping[str, Any],
    *,
    cache: GenerationCache | None,
    llm_name: str | None = None,
    progress: Progress = None,
    log: Log = None,
    stages: Stages | None = None,
) -> ZeroLabelResult:
    """Stages 2-4 (labels, taggers, pairs); build_domain does the rest with the returned hooks.

    `stages`: the job's progress (see the module docstring), else a private one that `progress`
    gets a snapshot of on every step (the CLI prints them).
    """
    from explainers.domains.build import fit_taggers, pool_from_rows
    from explainers.domains.domain import TaggerView
    from explainers.taggers import TaggerSet

    started = time.perf_counter()
    texts = [str(r["text"]) for r in rows]
    human = human_labels(rows, schema)
    examples, used = examples_from_rows(texts, human, schema, per_value=options.shots_per_value)
    labeller = LLMLabeller(
        backend, schema, prompts=LabelPrompts(schema, examples), cache=cache,
        max_concurrency=options.max_concurrency, samples=options.label_samples, seed=options.seed,
    )  # fmt: skip

    if stages is None:  # nobody reports the build stages after these: plan the LLM ones only
        stages = Stages("llm build", log=log, on_update=progress, interval_s=5.0)
        stages.expect([s for s in stage_plan(plan, len(texts)) if s[0] in LLM_STAGES])
    else:
        stages.expect(stage_plan(plan, len(texts)))

    def step(what: str) -> Callable[[int, int], None]:
        def report(done: int, total: int) -> None:
            stages.update(done / max(total, 1), f"{done}/{total} {what}")
            checkpoint()  # a cancelled job stops between LLM answers

        return report

    with stages.stage("labels", f"{len(texts)} texts x {len(schema.names)} concepts"):
        run_labels = labeller.label(texts, progress=step("labels"))
    labels_report = label_report(run_labels, schema, human, exclude=used)
    if log:
        log(f"llm labels: {labels_report}")
    # A label per (text, concept): the human one where the row has it, else the LLM's, else (the
    # LLM named no option) the concept's most common LLM value.
    fallback = {
        c: max(labels_report[c]["values"].items(), key=lambda kv: (kv[0] != "(failed)", kv[1]))[0]
        for c in schema.names
    }
    merged_rows, label_origin = [], []
    for r, h, llm in zip(rows, human, run_labels.labels, strict=True):
        lab, origin = {}, {}
        for c in schema.names:
            if c in h:
                lab[c], origin[c] = h[c], "human"
            else:
                v = llm[c].value
                lab[c] = v if v is not None else fallback[c]
                if lab[c] == "(failed)":
                    lab[c] = schema[c].values[0]
                origin[c] = "llm" if v is not None else "llm_failed"
        merged_rows.append({**r, "labels": lab})
        label_origin.append(origin)
    base = pool_from_rows(list(merged_rows), schema)
    human_pairs = len(base.pairs)
    origin_of_text = {str(r["text"]): o for r, o in zip(rows, label_origin, strict=True)}
    confidence_of_text = {
        t: {c: lab.confidence for c, lab in llm.items()}
        for t, llm in zip(texts, run_labels.labels, strict=True)
    }

    # Taggers on the labels, to verify the edits (usable concepts only).
    with stages.stage("llm_taggers"), tempfile.TemporaryDirectory(prefix="cace-llm-taggers-") as tmp:
        probe_report = fit_taggers(base, Path(tmp) / "taggers")
        usable = [
            c for c in schema.names
            if probe_report[c]["usable"] and labels_report[c]["usable_labels"] is not False
        ]  # fmt: skip
        taggers = TaggerView(TaggerSet.load(Path(tmp) / "taggers"), usable)
    edit_plan = plan_pair_edits(
        base.labels, schema, int(plan["pairs"]["edits_per_direction"]), seed=options.seed
    )
    with stages.stage("pairs", f"{len(edit_plan)} edits"):
        pool, pairs_report = generate_pairs(
            base, edit_plan, backend, labeller=labeller, taggers=taggers, cache=cache,
            max_concurrency=options.max_concurrency, max_changed_sentences=options.max_changed_sentences,
            temperature=options.temperature, max_tokens=options.max_tokens, seed=options.seed,
            progress=step("edits"),
        )  # fmt: skip
    if pairs_report.planned and pairs_report.errors == pairs_report.planned:
        # Every request failed: an outage, not "no edit passed". Retryable; the labels are cached.
        raise LLMUnavailable(f"the LLM answered none of the {pairs_report.planned} edit requests")
    if log:
        log(f"llm pairs: {pairs_report.to_dict()}")
    llm_pairs = len(pool.pairs) - human_pairs
    rates = record_rates(
        cache, backend, measured_rates(plan, options, run_labels, pairs_report, edit_plan, texts)
    )
    llm_wall_s = time.perf_counter() - started

    def taggers_builder(out: Path) -> dict[str, dict[str, Any]]:
        report = fit_taggers(pool, out, log=log)
        for c, row in report.items():
            lr = labels_report[c]
            # Held-out accuracy against the labels it was trained on: the LLM's (human ones where given).
            row["agreement_with_llm"] = row["accuracy"]
            row["llm_labels"] = lr
            if lr["usable_labels"] is False:
                row["usable"] = False
                row["why_unusable"] = (
                    f"the LLM's labels agree with the human ones {lr['accuracy_vs_human']} of the time, "
                    f"no better than the majority rate {lr['human_majority_rate']}"
                )
            elif not row["usable"]:
                row["why_unusable"] = (
                    "the tagger does not beat the majority rate of its labels on held-out texts"
                )
        return report

    def finish(out: Path) -> dict[str, Any]:
        ids = pool.ids or [str(i) for i in range(len(pool))]
        with open(out / "provenance.jsonl", "w", encoding="utf-8") as f:
            for i, t in enumerate(pool.texts):
                made_by_llm = t not in origin_of_text
                f.write(
                    json.dumps(
                        {
                            "id": ids[i],
                            "text": "llm_edit" if made_by_llm else "corpus",
                            "labels": {c: "llm_edit_intended" for c in schema.names}
                            if made_by_llm
                            else origin_of_text[t],
                            "confidence": None if made_by_llm else confidence_of_text[t],
                        }
                    )
                    + "\n"
                )
        n_human_cells = sum(1 for o in label_origin for v in o.values() if v == "human")
        n_llm_cells = sum(len(o) for o in label_origin) - n_human_cells
        return {
            "provenance": {
                "labels": {"human": n_human_cells, "llm": n_llm_cells},
                "labels_origin": _origin(n_human_cells, n_llm_cells),
                "pairs": {"human": human_pairs, "llm": llm_pairs},
                "pairs_origin": _origin(human_pairs, llm_pairs),
                "texts": {"corpus": len(base), "llm_edits": len(pool) - len(base)},
                "per_text": "provenance.jsonl",
            },
            "llm_build": {
                "llm": {"name": llm_name, "kind": backend.kind, "model": backend.model},
                "options": options.to_dict(),
                "plan": dict(plan),
                "labelling": {
                    **run_labels.report(),
                    "per_concept": labels_report,
                    "worked_examples": sum(len(v) for v in examples.values()),
                },  # fmt: skip
                "pairs": pairs_report.to_dict(),
                "llm_calls": run_labels.cost.llm_calls + pairs_report.cost.llm_calls,
                "prompt_tokens": run_labels.cost.prompt_tokens + pairs_report.cost.prompt_tokens,
                "completion_tokens": run_labels.cost.completion_tokens + pairs_report.cost.completion_tokens,
                "llm_wall_s": round(llm_wall_s, 1),
                # The plan's time beside the real one (the LLM stages; taggers and space come after).
                "estimate": {
                    "estimated_seconds": plan.get("estimated_seconds"),
                    "actual_seconds": round(llm_wall_s, 1),
                    "ratio": round(plan["estimated_seconds"] / llm_wall_s, 3)
                    if plan.get("estimated_seconds") and llm_wall_s > 0
                    else None,
                    "from": (plan.get("estimated") or {}).get("from"),
                    "rates_now": rates.to_dict(),
                },
            },
        }

    return ZeroLabelResult(pool, taggers_builder, finish)


def measured_rates(
    plan: Mapping[str, Any],
    options: LLMBuildOptions,
    labels: Any,
    pairs: Any,
    edit_plan: Sequence[Any],
    texts: Sequence[str],
) -> BuildRates:
    """This build's wall-clock rates over the answers the LLM gave (cached ones cost no time).

    `labels` is an `llm_labels.LabelRun`, `pairs` a `llm_pairs.PairsReport`."""

    def answered(run_cost: Any, cached: Any) -> float:
        total = run_cost.llm_calls + cached.llm_calls
        return run_cost.llm_calls / total if total else 0.0

    label_share = answered(labels.cost, labels.cached)
    label_tokens = float(plan["labelling"]["prompt_tokens"]) * label_share
    label_rate = labels.wall_s / label_tokens if label_tokens > 0 and labels.wall_s > 0 else None
    edit_tokens = sum(_tokens(texts[e.source]) for e in edit_plan) * answered(pairs.cost, pairs.cached)
    edit_rate = pairs.wall_s / edit_tokens if edit_tokens > 0 and pairs.wall_s > 0 else None
    planned = int(plan["pairs"]["planned_edits"])
    fill = len(edit_plan) / planned if planned else 1.0
    return BuildRates(label_rate, edit_rate, options.max_concurrency, 1, round(fill, 4))


def _origin(human: int, llm: int) -> str:
    if human and llm:
        return "mixed"
    return "llm" if llm else "human" if human else "none"


def cli_build(args: Any, rows: Sequence[Mapping[str, Any]], schema: ConceptSchema) -> int:
    """`cace domains build` for a corpus without (full) labels: plan, then labels, pairs, domain."""
    from explainers.domains.build import build_domain
    from explainers.embeddings import Encoder
    from explainers.generation.backends import BackendSpec, build_backend

    undefined = undefined_concepts(rows, schema)
    if undefined:
        print(f"--schema: concept(s) {undefined} have no description and no text carries their label")
        return 2
    if not (args.llm_base_url and args.llm_model):
        print("no LLM: pass --llm-base-url and --llm-model (an OpenAI-compatible server) to label the texts")
        return 2
    backend = build_backend(BackendSpec(kind="openai", base_url=args.llm_base_url, model=args.llm_model,
                                        timeout_s=300.0))  # fmt: skip
    options = LLMBuildOptions(
        max_llm_calls=args.max_llm_calls, edits_per_direction=args.edits_per_direction,
        max_concurrency=args.concurrency,
    )  # fmt: skip
    cache = GenerationCache(Path(args.root).parent / "generations" / "llm-build.sqlite")
    rates = stored_rates(cache, backend)
    try:
        plan_build(rows, schema, options, budget=args.max_llm_calls)  # the cheap checks, no LLM call
        speed = None if rates is not None and rates.complete else measure_speed(backend)
        plan = plan_build(rows, schema, options, budget=args.max_llm_calls, speed=speed, rates=rates)
    except PlanError as e:
        print(f"--max-llm-calls: {e.message}")
        return 2
    print(json.dumps({"plan": plan}, indent=1))
    if args.dry_run:
        return 0
    stages = Stages(f"domain {args.id}", log=print)
    result = run(rows, schema, backend, options, plan, cache=cache, llm_name=args.llm_model, stages=stages)
    domain = build_domain(
        args.root, args.id, result.pool, encoder=Encoder(), source="llm-build",
        taggers_builder=result.taggers_builder, finish=result.finish, log=print, stages=stages,
    )  # fmt: skip
    keys = ("stats", "taggers", "provenance", "llm_build")
    print(json.dumps({k: domain.meta.get(k) for k in keys}, indent=1, default=str))
    return 0
