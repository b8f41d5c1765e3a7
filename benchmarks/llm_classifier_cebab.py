"""Explain a prompted LLM classifier: Qwen2.5-Coder-1.5B zero-shot as a 5-way CEBaB rating classifier.

The paper explains zero-shot Llama-2 beside fine-tuned models; this is the CPU-sized
analogue. The classifier is the service's `openai-chat` adapter (logprobs scoring over the
labels "1".."5" at the answer position) talking to llama.cpp's OpenAI-compatible server.

1. dev accuracy on a subset of dev texts stratified by review_majority;
2. faithfulness (CEBaB L2 / Cos / NormDiff, micro and macro, via explainers.bench.runner)
   on a stratified subset of dev pairs, for baselines (zero, random_matching, approx_match,
   conexp, s_learner), `match`, `pair_transfer`, the stack (match + pair_transfer +
   s_learner, weights cross-fit over 2 folds by original_id, as matching_faithfulness.py
   does) and `generate` (Qwen's own counterfactuals from generation_cebab.py's run, read
   from benchmarks/results/generation_cebab_dev_samples.jsonl, re-scored by this classifier).

Every LLM prediction is cached on disk (var/llm_classifier/predictions.json), so a rerun
only scores what is new. conexp and s_learner need the classifier on every pool text, which
an LLM on 2 shared cores cannot afford: they get a random pool subset (size in the table);
the matching methods search the full pool and only score the K texts they pick.

    OMP_NUM_THREADS=1 nice python -m benchmarks.llm_classifier_cebab --acc-n 150 --pairs 80 --k 5
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.harness import RESULTS, ROOT
from explainers.bench import runner
from explainers.classifiers.spec import build_classifier
from explainers.classifiers.usage import LLMUsage, metered
from explainers.data.cebab import Pair, load_split
from explainers.estimate import icace_from_predictions
from explainers.generation.server import LlamaServer
from explainers.registry import build_explainer

CACHE = Path(os.environ.get("CACE_CACHE_DIR", Path.home() / ".cache" / "cace"))
QWEN = CACHE / "models" / "qwen2.5-coder-1.5b-instruct-q4_k_m.gguf"
QWEN_NAME = "Qwen2.5-Coder-1.5B-Instruct Q4_K_M (llama.cpp server, CPU)"
LABELS = ["1", "2", "3", "4", "5"]
# Instructions first, review last: llama.cpp reuses the shared prompt prefix between requests.
PROMPT = (
    "Rate the restaurant review below from 1 (very negative) to 5 (very positive). "
    "Answer with a single digit: {labels}.\n\nReview: {text}"
)
SAMPLES = RESULTS / "generation_cebab_dev_samples.jsonl"


class DiskCachedClassifier:
    """The LLM classifier behind a JSON file of rows keyed by text; counts what it actually asked the LLM."""

    def __init__(self, inner: Any, path: Path) -> None:
        self.inner = inner
        self.path = path
        self.rows: dict[str, list[float]] = json.loads(path.read_text()) if path.exists() else {}
        self.usage = LLMUsage()
        self.scored = 0
        self.llm_s = 0.0

    @property
    def labels(self) -> list[str]:
        return list(self.inner.labels)

    def predict_proba(self, texts: Sequence[str]) -> np.ndarray:
        todo = [t for t in dict.fromkeys(texts) if t not in self.rows]
        for i in range(0, len(todo), 8):  # save every few predictions: an interrupted run resumes
            chunk = todo[i : i + 8]
            started = time.perf_counter()
            with metered() as usage:
                proba = self.inner.predict_proba(chunk)
            self.llm_s += time.perf_counter() - started
            self.scored += len(chunk)
            self.usage.add(
                calls=usage.calls,
                prompt_tokens=usage.prompt_tokens,
                completion_tokens=usage.completion_tokens,
            )
            self.rows.update({t: [float(x) for x in row] for t, row in zip(chunk, proba, strict=True)})
            self.path.parent.mkdir(parents=True, exist_ok=True)
            tmp = self.path.with_suffix(".tmp")
            tmp.write_text(json.dumps(self.rows))
            tmp.replace(self.path)
        return np.array([self.rows[t] for t in texts], dtype=np.float64).reshape(len(texts), len(self.labels))


def stratified_texts(n: int, seed: int) -> list[tuple[str, int]]:
    """n dev texts with a majority rating, an equal share per rating (seeded)."""
    by_rating: dict[int, list[str]] = defaultdict(list)
    for r in load_split("dev"):
        if r.rating is not None:
            by_rating[r.rating].append(r.text)
    rng = np.random.default_rng(seed)
    out: list[tuple[str, int]] = []
    for rating in sorted(by_rating):
        texts = sorted(set(by_rating[rating]))
        out += [(texts[i], rating) for i in rng.permutation(len(texts))[: n // len(by_rating)]]
    return out


def accuracy_lines(clf: DiskCachedClassifier, n: int, seed: int) -> tuple[list[str], float]:
    data = stratified_texts(n, seed)
    proba = clf.predict_proba([t for t, _ in data])
    gold = np.array([r for _, r in data])
    pred = proba.argmax(axis=1) + 1
    acc = float((pred == gold).mean())
    within1 = float((np.abs(pred - gold) <= 1).mean())
    per = {r: float((pred[gold == r] == r).mean()) for r in range(1, 6)}
    counts = {r: int((pred == r).sum()) for r in range(1, 6)}
    p_gold = float(proba[np.arange(len(gold)), gold - 1].mean())
    return [
        f"- dev accuracy (5-way, argmax): **{acc:.3f}** on {len(data)} dev texts stratified by review_majority "
        f"({len(data) // 5} per rating, seed {seed}); within one star {within1:.3f}; mean p(gold) {p_gold:.3f}",
        f"- recall per rating: {', '.join(f'{r}: {v:.2f}' for r, v in per.items())}; "
        f"predicted counts: {counts}",
    ], acc


def pair_key(p: Pair) -> str:
    return f"{p.base.id}->{p.counterfactual.id}:{p.concept}"


def generate_estimates(pairs: Sequence[Pair], clf: DiskCachedClassifier) -> tuple[np.ndarray, list[int], int]:
    """ICaCE from Qwen's cached counterfactuals of generation_cebab.py (zero where it kept none)."""
    recs = {}
    if SAMPLES.exists():
        for line in SAMPLES.read_text().splitlines():
            r = json.loads(line)
            recs[r["key"]] = r
    have = [i for i, p in enumerate(pairs) if pair_key(p) in recs]
    est = np.zeros((len(pairs), len(LABELS)))
    k = 0
    for i in have:
        r = recs[pair_key(pairs[i])]
        k = max(k, int(r["k"]))
        cfs = r["counterfactuals"]
        preds = clf.predict_proba([pairs[i].base.text] + cfs)
        est[i] = icace_from_predictions(preds[0], preds[1:]).icace
    return est, have, k


