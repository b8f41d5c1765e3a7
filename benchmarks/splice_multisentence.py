"""Why `splice` is weakest on concepts spread over several sentences, and its `splice_scope` variants.

    .venv/bin/python -m benchmarks.splice_multisentence [--model tfidf-lr] [--split dev] [--ks 5,10,20]

1. Analysis (CEBaB `--split`, pool = train_inclusive minus every text of the split, the scope
   "one" that `splice` shipped with): per concept, how long the human edits are (sentences changed
   between base and counterfactual), how many of the base's sentences the splice scorer reads as
   carrying the concept (p >= 0.5), how often the sentence it rewrites also carries another concept,
   and splice's L2 in each bucket, with the norms of the true and estimated ICaCE (an edit splice
   makes too small shows as |est| < |true|).
2. Before/after: `splice` and `splice_median` with every `splice_scope` at each K, macro and per
   concept (L2 / Cos), on the CEBaB split and on the templated movie domain
   (explainers/data/movies.py: held-out origins, a rating classifier trained on reviews without edits).

Writes benchmarks/results/splice_multisentence.md (+ .json); the findings section at the top of
that file is written by hand from a run's numbers (a rerun rewrites the tables, not the reading).

    .venv/bin/python -m benchmarks.splice_multisentence --reach [--model minilm-ft|tfidf-lr|memorising]
        [--variants clause/one/1,clause/one/2,clause/two/1] [--k 20]

3. Reach study (`--reach`, CEBaB only): splice at one K under each (unit, scope, edit pieces)
   variant, per concept, per (concept, direction) cell and per edit reach (sentences the human edit
   changed: 1, 2, 3+) with the norms of the true and estimated ICaCE: whether rewriting more of the
   query (`splice_scope`) or transplanting longer edits (`splice_edit_pieces`) closes the gap on
   long edits, for a classifier given by name (`memorising`: the 1-3-gram LR of
   benchmarks/calibration_shift.py, trained on the pool's originals). Writes
   benchmarks/results/splice_reach_<model>.md (+ .json).
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.harness import RESULTS, write_result
from explainers.bench.runner import (
    CONCEPT_ORDER,
    benchmark_texts,
    estimate_pairs,
    load_bench_pairs,
    load_model,
    true_icaces,
)
from explainers.classifiers.cache import CachingClassifier
from explainers.classifiers.local import SklearnClassifier
from explainers.concepts import Intervention
from explainers.data.movies import movie_corpus, train_rating_classifier
from explainers.data.pools import cebab_pool
from explainers.domains import infer_schema, pool_from_rows, validate_rows
from explainers.metrics import pair_errors, summarize
from explainers.splice import CARRY_P, MIN_CLAUSE_WORDS, SentenceEdits, SpliceExplainer, sentences

METHODS = ("splice", "splice_median")
# (unit, scope) variants; the shipped one first. Wider scopes are scored at the largest K only.
VARIANTS = (
    ("sentence", "one"),
    ("clause", "one"),
    ("sentence", "two"),
    ("sentence", "all"),
    ("clause", "two"),
    ("clause", "all"),
)
BUCKETS = ("changed=1", "changed=2", "changed>=3", "one-sentence text", "shared", "alone", "appended")


def buckets(pairs: Sequence[Any], edits: SentenceEdits) -> list[set[str]]:
    """The analysis buckets each pair falls in (see `analyse`)."""
    out: list[set[str]] = []
    for p in pairs:
        before, after = sentences(p.base.text), sentences(p.counterfactual.text)
        changed = max(sum(s not in after for s in before), sum(s not in before for s in after))
        tags = {f"changed={changed}" if changed < 3 else "changed>=3"}
        if (p.concept, p.source) in edits.absent:
            tags.add("appended")
        else:
            x = edits.vectorizer.transform(before)
            prob = {c: m.predict_proba(x)[:, 1] for c, m in edits.scorers.items()}
            at = int(np.argmax(prob[p.concept]))
            tags.add("shared" if any(prob[c][at] >= CARRY_P for c in prob if c != p.concept) else "alone")
            if len(before) == 1:
                tags.add("one-sentence text")
        out.append(tags)
    return out


def analyse(
    pairs: Sequence[Any], edits: SentenceEdits, est: np.ndarray, truths: np.ndarray
) -> dict[str, Any]:
    """Per concept: edit length, carrying sentences, shared sentences, and splice's error by bucket."""
    err = pair_errors(est, truths)
    concepts = list(CONCEPT_ORDER)
    rows: list[dict[str, Any]] = []
    for i, p in enumerate(pairs):
        before, after = sentences(p.base.text), sentences(p.counterfactual.text)
        removed = [j for j, s in enumerate(before) if s not in after]
        inserted = [s for s in after if s not in before]
        x = edits.vectorizer.transform(before)
        prob = {c: edits.scorers[c].predict_proba(x)[:, 1] for c in concepts if c in edits.scorers}
        at = int(np.argmax(prob[p.concept]))
        rows.append(
            {
                "concept": p.concept,
                "source_known": (p.concept, p.source) not in edits.absent,
                "n_sentences": len(before),
                "changed": max(len(removed), len(inserted)),
                "carrying": int((prob[p.concept] >= CARRY_P).sum()),
                "located_shared": any(prob[c][at] >= CARRY_P for c in prob if c != p.concept),
                "edited_shared": any(prob[c][j] >= CARRY_P for j in removed for c in prob if c != p.concept),
                "l2": float(err["l2"][i]),
                "cos": float(err["cos"][i]),
                "true_norm": float(np.linalg.norm(truths[i])),
                "est_norm": float(np.linalg.norm(est[i])),
            }
        )

    def cell(sel: list[dict[str, Any]]) -> dict[str, float]:
        return {
            "n": len(sel),
            "l2": float(np.mean([r["l2"] for r in sel])) if sel else float("nan"),
            "cos": float(np.mean([r["cos"] for r in sel])) if sel else float("nan"),
            "true_norm": float(np.mean([r["true_norm"] for r in sel])) if sel else float("nan"),
            "est_norm": float(np.mean([r["est_norm"] for r in sel])) if sel else float("nan"),
        }

    out: dict[str, Any] = {}
    for c in concepts:
        mine = [r for r in rows if r["concept"] == c]
        known = [r for r in mine if r["source_known"]]
        out[c] = {
            "pairs": len(mine),
            "mean_sentences": float(np.mean([r["n_sentences"] for r in mine])),
            "mean_changed": float(np.mean([r["changed"] for r in mine])),
            "share_changed_2plus": float(np.mean([r["changed"] >= 2 for r in mine])),
            "mean_carrying": float(np.mean([r["carrying"] for r in mine])),
            "share_located_shared": float(np.mean([r["located_shared"] for r in known])),
            "share_edited_shared": float(np.mean([r["edited_shared"] for r in known])),
            "all": cell(mine),
            "changed": {str(n): cell([r for r in mine if min(r["changed"], 3) == n]) for n in (1, 2, 3)},
            "one_sentence_text": cell([r for r in known if r["n_sentences"] == 1]),
            "located_shared": cell([r for r in known if r["located_shared"]]),
            "located_alone": cell([r for r in known if not r["located_shared"]]),
            "appended": cell([r for r in mine if not r["source_known"]]),
        }
    return out


