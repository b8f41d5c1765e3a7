"""The CEBaB faithfulness benchmark: every explainer x K over every counterfactual pair.

For a pair (base, counterfactual, concept, source -> target), the true ICaCE of a model
is model(counterfactual) - model(base); an explainer sees only the base text, the
intervention and the base's concept labels, and its estimate is scored with CEBaB's
L2 / Cosine / NormDiff errors (micro and macro, see `explainers.metrics`).

The runner is generic: it needs explainers by name from `explainers.registry` and a
`Resources` from `build_bench_resources`, which the method modules' resource hooks extend
(e.g. load a trained space when `--resource space=PATH` is given). Every text a run needs is scored once, up front, through a `CachingClassifier`.
`estimate_pairs` returns the per-pair estimates for callers that fit on them (stacking).
"""

from __future__ import annotations

import json
import os
import time
from collections import defaultdict
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from explainers.artifacts import META
from explainers.classifiers.base import Classifier
from explainers.classifiers.cache import CachingClassifier
from explainers.concepts import CEBAB_SCHEMA, Intervention
from explainers.data.cebab import Pair, build_pairs, load_split, split_path
from explainers.data.pools import DEFAULT_POOL_SPLIT, cebab_pool
from explainers.metrics import ErrorSummary, summarize
from explainers.progress import Progress
from explainers.registry import Resources, allowed_options, available, build_explainer, options_for
from explainers.types import Explainer, explain_batch

DEFAULT_EXPLAINERS = (
    "zero",
    "random",
    "random_matching",
    "conexp",
    "approx",
    "approx_match",
    "s_learner",
    "pt_match",
)
DEFAULT_KS = (1, 5, 10)
BATCH_PAIRS = 256  # pairs explained per batch (progress is reported between batches)
CONCEPT_ORDER = ("food", "service", "ambiance", "noise")

ResourceHook = Callable[[Resources, Mapping[str, Any]], None]


def _builtin_hooks() -> list[ResourceHook]:
    """The method modules' hooks (a space from `--resource space=PATH`, an LLM from `llm_base_url=...`).

    A hook gets the `Resources` being built and the run's options (`--resource KEY=VALUE`
    pairs plus keyword options of `build_bench_resources`) and sets fields on them.

    The benchmark imports them, never the other way round: run-time code does not depend on it.
    """
    from explainers.generation.plugin import bench_resource_hook as generation_hook
    from explainers.matching.plugin import bench_resource_hook as matching_hook

    return [matching_hook, generation_hook]


def build_bench_resources(
    pool_split: str | os.PathLike[str] = DEFAULT_POOL_SPLIT,
    data_dir: str | os.PathLike[str] | None = None,
    *,
    seed: int = 0,
    encoder: Any | None = None,
    taggers: Any | None = None,
    space: Any | None = None,
    llm: Any | None = None,
    exclude_texts: Collection[str] = (),
    **options: Any,
) -> Resources:
    """The resources a benchmark run hands to every explainer factory.

    The pool is built from `pool_split` (a split name or file); the encoder defaults to
    the disk-cached pretrained MiniLM (loaded only when a method first encodes);
    `exclude_texts` (the benchmark's own texts) are kept out of the pool. Extra
    `options` land in `resources.extra` and are passed to registered resource hooks.
    A `space` given as a path (`--resource space=PATH`) is such an option: the matching
    module's hook loads it; only a loaded space object is used as is.
    """
    if isinstance(space, (str, os.PathLike)):
        options["space"] = str(space)
        space = None
    from explainers.registry import available

    available()  # import plugin modules so their resource hooks are registered
    if encoder is None:
        from explainers.embeddings import Encoder

        encoder = Encoder()
    resources = Resources(
        schema=CEBAB_SCHEMA,
        pool=cebab_pool(pool_split, data_dir, exclude_texts=exclude_texts),
        encoder=encoder,
        space=space,
        llm=llm,
        taggers=taggers,
        seed=seed,
        extra=dict(options),
    )
    resources.extra.setdefault("pool_split", str(pool_split))
    resources.extra.setdefault("data_dir", str(data_dir) if data_dir is not None else None)
    for hook in _builtin_hooks():
        hook(resources, resources.extra)
    return resources


def load_model(
    model: str, root: str | os.PathLike[str] = "var", data_dir: str | os.PathLike[str] | None = None
) -> tuple[Classifier, str, dict[str, Any]]:
    """A reference classifier name (trained on first use under root) or an artifact folder."""
    from explainers.artifacts import read_meta
    from explainers.reference import REFERENCE_MODELS, ensure_reference, load_reference

    if model in REFERENCE_MODELS:
        path = ensure_reference(model, Path(root), Path(data_dir) if data_dir else None)
    else:
        path = Path(model)
        if not (path / META).exists():
            raise FileNotFoundError(
                f"{model!r} is neither a reference classifier {REFERENCE_MODELS} "
                "nor a classifier artifact folder with meta.json"
            )
    meta = read_meta(path)
    return load_reference(path), str(meta.get("name") or path.name), meta