def subset_pool(resources: Any, size: int, seed: int) -> Any:
    """The resources with a random pool subset (for methods that score the whole pool)."""
    pool = resources.pool
    keep = sorted(np.random.default_rng(seed).permutation(len(pool))[:size].tolist())
    sub = replace(pool.subset(keep), pairs=[])
    return replace(resources, pool=sub, space=None, extra=dict(resources.extra))


def row(
    name: str, k: int | str, est: np.ndarray, truths: np.ndarray, pairs: Sequence[Pair], note: str = ""
) -> str:
    from explainers.metrics import summarize

    s = summarize(est, truths, [p.concept for p in pairs], [p.direction for p in pairs])
    cells = [
        f"{s.macro['l2']:.4f}",
        f"{s.macro['cos']:.4f}",
        f"{s.macro['normdiff']:.4f}",
        f"{s.micro['l2']:.4f}",
        f"{s.micro['cos']:.4f}",
        f"{s.micro['normdiff']:.4f}",
    ]
    return f"| {name} | {k} | " + " | ".join(cells) + f" | {note} |"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--acc-n", type=int, default=150)
    ap.add_argument("--pairs", type=int, default=80)
    ap.add_argument("--k", type=int, default=5)
    ap.add_argument("--small-pool", type=int, default=300, help="pool subset for conexp and s_learner")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1, help="llama.cpp threads (1 is faster on a busy CPU)")
    ap.add_argument(
        "--root", type=Path, default=ROOT / "var" / "test", help="where the CEBaB concept space is"
    )
    ap.add_argument("--gguf", type=Path, default=QWEN)
    ap.add_argument("--base-url", default=None, help="use a running OpenAI-compatible server instead")
    ap.add_argument("--cache", type=Path, default=ROOT / "var" / "llm_classifier" / "predictions.json")
    ap.add_argument(
        "--methods", default="zero,random_matching,approx_match,conexp,s_learner,match,pair_transfer"
    )
    ap.add_argument(
        "--stack",
        default="match,pair_transfer,s_learner",
        help="methods a stack combines (those that ran); several stacks separated by ';'",
    )
    ap.add_argument("--no-generate", action="store_true")
    ap.add_argument("--out", type=Path, default=RESULTS / "llm_classifier_cebab.md")
    args = ap.parse_args(argv)
    started = time.perf_counter()
    if args.base_url:
        return run(args, args.base_url, started)
    with LlamaServer(
        args.gguf, n_ctx=2048, n_threads=args.threads, log=args.cache.with_name("server.log")
    ) as srv:
        return run(args, srv.base_url, started)