def score_variants(
    explainer_for: Any,
    pairs: Sequence[Any],
    clf: Any,
    truths: np.ndarray,
    ks: Sequence[int],
    tags: list[set[str]] | None = None,
) -> dict[str, dict[str, Any]]:
    """{`method:unit/scope@K`: summary (and, at the largest K, L2 per analysis bucket and concept)}."""
    table: dict[str, dict[str, Any]] = {}
    for unit, scope in VARIANTS:
        for method in METHODS:
            explainer = explainer_for(method, unit, scope)
            for k in ks if scope == "one" else ks[-1:]:
                est = estimate_pairs(explainer, pairs, clf, k, truths=truths)
                s = est.summary()
                key = f"{method}:{unit}/{scope}@{k}"
                row: dict[str, Any] = {
                    "macro": s.macro,
                    "per_concept": s.per_concept,
                    "wall_s": round(est.wall_s, 1),
                }
                if tags is not None and k == ks[-1]:
                    l2 = pair_errors(est.estimates, truths)["l2"]
                    row["buckets"] = {
                        c: {
                            b: float(
                                np.mean(
                                    [l2[i] for i, p in enumerate(pairs) if p.concept == c and b in tags[i]]
                                )
                            )
                            for b in BUCKETS
                            if any(p.concept == c and b in tags[i] for i, p in enumerate(pairs))
                        }
                        for c in CONCEPT_ORDER
                    }
                table[key] = row
                print(f"{key:<32} L2 {s.macro['l2']:.4f} Cos {s.macro['cos']:.4f}", flush=True)
    return table