def select_pairs(pairs: Sequence[Pair], limit: int | None, seed: int = 0) -> list[Pair]:
    """All pairs, or a deterministic subset of `limit` stratified over (concept, direction) cells.

    Each cell keeps a share proportional to its size (largest remainders round up, every
    cell keeps at least one pair while the limit allows), so a small run still covers
    every concept and direction the macro average needs.
    """
    pairs = list(pairs)
    if limit is None or limit >= len(pairs):
        return pairs
    cells: dict[tuple[str, str], list[int]] = defaultdict(list)
    for i, p in enumerate(pairs):
        cells[(p.concept, p.direction)].append(i)
    keys = sorted(cells)
    quota = {k: limit * len(cells[k]) / len(pairs) for k in keys}
    take = {k: min(len(cells[k]), max(1, int(quota[k]))) for k in keys}
    rest = sorted(keys, key=lambda k: quota[k] - int(quota[k]), reverse=True)
    while sum(take.values()) < limit:
        grew = False
        for k in rest:
            if sum(take.values()) >= limit:
                break
            if take[k] < len(cells[k]):
                take[k] += 1
                grew = True
        if not grew:
            break
    while sum(take.values()) > limit:  # the max(1, ...) floor can overshoot a tiny limit
        k = max(take, key=lambda k: take[k])
        take[k] -= 1
    rng = np.random.default_rng(seed)
    chosen: list[int] = []
    for k in keys:
        idx = cells[k]
        chosen += [idx[j] for j in sorted(rng.permutation(len(idx))[: take[k]])]
    return [pairs[i] for i in sorted(chosen)]


@dataclass
class PairEstimates:
    """Per-pair estimates of one explainer at one K, aligned with the pairs they came from."""

    explainer: str
    k: int
    estimates: np.ndarray  # (n, C)
    truths: np.ndarray  # (n, C)
    concepts: list[str]
    directions: list[str]
    wall_s: float
    details: list[dict[str, Any]] = field(default_factory=list)

    def summary(self) -> ErrorSummary:
        return summarize(self.estimates, self.truths, self.concepts, self.directions)


def true_icaces(pairs: Sequence[Pair], classifier: Classifier) -> np.ndarray:
    """model(counterfactual) - model(base) for every pair, scored in one batch."""
    texts = list(dict.fromkeys([p.base.text for p in pairs] + [p.counterfactual.text for p in pairs]))
    proba = dict(zip(texts, np.asarray(classifier.predict_proba(texts), float), strict=True))
    return np.array([proba[p.counterfactual.text] - proba[p.base.text] for p in pairs]).reshape(
        len(pairs), len(classifier.labels)
    )


def estimate_pairs(
    explainer: Explainer,
    pairs: Sequence[Pair],
    classifier: Classifier,
    k: int,
    *,
    truths: np.ndarray | None = None,
    keep_details: bool = False,
) -> PairEstimates:
    """Run one explainer over the pairs; it sees the base text, intervention and base labels only.

    The same loop as the calibration's held-out scoring (`types.explain_batch`): batched where the
    method can, a chunk of pairs at a time so progress shows; each estimate equals its pair's own.
    """
    started = time.perf_counter()
    est = np.zeros((len(pairs), len(classifier.labels)))
    details: list[dict[str, Any]] = []
    bar = Progress(len(pairs), f"{getattr(explainer, 'name', type(explainer).__name__)} K={k}", unit="pair")
    for lo in range(0, len(pairs), BATCH_PAIRS):
        chunk = pairs[lo : lo + BATCH_PAIRS]
        found = explain_batch(
            explainer,
            [p.base.text for p in chunk],
            [Intervention(p.concept, p.target, p.source) for p in chunk],
            classifier,
            k,
            base_labels=[p.base.clean_labels() for p in chunk],
        )
        for i, exp in enumerate(found, start=lo):
            est[i] = exp.icace
            if keep_details:
                details.append(exp.details)
        bar.update(len(chunk))
    bar.close()
    wall = time.perf_counter() - started
    tru = true_icaces(pairs, classifier) if truths is None else truths
    return PairEstimates(
        getattr(explainer, "name", type(explainer).__name__),
        k,
        est,
        tru,
        [p.concept for p in pairs],
        [p.direction for p in pairs],
        wall,
        details,
    )