def run(args: argparse.Namespace, base_url: str, started: float) -> int:
    from explainers.estimators.crossfit import cross_fit
    from explainers.matching.cebab import ensure_cebab_space, without_texts

    spec = {
        "protocol": "openai-chat",
        "url": base_url,
        "model": "qwen",
        "labels": LABELS,
        "prompt": PROMPT,
        "scoring": "logprobs",
        "top_logprobs": 20,
        "timeout_s": 300,
        "retries": 1,
        "max_concurrency": 1,
    }
    args.cache.parent.mkdir(parents=True, exist_ok=True)
    clf = DiskCachedClassifier(build_classifier(spec, cache=False), args.cache)
    log = lambda msg: print(f"[{time.perf_counter() - started:6.0f}s] {msg}", file=sys.stderr, flush=True)  # noqa: E731
    acc_lines, _ = accuracy_lines(clf, args.acc_n, args.seed)
    log(acc_lines[0])
    # The pairs: a stratified subset of the 200 pairs generation_cebab.py generated for, so `generate` has texts.
    pairs = runner.select_pairs(
        runner.load_bench_pairs("dev", limit=200, seed=args.seed), args.pairs, args.seed
    )
    resources = runner.build_bench_resources(
        "train_inclusive", seed=args.seed, exclude_texts=runner.benchmark_texts(pairs)
    )
    space = ensure_cebab_space(args.root, encoder=resources.encoder, log=log)
    keep = set(resources.pool.texts)
    resources.space = without_texts(space, [t for t in space.pool.texts if t not in keep])
    small = subset_pool(resources, args.small_pool, args.seed)
    truths = runner.true_icaces(pairs, clf)
    log(f"{len(pairs)} pairs scored; pool {len(resources.pool)}, small pool {len(small.pool)}")
    got: dict[str, runner.PairEstimates] = {}
    notes: dict[str, str] = {}
    for name in args.methods.split(","):
        res = small if name in ("conexp", "s_learner") else resources
        before = clf.scored
        try:
            explainer = build_explainer(name, res)
        except (KeyError, ValueError) as e:
            notes[name] = f"not run: {e}"
            continue
        got[name] = runner.estimate_pairs(explainer, pairs, clf, args.k, truths=truths)
        notes[name] = (
            f"pool subset {len(res.pool)}; " if res is small else ""
        ) + f"{clf.scored - before} new LLM predictions, {got[name].wall_s:.0f} s"
        log(f"{name}: {notes[name]}")
    stacks = []  # (components, out-of-fold estimates, weights fit on all pairs)
    for spec_ in args.stack.split(";"):
        parts = [n for n in spec_.split(",") if n in got]
        if len(parts) >= 2:
            cf = cross_fit(
                {n: got[n].estimates for n in parts},
                truths,
                [p.base.original_id for p in pairs],
                folds=2,
                seed=0,
            )
            stacks.append((parts, cf.predictions, cf.weights))
    gen = None if args.no_generate else generate_estimates(pairs, clf)
    wall = time.perf_counter() - started
    u = clf.usage
    lines = [
        "# A prompted LLM classifier explained: Qwen2.5-1.5B zero-shot CEBaB rating on dev",
        "",
        f"- classifier: {QWEN_NAME}, zero-shot, behind the `openai-chat` adapter (`scoring: logprobs`: "
        'top-20 logprobs at the answer position, renormalised over the labels "1".."5")',
        f"- prompt: `{PROMPT!r}`",
        *acc_lines,
        f"- pairs: {len(pairs)} CEBaB dev pairs, stratified over (concept, direction) (seed {args.seed}), "
        f"drawn from the 200 pairs of generation_cebab.py; K={args.k}; pool: train_inclusive without the "
        f"pairs' texts ({len(resources.pool)} texts); conexp and s_learner on a random pool subset of "
        f"{len(small.pool)} (scoring the whole pool with the LLM is out of this CPU budget)",
        *[
            f"- stack {j + 1}: {' + '.join(parts)}, non-negative weights cross-fit (2 folds by original_id); "
            f"weights fit on all pairs {weights}"
            for j, (parts, _, weights) in enumerate(stacks)
        ],
        f"- generate: Qwen's own counterfactuals from generation_cebab.py (K={gen[2] if gen else '-'}, text checks "
        f"only), re-scored by this classifier; {len(gen[1]) if gen else 0}/{len(pairs)} pairs have samples; "
        "a pair with none kept is estimated as zero"
        if gen
        else "- generate: not run",
        f"- LLM cost of this run: {clf.scored} new predictions ({len(clf.rows)} cached in total), {u.calls} calls, "
        f"{u.prompt_tokens} prompt + {u.completion_tokens} completion tokens, {clf.llm_s:.0f} s of LLM time "
        f"({clf.llm_s / max(clf.scored, 1):.2f} s per prediction); run wall {wall:.0f} s on 2 shared cores",
        "- errors as CEBaB defines them (explainers/metrics.py; lower is better); macro = over (concept, "
        "direction) cells",
        "",
        "| method | K | L2 macro | Cos macro | ND macro | L2 micro | Cos micro | ND micro | notes |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for name, est in got.items():
        lines.append(row(name, args.k, est.estimates, truths, pairs, notes[name]))
    for parts, est, _ in stacks:
        lines.append(row("stacked (" + " + ".join(parts) + ")", args.k, est, truths, pairs, "cross-fit"))
    if gen is not None and gen[1]:
        lines.append(row("generate", gen[2], gen[0], truths, pairs, f"{len(gen[1])} pairs with samples"))
    lines += [f"- `{n}`: {v}" for n, v in notes.items() if v.startswith("not run")]
    text = "\n".join(lines) + "\n"
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text, encoding="utf-8")
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
