"""Zero-label domains: built from raw texts and concept definitions by an LLM (CEBaB, movies).

    OMP_NUM_THREADS=1 nice python benchmarks/zero_label.py [--corpus cebab|movies] [--origins 40]
        [--dev-pairs 400] [--gguf ~/.cache/cace/models/SmolLM2-135M-Instruct.Q4_1.gguf]
        [--full-domain var/domains/cebab] [--check-texts 12]

`--corpus movies`: the templated movie corpus (`explainers.data.movies`) in place of CEBaB: its
labels and edits stripped from `--origins` reviews; dev pairs from a held-out movie corpus with
its (true) edits; the classifier is the movie rating model (TF-IDF + LR on 300 other reviews);
the full human domain is `--full-origins` reviews with labels and edits.

1. Take `--origins` original reviews of `train_inclusive` (seeded), strip every label and every
   edit, and build a domain with `explainers.domains.zero_label` against llama.cpp's OpenAI-
   compatible server (the only LLM this machine has: SmolLM2-135M-Instruct, CPU): the LLM labels
   the texts from `CEBAB_SCHEMA`'s definitions and writes the pairs within the budget.
2. Build a human-labelled domain from the *same* origins: the same originals plus their human
   edits, with the human labels (pairs from the edits), by the same `build_domain`.
3. LLM label accuracy per concept against the human labels of those originals.
4. Calibrate `auto` for tfidf-lr on each domain's own pairs, then score on a stratified subset of
   CEBaB dev pairs: both domains' `auto`, `splice`, `match`, `pair_transfer`, and the baselines
   computed with the human labels (on the human domain's pool); optionally the full human
   CEBaB domain's `auto` (`--full-domain`, a built domain folder) on the same pairs.
5. Cost: LLM calls, tokens and wall time per 1,000 texts for labelling and for edits.
6. Time estimate: each build's plan (the probe's estimate, and the one from the rates of
   previous builds stored with the cache) beside its real wall time; then a second, small
   build of `--check-texts` other texts planned with the rates the first one stored.

Writes benchmarks/results/zero_label.md (+ .json). Every LLM answer is cached
(`--cache`), so a re-run costs only the evaluation.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.harness.pairs import pool_pairs  # noqa: E402
from explainers.bench.runner import load_model, select_pairs  # noqa: E402
from explainers.classifiers.local import SklearnClassifier  # noqa: E402
from explainers.concepts import CEBAB_SCHEMA, ConceptSchema, Intervention  # noqa: E402
from explainers.data import movies  # noqa: E402
from explainers.data.cebab import build_pairs, load_split  # noqa: E402
from explainers.domains import (  # noqa: E402
    build_domain,
    load_domain,
    pool_from_rows,
    validate_rows,
    zero_label,  # noqa: E402
)
from explainers.embeddings import Encoder  # noqa: E402
from explainers.estimators.calibration_fit import calibrate  # noqa: E402
from explainers.generation.backends import OpenAIBackend  # noqa: E402
from explainers.generation.cache import GenerationCache  # noqa: E402
from explainers.generation.server import LlamaServer  # noqa: E402
from explainers.metrics import summarize  # noqa: E402
from explainers.registry import build_explainer  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results"
CACHE = Path(os.environ.get("CACE_CACHE_DIR", Path.home() / ".cache" / "cace"))
BASELINES = ("zero", "conexp", "approx_match", "s_learner")
OURS = ("match", "splice")
K = 10


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def evaluate(explainer, classifier, pairs, k: int = K) -> tuple[dict, float]:  # noqa: ANN001
    """Macro L2/Cos of one explainer on dev pairs (the true ICaCE is f(edit) - f(base))."""
    started = time.perf_counter()
    base = np.asarray(classifier.predict_proba([p.base.text for p in pairs]), float)
    edit = np.asarray(classifier.predict_proba([p.counterfactual.text for p in pairs]), float)
    est = []
    for p in pairs:
        labels = p.base.clean_labels()
        try:
            e = explainer.explain(
                p.base.text,
                Intervention(p.concept, p.target, p.source),
                classifier,
                top_k=k,
                base_labels=labels,
            )
            est.append(np.asarray(e.icace, float))
        except Exception:  # noqa: BLE001 - a method that cannot answer a cell counts as no effect
            est.append(np.zeros(base.shape[1]))
    s = summarize(np.array(est), edit - base, [p.concept for p in pairs], [p.direction for p in pairs])
    return {"l2": s.macro["l2"], "cos": s.macro["cos"]}, time.perf_counter() - started


@dataclass
class Corpus:
    name: str
    schema: Any
    raw_rows: list[dict[str, Any]]  # the zero-label build's input: texts only
    truth: list[dict[str, str]]  # the human labels of raw_rows, for the accuracy table
    human_rows: list[dict[str, Any]]  # the same origins with labels and human edits
    check_rows: list[dict[str, Any]]  # other raw texts, for the second (estimate-check) build
    dev: list[Any]
    classifier: Any
    clf_name: str
    full: Any = None  # the full human domain (built or loaded), or None
    notes: list[str] = field(default_factory=list)


def cebab(args: argparse.Namespace, encoder: Any, work: Path) -> Corpus:
    rng = np.random.default_rng(args.seed)
    train = load_split("train_inclusive")
    originals = [r for r in train if r.is_original]
    order = rng.permutation(len(originals)).tolist()
    subset = [originals[i] for i in sorted(order[: args.origins])]
    check = [originals[i] for i in sorted(order[args.origins : args.origins + args.check_texts])]
    ids = {r.original_id for r in subset}
    human_rows = validate_rows(
        [{"text": r.text, "labels": r.clean_labels(), "origin": r.original_id, "id": r.id}
         for r in train if r.original_id in ids]
    )  # fmt: skip
    classifier, name, _ = load_model(args.model, root=args.root)
    dev = select_pairs(build_pairs(load_split("dev")), args.dev_pairs or None, seed=args.seed)
    full = load_domain(args.full_domain, encoder=encoder) if args.full_domain else None
    return Corpus(
        "CEBaB", CEBAB_SCHEMA,
        [{"text": r.text, "labels": {}, "origin": r.original_id, "id": r.id} for r in subset],
        [r.clean_labels() for r in subset], human_rows,
        [{"text": r.text, "labels": {}, "id": r.id} for r in check], dev, classifier, name, full,
    )  # fmt: skip


def movie(args: argparse.Namespace, encoder: Any, work: Path) -> Corpus:
    schema = ConceptSchema.from_dict(movies.SCHEMA_DICT)
    rows = movies.movie_corpus(args.origins, edits=True, seed=args.seed, prefix="z")
    originals = [r for r in rows if r["id"].endswith("-0")]
    check = movies.movie_corpus(args.check_texts, edits=False, seed=args.seed + 1, prefix="c")
    dev_rows = movies.movie_corpus(args.dev_origins, edits=True, seed=args.seed + 2, prefix="d")
    dev_pool = pool_from_rows(
        validate_rows([{k: v for k, v in r.items() if k != "rating"} for r in dev_rows]), schema
    )
    dev = pool_pairs(dev_pool)
    dev = select_pairs(dev, args.dev_pairs or None, seed=args.seed)  # type: ignore[arg-type]
    pipeline = movies.train_rating_classifier(movies.movie_corpus(300, edits=False, seed=args.seed + 7))
    classifier = SklearnClassifier(pipeline, labels=["neg", "pos"], name="movie-rating")
    full = None
    if args.full_origins:
        full_rows = movies.movie_corpus(args.full_origins, edits=True, seed=args.seed + 3, prefix="f")
        full_pool = pool_from_rows(
            validate_rows([{k: v for k, v in r.items() if k != "rating"} for r in full_rows]), schema
        )
        full = build_domain(work, "human-full", full_pool, encoder=encoder)
    strip = ("rating",)
    return Corpus(
        "movies", schema,
        [{"text": r["text"], "labels": {}, "origin": r["origin"], "id": r["id"]} for r in originals],
        [r["labels"] for r in originals],
        validate_rows([{k: v for k, v in r.items() if k not in strip} for r in rows]),
        [{"text": r["text"], "labels": {}, "id": r["id"]} for r in check], dev, classifier, "movie-rating", full,
        [f"dev: {args.dev_origins} held-out movie reviews with one true edit per concept",
         "classifier: TF-IDF + LR rating model trained on 300 other reviews (no edits)"],
    )  # fmt: skip


def llm_build(
    rows: list[dict[str, Any]],
    schema: Any,
    backend: Any,
    options: Any,
    budget: int,
    cache: GenerationCache,
    llm_name: str,
) -> tuple[dict[str, Any], dict[str, Any], Any, float]:
    """Plan (the probe's estimate, and the stored rates' when there are some), then the LLM stages."""
    rates = zero_label.stored_rates(cache, backend)
    speed = zero_label.measure_speed(backend)
    probe_plan = zero_label.plan_build(rows, schema, options, budget=budget, speed=speed)
    plan = zero_label.plan_build(rows, schema, options, budget=budget, speed=speed, rates=rates)
    log(f"plan: {json.dumps(plan)}")
    t0 = time.perf_counter()
    result = zero_label.run(rows, schema, backend, options, plan, cache=cache, llm_name=llm_name,
                            log=log)  # fmt: skip
    return probe_plan, plan, result, time.perf_counter() - t0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--corpus", choices=("cebab", "movies"), default="cebab")
    ap.add_argument("--origins", type=int, default=40, help="original reviews in the domain")
    ap.add_argument("--dev-pairs", type=int, default=400, help="stratified dev pairs scored (0: all)")
    ap.add_argument("--dev-origins", type=int, default=100, help="movies: held-out reviews for dev pairs")
    ap.add_argument("--full-origins", type=int, default=100, help="movies: the full human domain's reviews")
    ap.add_argument("--check-texts", type=int, default=12, help="texts of the second, estimate-check build")
    ap.add_argument("--gguf", type=Path, default=CACHE / "models" / "SmolLM2-135M-Instruct.Q4_1.gguf")
    ap.add_argument("--llm-url", help="an OpenAI-compatible server instead of starting llama.cpp's")
    ap.add_argument("--llm-model", default="smollm2")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--port", type=int, default=9530, help="llama.cpp server port")
    ap.add_argument("--max-llm-calls", type=int, default=1500)
    ap.add_argument("--edits-per-direction", type=int, default=3)
    ap.add_argument("--concurrency", type=int, default=2)
    ap.add_argument("--model", default="tfidf-lr")
    ap.add_argument("--root", type=Path, default=Path(os.environ.get("CACE_TEST_DATA_DIR", "var")))
    ap.add_argument(
        "--full-domain", type=Path, help="cebab: a built human CEBaB domain folder to compare with"
    )
    ap.add_argument("--cache", type=Path, default=CACHE / "generations" / "zero-label-bench.sqlite")
    ap.add_argument("--out", type=Path)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    out = args.out or RESULTS / ("zero_label.md" if args.corpus == "cebab" else "zero_label_movies.md")

    encoder = Encoder()
    work = Path(tempfile.mkdtemp(prefix="zero-label-"))
    corpus = (cebab if args.corpus == "cebab" else movie)(args, encoder, work)
    schema, raw_rows, dev, classifier, name = (
        corpus.schema, corpus.raw_rows, corpus.dev, corpus.classifier, corpus.clf_name,
    )  # fmt: skip

    # 1. The zero-label domain, then a second, small build planned with the rates the first stored.
    options = zero_label.LLMBuildOptions(
        max_llm_calls=args.max_llm_calls, edits_per_direction=args.edits_per_direction,
        max_concurrency=args.concurrency, seed=args.seed,
    )  # fmt: skip
    check_options = zero_label.LLMBuildOptions(
        max_llm_calls=args.max_llm_calls, edits_per_direction=1, max_concurrency=args.concurrency, seed=args.seed,
    )  # fmt: skip
    args.cache.parent.mkdir(parents=True, exist_ok=True)
    cache = GenerationCache(args.cache)
    server = None
    if args.llm_url is None:
        server = LlamaServer(
            args.gguf, port=args.port, n_threads=args.threads, n_ctx=4096, log=work / "llama.log"
        ).start()
    url = args.llm_url or server.base_url  # type: ignore[union-attr]
    estimates = []
    try:
        backend = OpenAIBackend(url, args.llm_model, timeout_s=300)
        probe_plan, plan, result, llm_s = llm_build(
            raw_rows, schema, backend, options, args.max_llm_calls, cache, args.llm_model
        )
        estimates.append(("main", len(raw_rows), probe_plan, plan, llm_s))
        if args.check_texts:
            c_probe, c_plan, _, c_s = llm_build(corpus.check_rows, schema, backend, check_options,
                                                args.max_llm_calls, cache, args.llm_model)  # fmt: skip
            estimates.append(("check", len(corpus.check_rows), c_probe, c_plan, c_s))
    finally:
        if server is not None:
            server.stop()
    t0 = time.perf_counter()
    zl = build_domain(work, "zero-label", result.pool, encoder=encoder, source="zero-label bench",
                      taggers_builder=result.taggers_builder, finish=result.finish)  # fmt: skip
    zl_build_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    human = build_domain(work, "human", pool_from_rows(corpus.human_rows, schema), encoder=encoder)
    human_build_s = time.perf_counter() - t0
    report = zl.meta["llm_build"]

    # 3. LLM label accuracy on the originals, against their human labels.
    prov = [json.loads(x) for x in (zl.directory / "provenance.jsonl").read_text().splitlines()]
    llm_label_of = {zl.pool.texts[i]: zl.pool.labels[i] for i, p in enumerate(prov) if p["text"] == "corpus"}
    accuracy = {}
    for c in schema.names:
        truth = [t[c] for t in corpus.truth]
        got = [llm_label_of[r["text"]][c] for r in raw_rows]
        majority = max(truth.count(v) for v in set(truth)) / len(truth)
        accuracy[c] = {"accuracy": round(float(np.mean([a == b for a, b in zip(got, truth, strict=True)])), 4),
                       "majority_rate": round(majority, 4),
                       "llm_values": {v: got.count(v) for v in sorted(set(got))}}  # fmt: skip

    # 4. Faithfulness on dev.
    table: dict[str, dict] = {}
    domains = {"zero-label": zl, "human-subset": human}
    if corpus.full is not None:
        domains["human-full"] = corpus.full
    cal_cost = {}
    unbuilt: dict[str, str] = {}
    for label, dom in domains.items():
        res = dom.resources(encoder=encoder)
        if dom.pool.pairs:
            t0 = time.perf_counter()
            cal = calibrate(classifier, dom.pool, dom.space, encoder, taggers=dom.taggers, classifier_name=name,
                            max_pairs=2000, log=log)  # fmt: skip
            cal_cost[label] = {"seconds": round(time.perf_counter() - t0, 1), "heldout_pairs":
                               cal.meta["protocol"]["heldout_pairs"]}  # fmt: skip
            res.extra["calibration"] = cal
        else:  # no pair to calibrate on: `auto` answers with its uncalibrated default (it says so)
            log(f"{label}: no pairs, no calibration")
            cal_cost[label] = {"seconds": 0, "heldout_pairs": 0, "note": "no pairs: auto uncalibrated"}
        methods = ("auto", *OURS) if label != "human-full" else ("auto",)
        for m in methods:
            try:
                explainer = build_explainer(m, res)
            except Exception as e:  # noqa: BLE001 - a method this domain cannot build is reported, not fatal
                log(f"{label}:{m} cannot be built: {e}")
                unbuilt[f"{label}:{m}"] = str(e)
                continue
            table[f"{label}:{m}"], secs = evaluate(explainer, classifier, dev)
            log(f"{label}:{m} {table[f'{label}:{m}']} {secs:.0f}s")
    res = human.resources(encoder=encoder)
    for m in BASELINES:
        table[f"baseline:{m}"], secs = evaluate(build_explainer(m, res), classifier, dev)
        log(f"baseline:{m} {table[f'baseline:{m}']} {secs:.0f}s")

    # 5. Write.
    lab, pairs_r = report["labelling"], report["pairs"]
    n = len(raw_rows)

    def per_k(x: float) -> str:
        return f"{1000 * x / n:,.0f}"

    best = {m: min((v[m], k) for k, v in table.items() if k.startswith("baseline:")) for m in ("l2", "cos")}
    cmd = (f"`benchmarks/zero_label.py --corpus {args.corpus} --origins {args.origins} --dev-pairs {args.dev_pairs} "
           f"--max-llm-calls {args.max_llm_calls} --edits-per-direction {args.edits_per_direction} "
           f"--check-texts {args.check_texts}`")  # fmt: skip
    lines = [
        f"# Zero-label {corpus.name}: a domain from raw texts and concept definitions",
        "",
        f"{cmd}. {n} original reviews (seeded), every label and edit removed; only the schema's "
        f"definitions. LLM: {args.llm_model} ({'SmolLM2-135M-Instruct Q4_1 on llama.cpp' if args.llm_url is None else args.llm_url}), "
        f"{args.threads} threads on a shared 2-core CPU (concurrency {args.concurrency}). LLM stages {llm_s:.0f} s; "
        f"domain build (taggers, space) {zl_build_s:.0f} s; the human-labelled subset domain ({len(human.pool)} "
        f"texts, {len(human.pool.pairs)} pairs) {human_build_s:.0f} s. Classifier: {name}. Dev: {len(dev)} pairs "
        f"stratified over (concept, direction){' (all)' if not args.dev_pairs else ''}.",
        *([""] + [f"- {x}" for x in corpus.notes] if corpus.notes else []),
        "",
        "## LLM label accuracy (the originals, against their human labels)",
        "",
        "| concept | LLM accuracy | majority rate | LLM values | tagger agreement with LLM (held out) | usable |",
        "|---|---|---|---|---|---|",
    ]
    for c in schema.names:
        t = zl.meta["taggers"][c]
        lines.append(f"| {c} | {accuracy[c]['accuracy']} | {accuracy[c]['majority_rate']} | "
                     f"{accuracy[c]['llm_values']} | {t.get('agreement_with_llm')} | {t['usable']} |")  # fmt: skip
    lines += [
        "",
        "Mean label confidence: "
        + ", ".join(f"{c} {lab['per_concept'][c]['mean_confidence']}" for c in schema.names)
        + f"; scored by {lab['scored_by']}.",
        "",
        "## LLM pairs",
        "",
        f"Planned {pairs_r['planned_edits']} edits ({args.edits_per_direction} per direction), kept "
        f"{pairs_r['kept_edits']} ({pairs_r['one_sentence_edits']} one-sentence); rejections: {pairs_r['rejections']}.",
        f"Provenance: {zl.meta['provenance']}.",
        "",
        f"## Faithfulness on dev ({name}, K={K}, macro)",
        "",
        "| domain:method | L2 | Cos |",
        "|---|---|---|",
    ]
    for k, v in table.items():
        lines.append(f"| {k} | {v['l2']:.4f} | {v['cos']:.4f} |")
    for k, why in unbuilt.items():
        lines.append(f"| {k} | n/a | n/a ({why}) |")
    lines.append("")
    lines.append(
        f"Best baseline (human labels): L2 {best['l2'][1]} {best['l2'][0]:.4f}, Cos {best['cos'][1]} {best['cos'][0]:.4f}."
    )
    for target in ("zero-label:auto", "human-subset:auto", "human-full:auto"):
        if target in table:
            v = table[target]
            lines.append(
                f"{target}: L2 {100 * (v['l2'] - best['l2'][0]) / best['l2'][0]:+.1f}% / Cos "
                f"{100 * (v['cos'] - best['cos'][0]) / best['cos'][0]:+.1f}% vs the best baseline."
            )
    for ref in ("human-subset:auto", "human-full:auto"):
        if "zero-label:auto" in table and ref in table:
            z, h = table["zero-label:auto"], table[ref]
            lines.append(f"zero-label auto vs {ref}: L2 {100 * (z['l2'] - h['l2']) / h['l2']:+.1f}%, "
                         f"Cos {100 * (z['cos'] - h['cos']) / h['cos']:+.1f}% (target: within 10%).")  # fmt: skip
    lines += [
        "",
        "## Cost (per 1,000 texts)",
        "",
        "| stage | LLM calls | prompt tokens | completion tokens | LLM wall time |",
        "|---|---|---|---|---|",
        f"| labels ({len(schema.names)} concepts) | {per_k(lab['llm_calls'] + lab['cached_llm_calls'])} | "
        f"{per_k(lab['prompt_tokens'])} | {per_k(lab['completion_tokens'])} | {per_k(lab['wall_s'])} s |",
        f"| edits ({pairs_r['planned_edits']} planned, with checks) | {per_k(pairs_r['llm_calls'] + pairs_r['cached_llm_calls'])} | "
        f"{per_k(pairs_r['prompt_tokens'])} | {per_k(pairs_r['completion_tokens'])} | {per_k(pairs_r['wall_s'])} s |",
        "",
        f"Tokens of cached answers count 0 in a re-run (cache hits {lab['cache_hits']} labels, "
        f"{pairs_r['cache_hits']} edits); calibrations: {cal_cost}.",
        "",
        "## Time estimate vs actual (LLM stages)",
        "",
        "| build | texts | plan calls | probe estimate | estimate used (from) | actual | used / actual |",
        "|---|---|---|---|---|---|---|",
    ]
    for what, n_texts, p_plan, u_plan, actual in estimates:
        used = u_plan["estimated_seconds"]
        lines.append(
            f"| {what} | {n_texts} | {u_plan['llm_calls']} | {p_plan['estimated_seconds']} s | {used} s "
            f"({(u_plan.get('estimated') or {}).get('from')}) | {actual:.0f} s | {used / actual:.2f} |"
        )
    lines += [
        "",
        f"Probe speed: {plan.get('speed')}. Rates stored after the builds: "
        f"{zero_label.stored_rates(cache, backend)}.",
    ]
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("\n".join(lines) + "\n")
    out.with_suffix(".json").write_text(json.dumps(
        {"plan": plan, "accuracy": accuracy, "table": table, "llm_build": report, "calibration": cal_cost,
         "provenance": zl.meta["provenance"], "taggers": zl.meta["taggers"],
         "estimates": [{"build": w, "texts": t, "probe_plan": p, "plan": u, "actual_s": round(a, 1)}
                       for w, t, p, u, a in estimates]}, indent=1, default=str))  # fmt: skip
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
