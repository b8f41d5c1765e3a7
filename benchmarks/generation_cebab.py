"""Benchmark the generate explainer on a stratified CEBaB dev subset, beside baselines.

Phase 1 (slow, resumable): for each pair, ask the LLM for K verified counterfactuals of
the base text. Generations are cached in SQLite and every pair's result is appended to a
JSONL log, so an interrupted run resumes where it stopped and re-scoring is cheap.
Phase 2 (fast): score the kept counterfactuals with each reference classifier, compare
the ICaCE errors with the baselines the bench runner offers on the same pairs, and write
a markdown table (plus JSON) naming the LLM, keep rate, rejection reasons and cost.

    python -m benchmarks.generation_cebab --limit 200 --k 3           # starts llama.cpp's server
    python -m benchmarks.generation_cebab --base-url http://host/v1 --llm-model NAME
"""

from __future__ import annotations

import argparse
import json
import os
import time
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.harness import RESULTS, ROOT
from explainers.bench.runner import load_bench_pairs, load_model, true_icaces
from explainers.concepts import CEBAB_SCHEMA, Intervention
from explainers.data.cebab import Pair, split_path
from explainers.estimate import icace_from_predictions
from explainers.generation.backends import OpenAIBackend
from explainers.generation.cache import GenerationCache
from explainers.generation.explainer import GenerationExplainer
from explainers.generation.prompts import PromptBuilder, fewshot_from_cebab
from explainers.generation.server import LlamaServer
from explainers.metrics import summarize

CACHE = Path(os.environ.get("CACE_CACHE_DIR", Path.home() / ".cache" / "cace"))
QWEN = CACHE / "models" / "qwen2.5-coder-1.5b-instruct-q4_k_m.gguf"
QWEN_NAME = "Qwen2.5-Coder-1.5B-Instruct Q4_K_M (llama.cpp server, CPU)"


def pair_key(p: Pair) -> str:
    return f"{p.base.id}->{p.counterfactual.id}:{p.concept}"


def interleaved(pairs: list[Pair], seed: int) -> list[Pair]:
    """Round-robin over (concept, direction) cells, shuffled within each, so any prefix stays stratified.

    Generation on a shared CPU may not finish all pairs in time; scoring a prefix of this
    order still covers every concept and direction in proportion.
    """
    rng = np.random.default_rng(seed)
    cells: dict[tuple[str, str], list[Pair]] = {}
    for p in pairs:
        cells.setdefault((p.concept, p.direction), []).append(p)
    queues = {k: [v[i] for i in rng.permutation(len(v))] for k, v in sorted(cells.items())}
    sizes = {k: len(v) for k, v in queues.items()}
    out: list[Pair] = []
    taken = dict.fromkeys(queues, 0)
    while len(out) < len(pairs):
        # next from the cell furthest behind its share
        k = min((k for k in queues if taken[k] < sizes[k]), key=lambda k: (taken[k] + 1) / sizes[k])
        out.append(queues[k][taken[k]])
        taken[k] += 1
    return out


def generate_phase(
    args: argparse.Namespace, pairs: list[Pair], backend: OpenAIBackend, llm_name: str
) -> None:
    taggers = None
    if not args.no_taggers:
        from explainers.taggers import TaggerSet, ensure_taggers

        taggers = TaggerSet.load(ensure_taggers(Path(args.root)))
    fewshot = fewshot_from_cebab(split_path(args.fewshot_split), CEBAB_SCHEMA, per_concept=2, seed=args.seed)
    explainer = GenerationExplainer(
        backend,
        CEBAB_SCHEMA,
        prompts=PromptBuilder(CEBAB_SCHEMA, fewshot, max_examples=args.shots),
        taggers=taggers,
        cache=GenerationCache(args.cache),
        temperature=args.temperature,
        max_tokens=args.max_tokens,
        budget_factor=args.budget_factor,
        max_rounds=args.max_rounds,
        max_concurrency=args.concurrency,
        seed=args.seed,
    )
    done = {json.loads(line)["key"] for line in open(args.log)} if Path(args.log).exists() else set()
    started = time.perf_counter()
    with open(args.log, "a") as log:
        for i, p in enumerate(pairs):
            if pair_key(p) in done:
                continue
            t0 = time.perf_counter()
            cfs, details = explainer.counterfactuals(
                p.base.text,
                Intervention(p.concept, p.target, p.source),
                args.k,
                base_labels=p.base.clean_labels(),
            )
            cost = details.pop("cost")
            rec = {
                "key": pair_key(p),
                "llm": llm_name,
                "k": args.k,
                "concept": p.concept,
                "direction": p.direction,
                "counterfactuals": [c.text for c in cfs],
                "details": details,
                "cost": cost.__dict__,
                "seconds": round(time.perf_counter() - t0, 2),
            }
            log.write(json.dumps(rec) + "\n")
            log.flush()
            rej = details["rejections"]
            print(
                f"[{i + 1}/{len(pairs)}] {p.concept} {p.direction}: kept {details['kept']}/{args.k} "
                f"rej={rej} {rec['seconds']}s (elapsed {time.perf_counter() - started:.0f}s)",
                flush=True,
            )
    explainer.close()