class HumanReach(SentenceEdits):
    """Diagnostic only (never run-time): a sentence index that rewrites exactly the sentences the
    pair's human edit rewrote (`at` = the first, the rest as carriers), to measure what knowing the
    edit's reach would be worth. Wraps a fitted index; `reach` is set per query by `ReachSplice`."""

    def __init__(self, fitted: SentenceEdits, reach: dict[tuple[str, str, str], list[int]]) -> None:
        self.__dict__.update(fitted.__dict__)
        self.reach = reach
        self.now: list[int] = []

    def locate(self, parts: list[str], text: str, concept: str, source: str) -> tuple[int | None, Any]:
        at, row = super().locate(parts, text, concept, source)
        if at is None or not self.now:
            return at, row
        return self.now[0], self.vectorizer.transform([parts[self.now[0]]])

    def carriers(self, parts: list[str], concept: str, at: int, scope: str) -> list[tuple[int, Any]]:
        extra = self.now[1:] if scope != "one" else []
        return [(i, self.vectorizer.transform([parts[i]])) for i in extra]


class ReachSplice(SpliceExplainer):
    """`splice` over a `HumanReach` index: looks up the pair's rewritten sentences before each query."""

    edits: HumanReach

    def counterfactuals(
        self, text: str, intervention: Intervention, top_k: int, *, base_labels: Any = None
    ) -> Any:
        self.edits.now = self.edits.reach.get((text, intervention.concept, intervention.target), [])
        return super().counterfactuals(text, intervention, top_k, base_labels=base_labels)


def human_reach(
    pairs: Sequence[Any], edits: SentenceEdits, clf: Any, truths: np.ndarray, k: int
) -> dict[str, Any]:
    """Sentence splice told which sentences each human edit rewrote: the first only, or all of them."""
    reach: dict[tuple[str, str, str], list[int]] = {}
    for p in pairs:
        after = sentences(p.counterfactual.text)
        reach[(p.base.text, p.concept, p.target)] = [
            j for j, s in enumerate(sentences(p.base.text)) if s not in after
        ]
    out: dict[str, Any] = {}
    for scope in ("one", "all"):
        est = estimate_pairs(ReachSplice(HumanReach(edits, reach), scope=scope), pairs, clf, k, truths=truths)
        s = est.summary()
        out[f"splice:human-reach/{scope}@{k}"] = {"macro": s.macro, "per_concept": s.per_concept}
        print(f"human reach {scope} L2 {s.macro['l2']:.4f} Cos {s.macro['cos']:.4f}", flush=True)
    return out


def cebab(model: str, split: str, ks: Sequence[int]) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
    pairs = load_bench_pairs(split)
    pool = cebab_pool("train_inclusive", exclude_texts=benchmark_texts(pairs))
    base_clf, _, meta = load_model(model)
    clf = CachingClassifier(base_clf, key=f"splice-{model}")
    truths = true_icaces(pairs, clf)
    fit_s: dict[str, float] = {}
    indexes: dict[str, SentenceEdits] = {}
    for unit in dict(VARIANTS):
        t0 = time.perf_counter()
        indexes[unit] = SentenceEdits(pool, unit=unit)
        fit_s[unit] = round(time.perf_counter() - t0, 1)
    edits = indexes["sentence"]

    def explainer_for(method: str, unit: str, scope: str) -> SpliceExplainer:
        agg = "median" if method == "splice_median" else "mean"
        e = SpliceExplainer(indexes[unit], scope=scope, aggregation=agg)
        e.name = method
        return e

    shipped = estimate_pairs(explainer_for("splice", "sentence", "one"), pairs, clf, max(ks), truths=truths)
    analysis = analyse(pairs, edits, shipped.estimates, truths)
    table = score_variants(explainer_for, pairs, clf, truths, ks, buckets(pairs, edits))
    analysis["human_reach"] = human_reach(pairs, edits, clf, truths, max(ks))
    info = {
        "model": model,
        "split": split,
        "pairs": len(pairs),
        "pool_texts": len(pool.texts),
        "pool_pairs": len(pool.pairs),
        "fit_s": fit_s,
        "edits": {u: sum(len(v) for v in e.edits.values()) for u, e in indexes.items()},
        "model_dev_accuracy": meta.get("dev_accuracy"),
        "analysis_k": max(ks),
    }
    return info, analysis, table


