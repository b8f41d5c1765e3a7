"""Calibrate the estimators for one (classifier, domain): the fit that makes a `Calibration` (calibration.py).

`calibrate()` splits the pool's origins into folds, scores every available method at
several K on each fold's pairs against the pool minus that fold (heldout.py), then fits,
on those honest component estimates:

- a non-negative stack per K, per (concept, direction) where enough pairs exist, shrunk
  to the pooled weights (stack.py);
- learned combiners over every component, the base prediction and the intervention
  (combiner.py);

and chooses, per (concept, direction), the candidate (a single method, a stack, a
combiner) with the lowest cross-fitted error (L2 relative to the Zero estimate's, plus
Cos); a cell with few pairs takes the pooled choice. It reports a per-method table
(explainers.metrics), split-conformal per-label intervals from the chosen candidates'
cross-fitted residuals (intervals.py) and the expected error per (concept, direction).

Every candidate's output is projected so that base + estimate is a probability vector
(stack.py explains why that can only help L2). The classifier is called once per pool
text (through a prediction cache), bounded by `max_classifier_texts`: a larger pool is
cut to a seeded subset of whole origins first.

"""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from explainers.artifacts import data_hash
from explainers.classifiers.base import Classifier
from explainers.classifiers.cache import CachingClassifier
from explainers.data.pool import Pool
from explainers.estimators.calibration import (
    CALIBRATION_STAGES,
    FORMAT_VERSION,
    Calibration,
    CountingClassifier,
    component,
    fingerprint,
    probe_texts,
)
from explainers.estimators.combiner import Combiner, cross_fit_combiner, fit_combiner
from explainers.estimators.crossfit import group_folds
from explainers.estimators.heldout import (
    HeldOutScores,
    origin_folds,
    pool_origins,
    restrict_space,
    score_heldout,
    stratified_sample,
)
from explainers.estimators.heldout import heldout_pairs as find_heldout_pairs
from explainers.estimators.intervals import fit_intervals
from explainers.estimators.shift import Situation, memorisation, seen_mask, training_texts
from explainers.estimators.stack import CellStack, cell_key, fit_cell_stack, project_icace
from explainers.metrics import summarize
from explainers.pool_kernel import predict_in_chunks
from explainers.progress import Stages
from explainers.registry import Resources

DEFAULT_METHODS = (
    "match",
    "pair_transfer",
    "pair_transfer_logit",
    "s_learner",
    "conexp",
    "approx_match",
    "splice",
    "splice_median",
)
# Methods that make new texts per query: each costs K classifier texts per held-out pair
# (splice and splice_median make the same texts: the prediction cache scores them once).
TEXT_MAKING = ("splice", "splice_median")
DEFAULT_KS = (5, 10, 20, 50)
DEFAULT_COMBINERS = ("hgb", "ridge")
# With fewer held-out pairs than this left once the pairs touching the classifier's training texts
# are dropped, the calibration keeps them all and says its errors were measured on trained texts.
MIN_UNSEEN_PAIRS = 300
# ... and at least this share of the held-out pairs: a small remainder is an odd subset (CEBaB's whole pool
# declared leaves 540 of ~13,000, all texts without a majority rating; the fit on them covered 0.826), while
# a classifier trained on the originals leaves the edit->edit pairs (most of them).
MIN_UNSEEN_SHARE = 0.1
# Below this two-sample KS statistic between the classifier's confidence on its training texts and on
# the pool's other texts, it behaves alike on both: every pair stays in the fit. Between it and
# STRONG_MEMORISATION_KS with too few unseen pairs to fit on, every pair stays too and the answers keep
# their numbers (CEBaB's tfidf-lr trained on the whole pool, KS 0.22: expected error 8% low, coverage
# 0.887 on dev from every pair).
MEMORISATION_KS = 0.2
# A classifier this far from itself on its training texts (KS on confidence) makes every component that
# reads its predictions on pool texts (matching, pair transfer, the combiners over them) suspect: auto
# then chooses among the text-making components only, whose counterfactuals are new texts.
STRONG_MEMORISATION_KS = 0.4
# ... as does one whose uncertainty (1 - confidence) on its training texts is this many times smaller
# than on the others, once the KS says it memorised at all: the ratio survives a suspected training set
# that mixes in texts it never saw (CEBaB's memorising LR: 2.9 on all originals, 70 on the ones it was
# trained on; KS 0.36 and 0.48), where the KS is diluted; regularised models stay at 1.1-1.4.
STRONG_UNCERTAINTY_RATIO = 2.0