def load_log(path: Path, pairs: list[Pair]) -> list[dict[str, Any]]:
    recs = {}
    for line in open(path):
        r = json.loads(line)
        recs[r["key"]] = r
    return [recs[pair_key(p)] for p in pairs if pair_key(p) in recs]


def tagger_filter(recs: list[dict[str, Any]], pairs: list[Pair], taggers: Any) -> list[dict[str, Any]]:
    """Keep only counterfactuals the tagger puts at the target value (the explainer's tagger check, post hoc).

    Generation ran with text checks only, so the same cached samples can be scored with and
    without the tagger check; rejected samples are not regenerated here.
    """
    texts = list(dict.fromkeys(t for r in recs for t in r["counterfactuals"]))
    tags = dict(zip(texts, taggers.predict(texts), strict=True)) if texts else {}
    out = []
    for p, r in zip(pairs, recs, strict=True):
        kept = [t for t in r["counterfactuals"] if tags[t].get(p.concept) == p.target]
        out.append({**r, "counterfactuals": kept, "tag_rejected": len(r["counterfactuals"]) - len(kept)})
    return out


def generation_estimates(recs: list[dict[str, Any]], pairs: list[Pair], clf: Any) -> np.ndarray:
    """The ICaCE `GenerationExplainer.explain` gives: mean prediction of kept texts minus the base's."""
    texts = list(
        dict.fromkeys([p.base.text for p in pairs] + [t for r in recs for t in r["counterfactuals"]])
    )
    proba = dict(zip(texts, np.asarray(clf.predict_proba(texts), float), strict=True))
    out = np.zeros((len(pairs), len(clf.labels)))
    for i, (p, r) in enumerate(zip(pairs, recs, strict=True)):
        preds = np.array([proba[t] for t in r["counterfactuals"]]).reshape(-1, len(clf.labels))
        out[i] = icace_from_predictions(proba[p.base.text], preds).icace
    return out


def stats_lines(recs: list[dict[str, Any]], k: int) -> list[str]:
    n = len(recs)
    kept = sum(r["details"]["kept"] for r in recs)
    generated = sum(r["details"]["generated"] for r in recs)
    rej: Counter[str] = Counter()
    for r in recs:
        rej.update(r["details"]["rejections"])
    full = sum(r["details"]["kept"] >= k for r in recs)
    none = sum(r["details"]["kept"] == 0 for r in recs)

    def mean(f: str) -> float:
        # Cached calls carry their original cost, so a resumed run reports the real price.
        vals = []
        for r in recs:
            c, cc = r["cost"], r["details"].get("cached_cost", {})
            vals.append(c.get(f, 0) + cc.get(f, 0))
        return float(np.mean(vals))

    llm_s = np.mean(
        [
            r["cost"]["wall_time_s"]
            if not r["details"].get("cache_hits")
            else r["details"]["cached_cost"].get("llm_time_s", 0) + r["cost"]["wall_time_s"]
            for r in recs
        ]
    )
    lines = [
        f"- keep rate: {kept}/{n * k} requested counterfactuals kept ({kept / max(n * k, 1):.1%}); "
        f"{kept}/{generated} generated samples passed verification ({kept / max(generated, 1):.1%}); "
        f"{full}/{n} pairs got all K, {none}/{n} got none (their estimate is zero)",
        "- rejections (samples): " + ", ".join(f"{k_}={v}" for k_, v in rej.most_common()),
        f"- cost per explanation (mean over pairs, generation only): {mean('llm_calls'):.2f} LLM calls, "
        f"{mean('prompt_tokens'):.0f} prompt + {mean('completion_tokens'):.0f} completion tokens, "
        f"{llm_s:.1f} s wall (CPU, 2 shared cores); classifier: 1 call of K+1 texts",
    ]
    by_concept: dict[str, list[int]] = {}
    for r in recs:
        by_concept.setdefault(r["concept"], []).append(r["details"]["kept"])
    lines.append(
        "- kept per concept: "
        + ", ".join(f"{c} {sum(v)}/{len(v) * k}" for c, v in sorted(by_concept.items()))
    )
    return lines