def movies(
    ks: Sequence[int], origins: int = 300, eval_origins: int = 100
) -> tuple[dict[str, Any], dict[str, Any]]:
    rows = validate_rows(movie_corpus(origins, seed=0))
    schema = infer_schema(rows, name="movie review")
    pool = pool_from_rows(rows, schema)
    clf = CachingClassifier(
        SklearnClassifier(train_rating_classifier(movie_corpus(400, edits=False, seed=7))), key="movie-rating"
    )
    held = pool_from_rows(validate_rows(movie_corpus(eval_origins, seed=11)), schema)
    proba = np.asarray(clf.predict_proba(held.texts), float)
    truths = np.array([proba[c] - proba[b] for b, c, _ in held.pairs])
    concepts = [con for _, _, con in held.pairs]
    directions = [f"{held.labels[b][con]}->{held.labels[c][con]}" for b, c, con in held.pairs]
    indexes = {unit: SentenceEdits(pool, unit=unit) for unit in dict(VARIANTS)}
    table: dict[str, Any] = {}
    for unit, scope in VARIANTS:
        for method in METHODS:
            agg = "median" if method == "splice_median" else "mean"
            e = SpliceExplainer(indexes[unit], scope=scope, aggregation=agg)
            for k in ks if scope == "one" else ks[-1:]:
                est = np.array(
                    [
                        e.explain(
                            held.texts[b],
                            Intervention(con, held.labels[c][con], held.labels[b][con]),
                            clf,
                            top_k=k,
                            base_labels=held.labels[b],
                        ).icace
                        for b, c, con in held.pairs
                    ]
                )
                s = summarize(est, truths, concepts, directions)
                key = f"{method}:{unit}/{scope}@{k}"
                table[key] = {"macro": s.macro, "per_concept": s.per_concept}
                print(f"movies {key:<32} L2 {s.macro['l2']:.4f} Cos {s.macro['cos']:.4f}", flush=True)
    info = {
        "origins": origins,
        "eval_origins": eval_origins,
        "pairs": len(held.pairs),
        "concepts": sorted(set(concepts)),
    }
    return info, table


def reach_classifier(model: str, pool: Any) -> tuple[Any, str]:
    """The classifier of a reach study: a reference model by name, or the memorising LR."""
    if model != "memorising":
        clf, _, meta = load_model(model)
        return clf, f"{model} (dev accuracy {meta.get('dev_accuracy')})"
    from benchmarks.calibration_shift import memorising_pipeline
    from explainers.data.cebab import load_split
    from explainers.reference.common import rated

    texts = set(pool.texts)
    originals = [r for r in load_split("train_inclusive") if r.text in texts and r.is_original]
    x, y = rated(originals)
    return SklearnClassifier(
        memorising_pipeline().fit(x, y)
    ), f"memorising 1-3-gram LR on {len(x)} pool originals"