def strong_memorisation(mem: Mapping[str, Any]) -> bool:
    """Did the classifier memorise its training texts so far that its pool predictions are suspect?"""
    if not mem.get("measured") or mem["ks_confidence"] < MEMORISATION_KS:
        return False
    return bool(
        mem["ks_confidence"] >= STRONG_MEMORISATION_KS
        or mem.get("uncertainty_ratio", 0.0) >= STRONG_UNCERTAINTY_RATIO
    )


# -- fitting ------------------------------------------------------------------------------------
def _score(l2: float, cos: float, zero_l2: float) -> float:
    """How a candidate is ranked: L2 relative to the Zero estimate's L2 in the same pairs, plus Cos."""
    return l2 / max(zero_l2, 1e-12) + cos


def _cell_errors(pred: np.ndarray, truths: np.ndarray, cells: Sequence[str]) -> dict[str, dict[str, float]]:
    from explainers.metrics import pair_errors

    err = pair_errors(pred, truths)
    out: dict[str, dict[str, float]] = {}
    idx: dict[str, list[int]] = defaultdict(list)
    for i, c in enumerate(cells):
        idx[c].append(i)
    for c, rows in idx.items():
        out[c] = {m: float(np.mean(v[rows])) for m, v in err.items()} | {"n": len(rows)}
    return out


def _table(
    named: Mapping[str, np.ndarray], truths: np.ndarray, concepts: Sequence[str], directions: Sequence[str]
) -> dict[str, Any]:
    out = {}
    for name, est in named.items():
        s = summarize(est, truths, concepts, directions)
        out[name] = {"macro": s.macro, "micro": s.micro, "per_concept": s.per_concept}
    return out


