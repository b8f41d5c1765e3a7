"""Registers the concept-space methods with `explainers.registry`, and a benchmark resource hook.

Methods: `match`, `match_dr`, `pair_transfer`, `pair_transfer_logit`, `pt_pair_transfer`,
`stacked`. `match`, `match_dr` and `stacked` need a trained space (`resources.space`);
`pair_transfer` falls back to the pretrained encoder over the pool when no space is
configured (it then ranks pairs by plain MiniLM cosine, and its details and `space_name`
say "pretrained"), since its gain comes from the pairs more than from the space.
`pt_pair_transfer` always ranks by the pretrained encoder; `pair_transfer_logit` averages
the pairs' changes in log-probability space (see explainers.py).

Stacking weights come from the `stack_weights` option ("match=0.4,pair_transfer=0.5" or a
mapping), else from the space's metadata under `stacking[<stack_key>]` (stack_key: the
option, else the benchmark's model name), else equal weights (said in the details).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from explainers.matching.explainers import (
    MatchDRExplainer,
    MatchingExplainer,
    PairTransferExplainer,
    StackedExplainer,
)
from explainers.matching.space import ConceptSpace
from explainers.registry import MissingResource, Resources, build_explainer, options_for, register

DEFAULT_COMPONENTS = ("match", "pair_transfer", "s_learner")
MATCHING_OPTIONS = ("aggregation", "similarity_threshold", "confounders")
PAIR_TRANSFER_OPTIONS = ("pair_weighting",)


def _space(resources: Resources, method: str) -> ConceptSpace:
    space = resources.need("space", method)
    if not isinstance(space, ConceptSpace):
        raise MissingResource(f"method {method!r} needs a concept space (explainers.matching.ConceptSpace)")
    return space


def _pretrained_space(resources: Resources) -> ConceptSpace:
    cached = resources.extra.get("_pretrained_space")
    if cached is None:
        cached = ConceptSpace(
            resources.need("pool", "pair_transfer"),
            resources.need("encoder", "pair_transfer"),
            meta={"name": "pretrained"},
        )
        cached.build_indices()
        resources.extra["_pretrained_space"] = cached
    return cached


def _matching_kw(options: Mapping[str, Any]) -> dict[str, Any]:
    kw: dict[str, Any] = {}
    for k in ("aggregation", "similarity_threshold"):
        if k in options:
            kw[k] = options[k] if k == "aggregation" else float(options[k])
    if "confounders" in options:
        kw["confounders"] = str(options["confounders"])
    return kw


@register(
    "match",
    "Top-K nearest pool texts with the target value in the trained concept space",
    options=MATCHING_OPTIONS,
)
def make_match(resources: Resources, **options: Any) -> MatchingExplainer:
    return MatchingExplainer(_space(resources, "match"), taggers=resources.taggers, **_matching_kw(options))


@register(
    "match_dr",
    "Concept-space matching plus a regression adjustment for label mismatches (doubly robust)",
    options=MATCHING_OPTIONS,
)
def make_match_dr(resources: Resources, **options: Any) -> MatchDRExplainer:
    return MatchDRExplainer(_space(resources, "match_dr"), taggers=resources.taggers, **_matching_kw(options))


@register(
    "pair_transfer",
    "Mean output change over the K nearest pool counterfactual pairs, same concept and direction",
    options=PAIR_TRANSFER_OPTIONS,
)
def make_pair_transfer(resources: Resources, **options: Any) -> PairTransferExplainer:
    return _pair_transfer(resources, options, "pair_transfer", "proba", pretrained=False)


@register(
    "pair_transfer_logit",
    "Pair-transfer with the pairs' changes averaged in log-probability space "
    "and applied to the text's own prediction",
    options=PAIR_TRANSFER_OPTIONS,
)
def make_pair_transfer_logit(resources: Resources, **options: Any) -> PairTransferExplainer:
    return _pair_transfer(resources, options, "pair_transfer_logit", "logit", pretrained=False)


@register(
    "pt_pair_transfer",
    "Pair-transfer with pairs ranked by the pretrained encoder (no trained space)",
    options=PAIR_TRANSFER_OPTIONS,
)
def make_pt_pair_transfer(resources: Resources, **options: Any) -> PairTransferExplainer:
    exp = _pair_transfer(resources, options, "pt_pair_transfer", "proba", pretrained=True)
    exp.name = "pt_pair_transfer"
    return exp


def _pair_transfer(
    resources: Resources, options: Mapping[str, Any], method: str, scale: str, *, pretrained: bool
) -> PairTransferExplainer:
    given = resources.space
    space = given if isinstance(given, ConceptSpace) and not pretrained else _pretrained_space(resources)
    if not space.pool.pairs:
        raise MissingResource(f"method {method!r} needs counterfactual pairs in the pool, and it has none")
    return PairTransferExplainer(
        space, taggers=resources.taggers, scale=scale, weighting=str(options.get("pair_weighting", "mean"))
    )


def parse_weights(value: Any) -> dict[str, float]:
    if isinstance(value, Mapping):
        return {str(k): float(v) for k, v in value.items()}
    out = {}
    for part in str(value).split(","):
        if part.strip():
            k, _, v = part.partition("=")
            out[k.strip()] = float(v)
    return out


@register(
    "stacked",
    "Weighted sum of match, pair_transfer and s_learner, weights cross-fit on dev",
    options=("stack_weights", "stack_key"),
    composite=True,
)
def make_stacked(resources: Resources, **options: Any) -> StackedExplainer:
    space = _space(resources, "stacked")
    info: dict[str, Any]
    by_k: dict[int, dict[str, float]] = {}
    if "stack_weights" in options:
        weights, info = parse_weights(options["stack_weights"]), {"source": "option"}
    else:
        key = str(options.get("stack_key") or resources.extra.get("model") or "")
        fitted = space.meta.get("stacking", {}).get(key)
        if fitted:
            weights = dict(fitted["weights"])
            by_k = {int(k): dict(w) for k, w in fitted.get("weights_by_k", {}).items()}
            info = {"source": f"space meta stacking[{key}]", "procedure": fitted.get("procedure")}
        else:
            weights = {n: 1.0 / len(DEFAULT_COMPONENTS) for n in DEFAULT_COMPONENTS}
            info = {"source": "equal weights: none fit for this classifier", "stack_key": key}
    names = set(weights).union(*(set(w) for w in by_k.values()))
    components = {n: build_explainer(n, resources, **options_for(n, options)) for n in sorted(names)}
    return StackedExplainer(components, weights, info, weights_by_k=by_k)


def bench_resource_hook(resources: Resources, options: Mapping[str, Any]) -> None:
    """`--resource space=PATH` loads a saved space; texts missing from the run's pool are dropped from it."""
    path = options.get("space")
    if not path or resources.space is not None:
        return
    from explainers.matching.cebab import without_texts

    space = ConceptSpace.load(Path(str(path)), encoder=resources.encoder)
    if resources.pool is not None:
        keep = set(resources.pool.texts)
        space = without_texts(space, [t for t in space.pool.texts if t not in keep])
    resources.space = space