def row(name: str, k: int, s: Any) -> str:
    cells = [
        name,
        str(k),
        s.micro["l2"],
        s.micro["cos"],
        s.micro["normdiff"],
        s.macro["l2"],
        s.macro["cos"],
        s.macro["normdiff"],
    ]
    return "| " + " | ".join(c if isinstance(c, str) else f"{c:.4f}" for c in cells) + " |"


def bench_resources(args: argparse.Namespace, pairs: list[Pair]) -> Any:
    """The bench runner's resources (train pool without the pairs' texts), plus a trained space if given."""
    from explainers.bench.runner import benchmark_texts, build_bench_resources

    resources = build_bench_resources(seed=args.seed, exclude_texts=benchmark_texts(pairs))
    if args.space and Path(args.space).exists():
        from explainers.matching.cebab import without_texts
        from explainers.matching.space import ConceptSpace

        space = ConceptSpace.load(Path(args.space), encoder=resources.encoder)
        keep = set(resources.pool.texts)
        resources.space = without_texts(space, [t for t in space.pool.texts if t not in keep])
    return resources


def score_phase(args: argparse.Namespace, pairs: list[Pair], llm_name: str) -> str:
    from explainers.bench.runner import run_benchmark

    planned = len(pairs)
    recs = load_log(Path(args.log), pairs)
    done = {r["key"] for r in recs}
    pairs = [p for p in pairs if pair_key(p) in done]
    recs = load_log(Path(args.log), pairs)
    if not pairs:
        raise SystemExit("no pairs have generations yet; run the generate phase first")
    partial = "" if len(pairs) == planned else f" (of {planned} planned: generation did not finish in time)"
    out = [
        f"# Generate explainer on CEBaB {Path(str(args.split)).stem}: {len(pairs)} pairs{partial}",
        "",
        f"- LLM: {llm_name}; K={args.k}, temperature {args.temperature}, max_tokens {args.max_tokens}, "
        f"sample budget {args.budget_factor}xK in at most {args.max_rounds} rounds; "
        f"{args.shots}-shot prompts from CEBaB {args.fewshot_split} (never dev)",
        f"- pairs: stratified over (concept, direction), seed {args.seed}; verification: text checks"
        + ("" if args.no_taggers else " + CEBaB concept taggers (treated concept must reach the target)"),
        *stats_lines(recs, args.k),
        "- errors as CEBaB defines them (see explainers/metrics.py); micro = mean over pairs, macro = over"
        " (concept, direction) cells; baselines from the bench runner on the same pairs and K",
        "",
    ]
    tagged = None
    if args.taggers and Path(args.taggers).exists():
        from explainers.taggers import TaggerSet

        tagged = tagger_filter(recs, pairs, TaggerSet.load(Path(args.taggers)))
        n_kept = sum(len(r["counterfactuals"]) for r in tagged)
        n_rej = sum(r["tag_rejected"] for r in tagged)
        out.insert(
            -2,
            f"- tagger check ({args.taggers}), applied after generation: {n_rej} more samples rejected as "
            f"concept_not_reached, {n_kept} kept; {sum(not r['counterfactuals'] for r in tagged)}/"
            f"{len(pairs)} pairs left with none (estimate zero)",
        )
    head = "| method | K | L2 micro | Cos micro | ND micro | L2 macro | Cos macro | ND macro |"
    resources = None
    for model in args.classifiers.split(","):
        try:
            clf, name, _ = load_model(model, args.root)
        except (FileNotFoundError, OSError) as e:
            out += [f"## {model}", "", f"not scored: {e}", ""]
            continue
        truths = true_icaces(pairs, clf)
        concepts, directions = [p.concept for p in pairs], [p.direction for p in pairs]
        est = generation_estimates(recs, pairs, clf)
        lines = [f"## classifier {name}", "", head, "|" + "---|" * 8]
        lines.append(row("generate (text checks)", args.k, summarize(est, truths, concepts, directions)))
        if tagged is not None:
            est_t = generation_estimates(tagged, pairs, clf)
            lines.append(
                row("generate (text checks + tagger)", args.k, summarize(est_t, truths, concepts, directions))
            )
        some = [i for i, r in enumerate(recs) if r["details"]["kept"] > 0]
        if some and len(some) < len(pairs):
            s = summarize(est[some], truths[some], [concepts[i] for i in some], [directions[i] for i in some])
            lines.append(row(f"generate (only the {len(some)} pairs with >=1 kept)", args.k, s))
        if model not in args.baseline_classifiers.split(","):
            zero = np.zeros_like(truths)
            lines.append(row("zero", args.k, summarize(zero, truths, concepts, directions)))
        elif args.baselines:
            if resources is None:
                resources = bench_resources(args, pairs)
            res = run_benchmark(clf, pairs, resources, args.baselines.split(","), [args.k])
            lines += [row(r.explainer, r.k, r.summary) for r in res.rows]
            lines += [f"- `{n}` not run: {e}" for n, e in res.errors.items()]
        out += lines + [""]
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("phase", choices=["generate", "score", "all"], nargs="?", default="all")
    ap.add_argument("--split", default="dev")
    ap.add_argument("--limit", type=int, default=200)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--k", type=int, default=3)
    ap.add_argument("--temperature", type=float, default=0.7)
    ap.add_argument("--max-tokens", type=int, default=120)
    ap.add_argument("--budget-factor", type=float, default=2.0)
    ap.add_argument("--max-rounds", type=int, default=2)
    ap.add_argument("--shots", type=int, default=2)
    ap.add_argument("--concurrency", type=int, default=1)
    ap.add_argument(
        "--threads", type=int, default=1, help="llama.cpp threads (1 is faster on an oversubscribed CPU)"
    )
    ap.add_argument("--fewshot-split", default="train_inclusive")
    ap.add_argument("--no-taggers", action="store_true", help="generate with text checks only")
    ap.add_argument("--taggers", default=None, help="score also with this TaggerSet's check applied post hoc")
    ap.add_argument("--gguf", type=Path, default=QWEN)
    ap.add_argument("--base-url", default=None, help="use a running OpenAI-compatible server instead")
    ap.add_argument("--llm-model", default=None)
    ap.add_argument("--llm-name", default=None, help="how the table names the LLM")
    ap.add_argument("--root", default="var")
    ap.add_argument("--cache", type=Path, default=ROOT / "var" / "generation" / "cache.sqlite")
    ap.add_argument("--log", type=Path, default=ROOT / "var" / "generation" / "bench_log.jsonl")
    ap.add_argument(
        "--baseline-classifiers",
        default="tfidf-lr",
        help="classifiers to run the baselines for (they score the whole pool: slow for transformers)",
    )
    ap.add_argument(
        "--space", default="var/spaces/cebab-train_inclusive-head", help="concept space for match"
    )
    ap.add_argument("--classifiers", default="tfidf-lr,var/classifiers/minilm-ft")
    ap.add_argument("--baselines", default="zero,random_matching,approx,conexp,pt_match,match")
    ap.add_argument("--out", type=Path, default=RESULTS / "generation_cebab_dev.md")
    args = ap.parse_args(argv)
    args.log.parent.mkdir(parents=True, exist_ok=True)
    pairs = interleaved(load_bench_pairs(args.split, limit=args.limit, seed=args.seed), args.seed)
    llm_name = args.llm_name or (args.llm_model if args.base_url else QWEN_NAME)
    if args.phase in ("generate", "all"):
        if args.base_url:
            generate_phase(
                args,
                pairs,
                OpenAIBackend(args.base_url, args.llm_model or "default", timeout_s=600),
                llm_name,
            )
        else:
            with LlamaServer(
                args.gguf, n_ctx=2048, n_threads=args.threads, log=args.log.with_suffix(".server.log")
            ) as srv:
                backend = OpenAIBackend(srv.base_url, args.gguf.stem, timeout_s=600, max_retries=1)
                generate_phase(args, pairs, backend, llm_name)
    if args.phase in ("score", "all"):
        text = score_phase(args, pairs, llm_name)
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text + "\n", encoding="utf-8")
        print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