def fit_calibration(
    scores: HeldOutScores,
    labels: Sequence[str],
    *,
    ks: Sequence[int],
    combiners: Sequence[str] = DEFAULT_COMBINERS,
    coverage: float = 0.9,
    min_cell_pairs: int = 40,
    seed: int = 0,
    trained_pairs: bool = False,
    robust_only: bool = False,
    log: Callable[[str], None] | None = None,
) -> Calibration:
    """Stacks, combiners, per-cell choice, intervals and expected errors from held-out component estimates.

    `trained_pairs`: every pair touched a text the classifier was trained on (the answers say so).
    """
    truths, base = scores.truths, scores.base
    concepts, directions, groups = scores.concepts, scores.directions, scores.groups
    sources = [p.source for p in scores.pairs]
    targets = [p.target for p in scores.pairs]
    cells = [cell_key(c, d) for c, d in zip(concepts, directions, strict=True)]
    comps = {component(m, k): e for (m, k), e in scores.estimates.items()}
    methods = sorted({m for m, _ in scores.estimates})
    fold = group_folds(groups, 2, seed + 1)
    # Cross-fitted predictions of every candidate.
    cand: dict[str, np.ndarray] = {f"single:{n}": project_icace(e, base) for n, e in comps.items()}
    stacks: dict[int, CellStack] = {}
    for k in [*ks, 0]:  # K = 0: one stack over every component at every K
        parts = {
            component(m, kk): comps[component(m, kk)]
            for m in methods
            for kk in ([k] if k else ks)
            if component(m, kk) in comps
        }
        if len(parts) < 2:
            continue
        pred = np.zeros_like(truths)
        for f in range(2):
            tr, te = fold != f, fold == f
            if not tr.any() or not te.any():
                continue
            st = fit_cell_stack(
                {n: e[tr] for n, e in parts.items()},
                truths[tr],
                [c for c, t in zip(concepts, tr, strict=True) if t],
                [d for d, t in zip(directions, tr, strict=True) if t],
            )
            pred[te] = st.predict(
                {n: e[te] for n, e in parts.items()},
                [c for c, t in zip(concepts, te, strict=True) if t],
                [d for d, t in zip(directions, te, strict=True) if t],
            )
        cand[f"stack:{k}"] = project_icace(pred, base)
        stacks[k] = fit_cell_stack(parts, truths, concepts, directions)
    fitted_combiners: dict[str, Combiner] = {}
    for kind in combiners:
        started = time.perf_counter()
        pred = cross_fit_combiner(
            kind, comps, truths, base, concepts, sources, targets, groups, folds=2, seed=seed
        )
        cand[f"combiner:{kind}"] = project_icace(pred, base)
        fitted_combiners[kind] = fit_combiner(kind, comps, truths, base, concepts, sources, targets, seed)
        if log:
            log(f"  combiner {kind}: cross-fit and fit in {time.perf_counter() - started:.1f} s")
    # Choose per cell, with the pooled (macro) choice where a cell has few pairs.
    zero = _cell_errors(np.zeros_like(truths), truths, cells)
    errs = {name: _cell_errors(p, truths, cells) for name, p in cand.items()}
    macro = {name: summarize(p, truths, concepts, directions).macro for name, p in cand.items()}
    zero_macro = summarize(np.zeros_like(truths), truths, concepts, directions).macro
    eligible = [n for n in cand if _text_making_single(n)] if robust_only else list(cand)
    eligible = eligible or list(cand)
    default = min(eligible, key=lambda n: _score(macro[n]["l2"], macro[n]["cos"], zero_macro["l2"]))
    choice: dict[str, str] = {}
    for c in sorted(set(cells)):
        if zero[c]["n"] < min_cell_pairs:
            continue
        choice[c] = min(eligible, key=lambda n: _score(errs[n][c]["l2"], errs[n][c]["cos"], zero[c]["l2"]))
    chosen = [choice.get(c, default) for c in cells]
    auto_pred = np.stack([cand[e][i] for i, e in enumerate(chosen)]) if len(chosen) else np.zeros_like(truths)
    intervals = fit_intervals(auto_pred, truths, concepts, directions, coverage=coverage)
    expected = {}
    auto_cells = _cell_errors(auto_pred, truths, cells)
    for c in sorted(set(cells)):
        expected[c] = {
            **{m: round(v, 5) for m, v in auto_cells[c].items() if m != "n"},
            "n": auto_cells[c]["n"],
            "estimator": choice.get(c, default),
            "note": "cross-fitted on the pool's held-out pairs; the choice of estimator was made on "
            "these pairs too, so slightly optimistic",
        }
    from explainers.metrics import pair_errors

    situation = Situation.fit(
        base, pair_errors(auto_pred, truths)["l2"], truths - auto_pred, coverage, trained_pairs=trained_pairs
    )
    robust = _robust_choice(cand, macro, zero_macro["l2"], default)
    robust_cells = _cell_errors(cand[robust], truths, cells)
    robust_expected = {
        c: {**{m: round(v, 5) for m, v in e.items() if m != "n"}, "n": e["n"], "estimator": robust}
        for c, e in robust_cells.items()
    }
    report = {
        "methods": _table({n: e for n, e in comps.items()}, truths, concepts, directions),
        "candidates": _table(cand, truths, concepts, directions),
        "auto": _table({"auto": auto_pred}, truths, concepts, directions)["auto"],
        "zero": zero_macro,
        "unavailable": scores.unavailable,
        "scoring_wall_s": {k: round(v, 2) for k, v in scores.wall_s.items()},
    }
    return Calibration(
        {},
        list(labels),
        sorted(comps),
        stacks,
        fitted_combiners,
        default,
        choice,
        intervals,
        expected,
        report,
        situation=situation,
        robust=robust,
        robust_expected=robust_expected,
    )


def _text_making_single(name: str) -> bool:
    return name.startswith("single:") and name[7:].rpartition("@")[0] in TEXT_MAKING


def _robust_choice(
    cand: Mapping[str, np.ndarray], macro: Mapping[str, Mapping[str, float]], zero_l2: float, default: str
) -> str:
    """The estimator `auto` falls back to where its calibration does not describe the text.

    The best single text-making component (splice's family): its counterfactuals are new texts
    made from the query itself, so its error does not lean on how the classifier behaved on the
    pool's texts (which it may have been trained on), nor on a combiner extrapolating from base
    predictions it never saw. Without one, the default choice.
    """
    robust = [n for n in cand if _text_making_single(n)]
    if not robust:
        return default
    return min(robust, key=lambda n: _score(macro[n]["l2"], macro[n]["cos"], zero_l2))