def reach_study(model: str, split: str, k: int, variants: Sequence[tuple[str, str, int]]) -> dict[str, Any]:
    """Splice at K under each (unit, scope, edit pieces): macro, per concept, per cell, per edit reach."""
    pairs = load_bench_pairs(split)
    pool = cebab_pool("train_inclusive", exclude_texts=benchmark_texts(pairs))
    inner, described = reach_classifier(model, pool)
    clf = CachingClassifier(inner, key=f"reach-{model}")
    truths = true_icaces(pairs, clf)
    rows: dict[str, Any] = {}
    # Variants that differ only in scope share one index (a fit is ~30 s on CEBaB).
    indexes: dict[tuple[str, int], SentenceEdits] = {}
    for unit, scope, pieces in variants:
        if (unit, pieces) not in indexes:
            indexes[(unit, pieces)] = SentenceEdits(pool, unit=unit, edit_pieces=pieces)
        edits = indexes[(unit, pieces)]
        for method in METHODS:
            e = SpliceExplainer(
                edits, scope=scope, aggregation="median" if method == "splice_median" else "mean"
            )
            e.name = method
            est = estimate_pairs(e, pairs, clf, k, truths=truths)
            s = est.summary()
            reach = analyse(pairs, edits, est.estimates, truths)
            key = f"{method}:{unit}/{scope}/{pieces}"
            rows[key] = {
                "macro": s.macro,
                "per_concept": s.per_concept,
                "cells": s.cells,
                "reach": {c: reach[c]["changed"] for c in CONCEPT_ORDER if c in reach},
                "edits": sum(len(v) for v in edits.edits.values()),
                "wall_s": round(est.wall_s, 1),
            }
            print(
                f"{key:<32} L2 {s.macro['l2']:.4f} Cos {s.macro['cos']:.4f} ({est.wall_s:.0f} s)", flush=True
            )
    return {
        "model": model,
        "classifier": described,
        "split": split,
        "k": k,
        "pairs": len(pairs),
        "rows": rows,
    }


def render_reach(r: dict[str, Any]) -> str:
    rows = r["rows"]
    concepts = [c for c in CONCEPT_ORDER if c in next(iter(rows.values()))["per_concept"]]
    out = [
        f"# splice and the reach of human edits: {r['classifier']}",
        "",
        f"CEBaB {r['split']} ({r['pairs']} pairs), pool = train_inclusive minus every {r['split']} text, K = {r['k']}. "
        "Variant = `splice_unit/splice_scope/splice_edit_pieces` (explainers/splice.py); the first is the shipped "
        "default. Reach = sentences the pair's human edit changed. Written by "
        "`python -m benchmarks.splice_multisentence --reach`.",
        "",
        "## Per variant",
        "",
        "| method:variant | edits | macro L2 | macro Cos | "
        + " | ".join(f"{c} L2 / Cos" for c in concepts)
        + " |",
        "|---|---:|---:|---:|" + "---|" * len(concepts),
    ]
    for key, row in rows.items():
        out.append(f"| {key} | {row['edits']} | {_summary_cells(row, concepts)} |")
    out += [
        "",
        "## Error by the reach of the human edit (L2; mean |true| / |estimate|)",
        "",
        "| method:variant | concept | reach 1 | reach 2 | reach 3+ |",
        "|---|---|---|---|---|",
    ]
    for key, row in rows.items():
        for c in concepts:
            cells = []
            for n in ("1", "2", "3"):
                b = row["reach"][c][n]
                cells.append(
                    f"{b['n']}: {_f(b['l2'])} ({b['true_norm']:.2f} / {b['est_norm']:.2f})" if b["n"] else "-"
                )
            out.append(f"| {key} | {c} | " + " | ".join(cells) + " |")
    cells = sorted(next(iter(rows.values()))["cells"])
    out += [
        "",
        "## Per (concept, direction) cell (L2)",
        "",
        "| cell | " + " | ".join(rows) + " |",
        "|---|" + "---:|" * len(rows),
    ]
    for cell in cells:
        out.append(f"| {cell} | " + " | ".join(_f(row["cells"][cell]["l2"]) for row in rows.values()) + " |")
    return "\n".join(out) + "\n"


def _f(x: float) -> str:
    return f"{x:.4f}"


def _summary_cells(row: dict[str, Any], concepts: Sequence[str]) -> str:
    """A table row's macro L2 and Cos cells, then one "L2 / Cos" cell per concept."""
    pc = row["per_concept"]
    return f"{_f(row['macro']['l2'])} | {_f(row['macro']['cos'])} | " + " | ".join(
        f"{_f(pc[c]['l2'])} / {_f(pc[c]['cos'])}" for c in concepts
    )