@dataclass
class BenchRow:
    explainer: str
    k: int
    summary: ErrorSummary
    wall_s: float
    space: str = "-"

    def to_dict(self) -> dict[str, Any]:
        return {
            "explainer": self.explainer,
            "k": self.k,
            "space": self.space,
            "wall_s": round(self.wall_s, 3),
            **self.summary.to_dict(),
        }


@dataclass
class BenchResult:
    config: dict[str, Any]
    rows: list[BenchRow]
    errors: dict[str, str] = field(default_factory=dict)
    # What a method used that the table cannot show: a stack's weights, auto's calibration.
    notes: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "config": self.config,
            "rows": [r.to_dict() for r in self.rows],
            "errors": self.errors,
            "notes": self.notes,
        }


class BenchError(RuntimeError):
    """A requested method cannot run (unknown name or a missing resource)."""


def space_used(explainer: Any) -> str:
    """Which space an explainer searches: a trained space's name, the pretrained encoder, or '-' (none)."""
    parts = getattr(explainer, "components", None)
    if isinstance(parts, dict):  # a stack: the spaces of its components
        names = sorted({space_used(e) for e in parts.values()} - {"-"})
        return ", ".join(names) or "-"
    if hasattr(explainer, "_explainers") and hasattr(explainer, "calibration"):  # auto
        names = sorted({space_used(e) for e in explainer._explainers.values()} - {"-"})
        space = getattr(explainer.resources, "space", None)
        return ", ".join(names) or (str(space.meta.get("name")) if space is not None else "-")
    space = getattr(explainer, "space", None)
    if space is not None and hasattr(space, "meta"):
        name = str(space.meta.get("name") or "unnamed space")
        return "pretrained encoder (no trained space)" if name == "pretrained" else name
    if getattr(explainer, "encoder", None) is not None:
        return f"pretrained encoder ({getattr(explainer.encoder, 'model_name', '?')})"
    return "-"


def declared_options(names: Collection[str]) -> set[str]:
    """Every option some of the named (registered) methods take."""
    known = available()
    return set().union(*(allowed_options(n) for n in names if n in known))


def run_benchmark(
    classifier: Classifier,
    pairs: Sequence[Pair],
    resources: Resources,
    explainers: Sequence[str] = DEFAULT_EXPLAINERS,
    ks: Sequence[int] = DEFAULT_KS,
    *,
    explainer_options: Mapping[str, Any] | None = None,
    on_row: Callable[[BenchRow], None] | None = None,
    on_estimates: Callable[[PairEstimates], None] | None = None,
    config: Mapping[str, Any] | None = None,
    strict: bool = False,
) -> BenchResult:
    """Score every explainer at every K on the pairs.

    Every explainer is built before anything is scored. With `strict` a method that cannot
    be built (unknown, or a missing resource) raises `BenchError` naming each one; without
    it, it is reported in `errors` and the others run.
    """
    built: dict[str, Explainer] = {}
    errors: dict[str, str] = {}
    for name in explainers:
        try:
            built[name] = build_explainer(name, resources, **options_for(name, explainer_options or {}))
        except (KeyError, ValueError) as e:  # MissingResource is a ValueError
            errors[name] = f"{type(e).__name__}: {e}"
    if strict and errors:
        raise BenchError("requested methods cannot run: " + "; ".join(f"{n}: {e}" for n, e in errors.items()))
    cached = (
        classifier
        if isinstance(classifier, CachingClassifier)
        else CachingClassifier(classifier, key="bench")
    )
    started = time.perf_counter()
    needed = [p.base.text for p in pairs] + [p.counterfactual.text for p in pairs]
    if resources.pool is not None:
        needed += resources.pool.texts
    cached.predict_proba(list(dict.fromkeys(needed)))  # score everything once, in one batch
    truths = true_icaces(pairs, cached)
    if resources.encoder is not None and resources.pool is not None and _uses_encoder(explainers):
        resources.encoder.encode(list(dict.fromkeys(p.base.text for p in pairs)))
    prep_s = time.perf_counter() - started
    rows: list[BenchRow] = []
    notes: dict[str, Any] = {}
    for name, explainer in built.items():
        if hasattr(explainer, "describe"):
            notes[name] = explainer.describe()
        for k in ks:
            est = estimate_pairs(explainer, pairs, cached, k, truths=truths)
            est.explainer = name
            row = BenchRow(name, k, est.summary(), est.wall_s, space_used(explainer))
            rows.append(row)
            if on_estimates:
                on_estimates(est)
            if on_row:
                on_row(row)
    cfg = dict(config or {})
    cfg.update(
        n_pairs=len(pairs),
        prep_s=round(prep_s, 2),
        cache=cached.stats().to_dict(),
        pool_size=len(resources.pool) if resources.pool is not None else 0,
    )
    return BenchResult(cfg, rows, errors, notes)