def calibrate(
    classifier: Classifier,
    pool: Pool,
    space: Any | None = None,
    encoder: Any | None = None,
    *,
    taggers: Any | None = None,
    methods: Sequence[str] = DEFAULT_METHODS,
    ks: Sequence[int] = DEFAULT_KS,
    folds: int = 2,
    max_pairs: int | None = 4000,
    max_classifier_texts: int = 100_000,
    coverage: float = 0.9,
    combiners: Sequence[str] = DEFAULT_COMBINERS,
    classifier_name: str | None = None,
    seed: int = 0,
    options: Mapping[str, Any] | None = None,
    trained_on: Sequence[str] | None = None,
    min_unseen_pairs: int = MIN_UNSEEN_PAIRS,
    log: Callable[[str], None] | None = None,
    stages: Stages | None = None,
) -> Calibration:
    """Fit a `Calibration` of `classifier` on `pool`'s own counterfactual pairs (see the module doc).

    `trained_on`: ids of the pool texts the classifier was trained on (None: not declared; then the
    pool's `trained` column, or the originals when the classifier is much more confident on them
    than on their edits: `shift.training_texts`; an empty list declares none). A classifier that memorised
    them (its confidence on them differs from the others': KS >= `MEMORISATION_KS`) shows effects
    there that are not the effects it shows on new texts, so pairs touching them are left out of
    the fit when at least `min_unseen_pairs` others (and `MIN_UNSEEN_SHARE` of them) remain; else
    they are kept, and where the memorisation is strong (or cannot be measured) every answer says
    its expected error was measured on trained texts. Without measurable memorisation every pair
    is kept.

    `stages` receives the progress: `CALIBRATION_STAGES` (classify the pool, score the held-out
    pairs method by method, fit the combiners and intervals).
    """
    started = time.perf_counter()
    stages = stages or Stages("calibration", log=log)
    stages.expect(CALIBRATION_STAGES)
    if not pool.pairs:
        raise ValueError("calibration needs counterfactual pairs in the pool, and it has none")
    ks = sorted({int(k) for k in ks})
    if not ks or ks[0] < 1:
        raise ValueError("ks must be positive integers")
    counting = CountingClassifier(classifier)
    cached = CachingClassifier(counting, key=f"calibration-{classifier_name or id(classifier)}")
    rows_kept = _budget_rows(pool, max_classifier_texts, seed)
    if space is not None:
        space_rows = _rows_of(space.pool.texts, pool.texts)
        space = (
            restrict_space(space, pool, space_rows) if space_rows != list(range(len(space.pool))) else space
        )
    if rows_kept is not None:
        sub = pool.subset(rows_kept)
        space = restrict_space(space, sub, rows_kept) if space is not None else None
        pool = sub
    if log:
        log(
            f"calibrating on {len(pool)} pool texts, {len(pool.pairs)} pairs"
            + (f" (cut to fit {max_classifier_texts} classifier texts)" if rows_kept is not None else "")
        )
    probe = probe_texts(pool)
    with stages.stage("classify", f"{len(pool)} pool texts"):
        texts = list(pool.texts)
        step = max(1, len(texts) // 20)
        for start in range(0, len(texts), step):  # every pool text once; the probe set is among them
            predict_in_chunks(cached, texts[start : start + step])
            stages.update(
                min(1.0, (start + step) / len(texts)), f"{min(len(texts), start + step)}/{len(texts)} texts"
            )
        probe_pred = cached.predict_proba(probe)
    fold_of = origin_folds(pool_origins(pool), folds, seed)
    candidates = find_heldout_pairs(pool, fold_of)
    probs = cached.predict_proba(list(pool.texts))  # cache hits: every pool text was scored above
    shift_meta: dict[str, Any] = {"trained_on_declared": trained_on is not None}
    if trained_on is None:
        trained_on, found = training_texts(pool, probs, MEMORISATION_KS)
        shift_meta.update(found)
    seen = seen_mask([p.base for p in candidates], [p.cf for p in candidates], pool.ids, trained_on)
    trained_pairs = robust_only = False
    if seen is not None:
        trained_set = set(trained_on or ())
        trained_rows = np.array([i in trained_set for i in (pool.ids or [])], bool)
        shift_meta["memorisation"] = memorisation(probs[trained_rows], probs[~trained_rows])
        shift_meta["trained_texts"] = int(trained_rows.sum())
        shift_meta["pairs_touching_trained"] = int(seen.sum())
        shift_meta["pairs_unseen"] = int((~seen).sum())
        mem = shift_meta["memorisation"]
        robust_only = strong_memorisation(mem)
        shift_meta["robust_only"] = robust_only
        fit, shift_meta["fit_on"] = fit_on_pairs(mem, int((~seen).sum()), len(seen), min_unseen_pairs)
        if fit == "unseen":
            candidates = [p for p, s in zip(candidates, seen, strict=True) if not s]
        trained_pairs = fit == "trained"
    pairs = stratified_sample(candidates, max_pairs, seed)
    methods, options, skipped = _fit_text_budget(
        methods, ks, dict(options or {}), max_classifier_texts - len(pool), len(pairs)
    )
    resources = Resources(
        schema=pool.schema, pool=pool, encoder=encoder, space=space, taggers=taggers, seed=seed
    )
    with stages.stage("score", f"{len(pairs)} held-out pairs, {len(methods)} methods"):
        scores = score_heldout(
            cached,
            resources,
            pairs,
            fold_of,
            methods,
            ks,
            folds=folds,
            options=options,
            log=log,
            stages=stages,
        )
    scores.unavailable.update(skipped)
    if not scores.estimates:
        raise ValueError(f"no method could be scored: {scores.unavailable}")
    with stages.stage("fit", f"{len(combiners)} combiners"):
        cal = fit_calibration(
            scores,
            list(classifier.labels),
            ks=ks,
            combiners=combiners,
            coverage=coverage,
            seed=seed,
            trained_pairs=trained_pairs,
            robust_only=robust_only,
            log=log,
        )
    cal.probe = {"texts": probe, "predictions": np.round(probe_pred, 6).tolist()}
    cal.meta = {
        "format_version": FORMAT_VERSION,
        "classifier": {
            "name": classifier_name or getattr(classifier, "name", None),
            "fingerprint": fingerprint(probe_pred),
            "labels": list(classifier.labels),
            "probe_size": len(probe),
        },
        "pool": {
            "size": len(pool),
            "n_pairs": len(pool.pairs),
            "hash": data_hash(pool.texts),
            "space": (space.meta.get("name") if space is not None else None),
        },
        "protocol": {
            "folds": folds,
            "split": "origins dealt into folds (seeded); a fold's pairs are scored "
            "against the pool of every text whose origin is in another fold",
            "seed": seed,
            "heldout_pairs": len(pairs),
            "max_pairs": max_pairs,
            "methods": list(methods),
            "options": dict(options),
            "ks": ks,
            "combiners": list(combiners),
            "unavailable": scores.unavailable,
        },
        "coverage": {
            "nominal": coverage,
            "kind": "split-conformal per label; per answer weighted towards calibration pairs whose "
            "base prediction looks like the text's (see explainers/estimators/shift.py)",
        },
        "shift": shift_meta,
        "robust_estimator": cal.robust,
        "default_estimator": cal.default,
        "cost": {
            "classifier_calls": counting.calls,
            "classifier_texts": counting.texts,
            "max_classifier_texts": max_classifier_texts,
            "wall_s": round(time.perf_counter() - started, 1),
        },
    }
    return cal


def fit_on_pairs(
    mem: Mapping[str, Any], n_unseen: int, n_pairs: int, min_unseen_pairs: int = MIN_UNSEEN_PAIRS
) -> tuple[str, str]:
    """Which held-out pairs a calibration fits on once training texts are known, and why.

    `mem`: `shift.memorisation` of the classifier on its training texts; `n_unseen` of the
    `n_pairs` held-out pairs avoid them. "all": every pair, the answers keep their numbers;
    "unseen": only the pairs avoiding the training texts; "trained": every pair, and every
    answer says its numbers were measured on texts the classifier was trained on.
    """
    if n_unseen == n_pairs:  # none declared (trained_on=[]), or none of them in a pair
        return "all", "every pair: none touches a text the classifier was trained on"
    if mem["measured"] and mem["ks_confidence"] < MEMORISATION_KS:
        return "all", (
            f"every pair: the classifier is about as confident on its training texts as on the others "
            f"(KS {mem['ks_confidence']} < {MEMORISATION_KS})"
        )
    if n_unseen >= max(min_unseen_pairs, MIN_UNSEEN_SHARE * n_pairs):
        return "unseen", "pairs whose two texts the classifier was not trained on"
    if mem["measured"] and not strong_memorisation(mem):
        return "all", (
            f"every pair: only {n_unseen} of {n_pairs} avoid the classifier's training texts, too few and "
            f"too odd a subset to fit on, and its memorisation is mild (KS {mem['ks_confidence']} < "
            f"{STRONG_MEMORISATION_KS}, uncertainty ratio {mem.get('uncertainty_ratio')} < "
            f"{STRONG_UNCERTAINTY_RATIO})"
        )
    return "trained", (
        f"every pair (only {n_unseen} of {n_pairs} avoid the classifier's training texts, too few to fit "
        f"on): the expected errors were measured on texts it was trained on"
    )


def _fit_text_budget(
    methods: Sequence[str], ks: Sequence[int], options: dict[str, Any], texts_left: int, n_pairs: int
) -> tuple[list[str], dict[str, Any], dict[str, str]]:
    """Cap the K of text-making methods so their new texts fit what the pool left of the budget.

    Each held-out pair costs K classifier texts; K shrinks to fit (its smaller values are
    cache hits of the larger), and a method that cannot reach the smallest K is left out.
    """
    from explainers.splice import DEFAULT_EDIT_PIECES, DEFAULT_MAX_K, DEFAULT_UNIT

    kept, skipped = [], {}
    for m in methods:
        if m not in TEXT_MAKING:
            kept.append(m)
            continue
        cap = min(max(ks), int(options.get("splice_max_k", DEFAULT_MAX_K)), texts_left // max(n_pairs, 1))
        if cap < min(ks):
            skipped[m] = (
                f"budget: {texts_left} classifier texts left after the pool, "
                f"{n_pairs} held-out pairs need K >= {min(ks)} each"
            )
            continue
        options["splice_max_k"] = cap
        # Recorded, so `auto` splices as it was calibrated even after the library's default changes.
        options.setdefault("splice_unit", DEFAULT_UNIT)
        options.setdefault("splice_edit_pieces", DEFAULT_EDIT_PIECES)
        kept.append(m)
    return kept, options, skipped


def _rows_of(space_texts: Sequence[str], pool_texts: Sequence[str]) -> list[int]:
    where = {t: i for i, t in enumerate(space_texts)}
    missing = [t for t in pool_texts if t not in where]
    if missing:
        raise ValueError(f"the space's pool lacks {len(missing)} of the calibration pool's texts")
    return [where[t] for t in pool_texts]


def _budget_rows(pool: Pool, max_texts: int, seed: int) -> list[int] | None:
    """Rows of a seeded subset of whole origins with at most max_texts texts (None: the pool fits)."""
    if len(pool) <= max_texts:  # the probe set is drawn from the pool: no extra texts
        return None
    budget = max_texts
    if budget < 10:
        raise ValueError(f"max_classifier_texts={max_texts} is too small to calibrate")
    origins = pool_origins(pool)
    by_origin: dict[str, list[int]] = defaultdict(list)
    for i, o in enumerate(origins):
        by_origin[o].append(i)
    keep: list[int] = []
    names = sorted(by_origin)
    for j in np.random.default_rng(seed).permutation(len(names)):
        rows = by_origin[names[j]]
        if len(keep) + len(rows) <= budget:
            keep += rows
    return sorted(keep)


__all__ = [
    "DEFAULT_COMBINERS",
    "DEFAULT_KS",
    "DEFAULT_METHODS",
    "calibrate",
    "fit_calibration",
]