def render(
    info: dict[str, Any],
    analysis: dict[str, Any],
    table: dict[str, Any],
    minfo: dict[str, Any],
    mtable: dict[str, Any],
    ks: Sequence[int],
) -> str:
    concepts = [c for c in CONCEPT_ORDER if c in analysis]
    lines = [
        f"# `splice` on concepts spread over several sentences: {info['model']} on CEBaB {info['split']}",
        "",
        f"- `benchmarks/splice_multisentence.py`; {info['pairs']} {info['split']} pairs; pool train_inclusive minus every "
        f"{info['split']} text ({info['pool_texts']} texts, {info['pool_pairs']} pairs; splice's index per unit: fit seconds {info['fit_s']}, transplantable edits {info['edits']}); "
        f"classifier {info['model']}.",
        "- errors as CEBaB defines them; macro = mean over (concept, direction) cells, then directions, then concepts.",
        "",
        f"## 1. Where the shipped splice (scope `one`, K={info['analysis_k']}) loses, per concept",
        "",
        "`changed` = sentences that differ between the base and its human edit (max of removed, inserted); "
        f"`carrying` = base sentences the splice scorer reads as carrying the concept (p >= {CARRY_P}); "
        "`shared` = the sentence splice rewrites also reads as carrying another concept (pairs whose source is a "
        "value splice rewrites, not `unknown`, which appends).",
        "",
        "| concept | pairs | sentences | changed | changed >= 2 | carrying | shared (rewritten) | shared (human edit) "
        "| L2 | Cos | mean abs true / est | L2 / abs true |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for c in concepts:
        a = analysis[c]
        lines.append(
            f"| {c} | {a['pairs']} | {a['mean_sentences']:.2f} | {a['mean_changed']:.2f} | {a['share_changed_2plus']:.1%} | "
            f"{a['mean_carrying']:.2f} | {a['share_located_shared']:.1%} | {a['share_edited_shared']:.1%} | "
            f"{_f(a['all']['l2'])} | {_f(a['all']['cos'])} | {a['all']['true_norm']:.3f} / {a['all']['est_norm']:.3f} | "
            f"{a['all']['l2'] / a['all']['true_norm']:.2f} |"
        )
    lines += [
        "",
        "Splice's error by bucket (pairs, mean L2, mean |true ICaCE| / |estimate|):",
        "",
        "| concept | changed = 1 | changed = 2 | changed >= 3 | one-sentence text | rewritten sentence shared | rewritten sentence alone | appended (source unknown) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for c in concepts:
        a = analysis[c]
        cells = [
            a["changed"]["1"],
            a["changed"]["2"],
            a["changed"]["3"],
            a["one_sentence_text"],
            a["located_shared"],
            a["located_alone"],
            a["appended"],
        ]
        lines.append(
            f"| {c} | "
            + " | ".join(
                f"{x['n']}: {_f(x['l2'])} ({x['true_norm']:.2f} / {x['est_norm']:.2f})" if x["n"] else "-"
                for x in cells
            )
            + " |"
        )
    reach = analysis.get("human_reach", {})
    if reach:
        shipped = table.get(f"splice:sentence/one@{ks[-1]}")
        lines += [
            "",
            "Is the reach the bottleneck? The shipped sentence splice told, per pair, which sentences the human edit "
            "rewrote (diagnostic; it reads the answer): `one` rewrites the first of them, `all` every one of them "
            "(pairs whose edit only added a sentence keep the scorer's choice).",
            "",
            "| variant | L2 macro | Cos macro | " + " | ".join(f"{c} L2 / Cos" for c in concepts) + " |",
            "|---|---|---|" + "---|" * len(concepts),
        ]
        for key, row in ([(f"splice:sentence/one@{ks[-1]} (scorer)", shipped)] if shipped else []) + list(
            reach.items()
        ):
            lines.append(f"| {key} | {_summary_cells(row, concepts)} |")
    lines += [
        "",
        "## 2. Before / after: `splice_unit` x `splice_scope`",
        "",
        "`splice_unit`: `sentence` (shipped) rewrites a sentence; `clause` cuts each sentence after a comma or semicolon "
        f'and before "but" (a piece of fewer than {MIN_CLAUSE_WORDS} words after a comma stays with the one before), '
        "learns its edits and its scorer on those pieces, and fits the transplanted piece to the replaced one's "
        "punctuation and case. `splice_scope`: `one` (shipped) rewrites the piece that most carries the concept; `two` "
        f"also the next one the scorer reads as carrying it (p >= {CARRY_P}); `all` every such piece, each with its own "
        "nearest edits of the same direction (the k-th counterfactual uses each piece's k-th edit). Wider scopes only at "
        "the largest K.",
        "",
        "| variant | L2 macro | Cos macro | " + " | ".join(f"{c} L2 / Cos" for c in concepts) + " | wall s |",
        "|---|---|---|" + "---|" * len(concepts) + "---|",
    ]
    for key, row in table.items():
        lines.append(f"| {key} | {_summary_cells(row, concepts)} | {row['wall_s']} |")
    with_buckets = [(k, r) for k, r in table.items() if "buckets" in r]
    bucket_names = [
        "changed=1",
        "changed=2",
        "changed>=3",
        "one-sentence text",
        "shared",
        "alone",
        "appended",
    ]
    lines += [
        "",
        f"Mean L2 per analysis bucket at K={ks[-1]} (buckets as in section 1; `shared`/`alone` = the sentence the "
        "shipped splice rewrites reads / does not read as carrying another concept):",
        "",
        "| concept | variant | " + " | ".join(bucket_names) + " |",
        "|---|---|" + "---|" * len(bucket_names),
    ]
    for c in concepts:
        for key, row in with_buckets:
            b = row["buckets"][c]
            lines.append(
                f"| {c} | {key} | " + " | ".join(_f(b[n]) if n in b else "-" for n in bucket_names) + " |"
            )
    mconcepts = minfo["concepts"]
    lines += [
        "",
        f"## 3. The movie domain (explainers/data/movies.py): {minfo['pairs']} edit pairs of {minfo['eval_origins']} held-out origins",
        "",
        f"Pool: {minfo['origins']} origins (each concept one sentence, each edit one sentence); classifier: TF-IDF + LR rating "
        "model trained on 400 reviews without edits (as benchmarks/domain_movies.py).",
        "",
        "| variant | L2 macro | Cos macro | " + " | ".join(f"{c} L2 / Cos" for c in mconcepts) + " |",
        "|---|---|---|" + "---|" * len(mconcepts),
    ]
    for key, row in mtable.items():
        lines.append(f"| {key} | {_summary_cells(row, mconcepts)} |")
    return "\n".join(lines) + "\n"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="tfidf-lr")
    ap.add_argument("--split", default="dev")
    ap.add_argument("--ks", default="5,10,20")
    ap.add_argument("--out", type=Path, default=None)
    ap.add_argument("--reach", action="store_true", help="the reach study (3. above) instead of 1. and 2.")
    ap.add_argument("--variants", default="clause/one/1,clause/one/2,clause/two/1")
    ap.add_argument("--k", type=int, default=20, help="the reach study's K")
    args = ap.parse_args()
    if args.reach:
        variants = [(u, sc, int(n)) for u, sc, n in (v.split("/") for v in args.variants.split(","))]
        result = reach_study(args.model, args.split, args.k, variants)
        md = render_reach(result)
        write_result(args.out or RESULTS / f"splice_reach_{args.model}.md", md, result)
        print(md)
        return 0
    ks = [int(k) for k in args.ks.split(",")]
    started = time.perf_counter()
    info, analysis, table = cebab(args.model, args.split, ks)
    minfo, mtable = movies(ks)
    info["wall_s"] = round(time.perf_counter() - started, 1)
    md = render(info, analysis, table, minfo, mtable, ks)
    data = {"config": info, "analysis": analysis, "cebab": table, "movies": {"config": minfo, "rows": mtable}}
    write_result(args.out or RESULTS / "splice_multisentence.md", md, data)
    print(md)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