def _uses_encoder(names: Sequence[str]) -> bool:
    return any(
        n not in ("zero", "random", "random_proba", "random_matching", "conexp", "approx", "s_learner")
        for n in names
    )


def _f(x: float) -> str:
    return f"{x:.4f}"


def format_table(result: BenchResult) -> str:
    """One markdown row per explainer x K: micro and macro errors, per-concept macro L2, pairs, wall time."""
    concepts = [c for c in CONCEPT_ORDER if any(c in r.summary.per_concept for r in result.rows)]
    extra = sorted({c for r in result.rows for c in r.summary.per_concept} - set(concepts))
    concepts += extra
    head = (
        ["explainer", "K", "space", "L2 micro", "Cos micro", "ND micro", "L2 macro", "Cos macro", "ND macro"]
        + [f"L2 {c}" for c in concepts]
        + ["pairs", "wall s"]
    )
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in result.rows:
        s = r.summary
        cells = [
            r.explainer,
            str(r.k),
            r.space,
            _f(s.micro["l2"]),
            _f(s.micro["cos"]),
            _f(s.micro["normdiff"]),
            _f(s.macro["l2"]),
            _f(s.macro["cos"]),
            _f(s.macro["normdiff"]),
        ]
        cells += [_f(s.per_concept[c]["l2"]) if c in s.per_concept else "-" for c in concepts]
        cells += [str(s.n), f"{r.wall_s:.1f}"]
        lines.append("| " + " | ".join(cells) + " |")
    for name, err in result.errors.items():
        lines.append(f"\n- `{name}` not run: {err}")
    for name, note in result.notes.items():
        lines.append(f"\n- `{name}` used: {json.dumps(note, default=str)}")
    return "\n".join(lines)


def render_markdown(result: BenchResult) -> str:
    c = result.config
    title = f"# CEBaB ICaCE error: {c.get('model', '?')} on {c.get('split', '?')}"
    facts = [
        f"- pairs: {c.get('n_pairs')} ({'stratified subset, seed ' + str(c.get('seed')) if c.get('limit') else 'all'})",
        f"- pool: {c.get('pool')} ({c.get('pool_size')} unique texts); seed {c.get('seed')}",
        f"- classifier: {c.get('model')} (dev accuracy {c.get('model_dev_accuracy', '?')})",
        f"- prediction cache: {c.get('cache')}; preparation (scoring + embedding) {c.get('prep_s')} s",
        "- errors as CEBaB defines them (L2, Cosine distance = 1 when a vector is zero, NormDiff);"
        " micro = mean over pairs, macro = mean over (concept, direction) cells, then directions, then concepts;"
        " `L2 <concept>` = macro L2 within the concept; wall s = total explain time over the pairs.",
    ]
    return "\n".join([title, "", *facts, "", format_table(result), ""])


def default_out(
    model: str, split: str, limit: int | None, results_dir: Path = Path("benchmarks/results")
) -> Path:
    name = Path(str(split)).stem
    suffix = f"_n{limit}" if limit else ""
    return results_dir / f"cebab_{model}_{name}{suffix}.md"


def write_result(result: BenchResult, out: Path) -> tuple[Path, Path]:
    """Write the markdown table and, beside it, a JSON with the raw numbers."""
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(render_markdown(result), encoding="utf-8")
    js = out.with_suffix(".json")
    js.write_text(json.dumps(result.to_dict(), indent=1, default=str), encoding="utf-8")
    return out, js


def load_bench_pairs(
    split: str | os.PathLike[str],
    data_dir: str | os.PathLike[str] | None = None,
    limit: int | None = None,
    seed: int = 0,
) -> list[Pair]:
    return select_pairs(build_pairs(load_split(split, data_dir)), limit, seed)


def benchmark_texts(pairs: Sequence[Pair]) -> set[str]:
    """Every base and counterfactual text of the pairs: what the pool must not contain."""
    return {p.base.text for p in pairs} | {p.counterfactual.text for p in pairs}


def check_overlap(pairs: Sequence[Pair], resources: Resources) -> int:
    """How many benchmark counterfactual texts are also in the pool (a leak matchers could exploit)."""
    if resources.pool is None:
        return 0
    pool = set(resources.pool.texts)
    return sum(p.counterfactual.text in pool for p in pairs)


__all__ = [
    "BenchError",
    "BenchResult",
    "BenchRow",
    "PairEstimates",
    "benchmark_texts",
    "build_bench_resources",
    "check_overlap",
    "default_out",
    "estimate_pairs",
    "format_table",
    "load_bench_pairs",
    "load_model",
    "render_markdown",
    "run_benchmark",
    "select_pairs",
    "space_used",
    "split_path",
    "true_icaces",
    "write_result",
]
