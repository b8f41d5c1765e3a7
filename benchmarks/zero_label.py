"""Zero-label CEBaB: a domain built from raw texts and the four concepts' definitions by an LLM.

    OMP_NUM_THREADS=1 nice python benchmarks/zero_label.py [--origins 40] [--dev-pairs 400]
        [--gguf ~/.cache/cace/models/SmolLM2-135M-Instruct.Q4_1.gguf] [--full-domain var/domains/cebab]

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
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from explainers.bench.runner import load_model, select_pairs  # noqa: E402
from explainers.concepts import CEBAB_SCHEMA, Intervention  # noqa: E402
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


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--origins", type=int, default=40, help="train_inclusive originals in the domain")
    ap.add_argument("--dev-pairs", type=int, default=400, help="stratified dev pairs scored (0: all)")
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
    ap.add_argument("--full-domain", type=Path, help="a built human CEBaB domain folder to compare with")
    ap.add_argument("--cache", type=Path, default=CACHE / "generations" / "zero-label-bench.sqlite")
    ap.add_argument("--out", type=Path, default=RESULTS / "zero_label.md")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()

    rng = np.random.default_rng(args.seed)
    train = load_split("train_inclusive")
    originals = [r for r in train if r.is_original]
    chosen = sorted(rng.choice(len(originals), size=args.origins, replace=False).tolist())
    subset = [originals[i] for i in chosen]
    ids = {r.original_id for r in subset}
    raw_rows = [{"text": r.text, "labels": {}, "origin": r.original_id, "id": r.id} for r in subset]
    human_rows = validate_rows(
        [{"text": r.text, "labels": r.clean_labels(), "origin": r.original_id, "id": r.id}
         for r in train if r.original_id in ids]
    )  # fmt: skip
    encoder = Encoder()
    work = Path(tempfile.mkdtemp(prefix="zero-label-"))

    # 1. The zero-label domain.
    options = zero_label.LLMBuildOptions(
        max_llm_calls=args.max_llm_calls, edits_per_direction=args.edits_per_direction,
        max_concurrency=args.concurrency, seed=args.seed,
    )  # fmt: skip
    server = None
    if args.llm_url is None:
        server = LlamaServer(
            args.gguf, port=args.port, n_threads=args.threads, n_ctx=4096, log=work / "llama.log"
        ).start()
    url = args.llm_url or server.base_url  # type: ignore[union-attr]
    try:
        backend = OpenAIBackend(url, args.llm_model, timeout_s=300)
        speed = zero_label.measure_speed(backend)
        plan = zero_label.plan_build(raw_rows, CEBAB_SCHEMA, options, budget=args.max_llm_calls, speed=speed)
        log(f"plan: {json.dumps(plan)}")
        t0 = time.perf_counter()
        result = zero_label.run(
            raw_rows, CEBAB_SCHEMA, backend, options, plan, cache=GenerationCache(args.cache), llm_name=args.llm_model,
            progress=lambda s: log(f"{s['stage']} {s['done']}/{s['total']}") if s["done"] % 50 == 0 else None,
        )  # fmt: skip
        llm_s = time.perf_counter() - t0
    finally:
        if server is not None:
            server.stop()
    t0 = time.perf_counter()
    zl = build_domain(work, "zero-label", result.pool, encoder=encoder, source="zero-label bench",
                      taggers_builder=result.taggers_builder, finish=result.finish)  # fmt: skip
    zl_build_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    human = build_domain(work, "human", pool_from_rows(human_rows, CEBAB_SCHEMA), encoder=encoder)
    human_build_s = time.perf_counter() - t0
    report = zl.meta["llm_build"]

    # 3. LLM label accuracy on the originals, against their human labels.
    prov = [json.loads(x) for x in (zl.directory / "provenance.jsonl").read_text().splitlines()]
    llm_label_of = {zl.pool.texts[i]: zl.pool.labels[i] for i, p in enumerate(prov) if p["text"] == "corpus"}
    accuracy = {}
    for c in CEBAB_SCHEMA.names:
        truth = [r.clean_labels()[c] for r in subset]
        got = [llm_label_of[r.text][c] for r in subset]
        majority = max(truth.count(v) for v in set(truth)) / len(truth)
        accuracy[c] = {"accuracy": round(float(np.mean([a == b for a, b in zip(got, truth, strict=True)])), 4),
                       "majority_rate": round(majority, 4),
                       "llm_values": {v: got.count(v) for v in sorted(set(got))}}  # fmt: skip

    # 4. Faithfulness on dev.
    classifier, name, _ = load_model(args.model, root=args.root)
    dev = select_pairs(build_pairs(load_split("dev")), args.dev_pairs or None, seed=args.seed)
    table: dict[str, dict] = {}
    domains = {"zero-label": zl, "human-subset": human}
    if args.full_domain:
        domains["human-full"] = load_domain(args.full_domain, encoder=encoder)
    cal_cost = {}
    for label, dom in domains.items():
        if not dom.pool.pairs:
            log(f"{label}: no pairs, no calibration")
            continue
        t0 = time.perf_counter()
        cal = calibrate(classifier, dom.pool, dom.space, encoder, taggers=dom.taggers, classifier_name=name,
                        max_pairs=2000, log=log)  # fmt: skip
        cal_cost[label] = {"seconds": round(time.perf_counter() - t0, 1), "heldout_pairs":
                           cal.meta["protocol"]["heldout_pairs"]}  # fmt: skip
        res = dom.resources(encoder=encoder)
        res.extra["calibration"] = cal
        methods = ("auto", *OURS) if label != "human-full" else ("auto",)
        for m in methods:
            if m == "pair_transfer" and not dom.pool.pairs:
                continue
            table[f"{label}:{m}"], secs = evaluate(build_explainer(m, res), classifier, dev)
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
    lines = [
        "# Zero-label CEBaB: a domain from raw texts and concept definitions",
        "",
        f"`benchmarks/zero_label.py --origins {args.origins} --dev-pairs {args.dev_pairs} --max-llm-calls "
        f"{args.max_llm_calls} --edits-per-direction {args.edits_per_direction}`. {n} original reviews of "
        "train_inclusive (seeded), every label and edit removed; only `CEBAB_SCHEMA`'s definitions. LLM: "
        f"SmolLM2-135M-Instruct Q4_1 on llama.cpp's server, {args.threads} threads on a shared 2-core CPU "
        f"(concurrency {args.concurrency}). LLM stages {llm_s:.0f} s; domain build (taggers, space) "
        f"{zl_build_s:.0f} s; the human-labelled subset domain ({len(human.pool)} texts, "
        f"{len(human.pool.pairs)} pairs) {human_build_s:.0f} s. Classifier: {name}. Dev: "
        f"{len(dev)} pairs stratified over (concept, direction){' (all)' if not args.dev_pairs else ''}.",
        "",
        "## LLM label accuracy (the originals, against their human labels)",
        "",
        "| concept | LLM accuracy | majority rate | LLM values | tagger agreement with LLM (held out) | usable |",
        "|---|---|---|---|---|---|",
    ]
    for c in CEBAB_SCHEMA.names:
        t = zl.meta["taggers"][c]
        lines.append(f"| {c} | {accuracy[c]['accuracy']} | {accuracy[c]['majority_rate']} | "
                     f"{accuracy[c]['llm_values']} | {t.get('agreement_with_llm')} | {t['usable']} |")  # fmt: skip
    lines += [
        "",
        "Mean label confidence: "
        + ", ".join(f"{c} {lab['per_concept'][c]['mean_confidence']}" for c in CEBAB_SCHEMA.names)
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
    lines.append("")
    lines.append(
        f"Best baseline (human labels): L2 {best['l2'][1]} {best['l2'][0]:.4f}, Cos {best['cos'][1]} {best['cos'][0]:.4f}."
    )
    for target in ("zero-label:auto", "human-subset:auto"):
        if target in table:
            v = table[target]
            lines.append(
                f"{target}: L2 {100 * (v['l2'] - best['l2'][0]) / best['l2'][0]:+.1f}% / Cos "
                f"{100 * (v['cos'] - best['cos'][0]) / best['cos'][0]:+.1f}% vs the best baseline."
            )
    if "zero-label:auto" in table and "human-subset:auto" in table:
        z, h = table["zero-label:auto"], table["human-subset:auto"]
        lines.append(f"zero-label auto vs human-subset auto: L2 {100 * (z['l2'] - h['l2']) / h['l2']:+.1f}%, "
                     f"Cos {100 * (z['cos'] - h['cos']) / h['cos']:+.1f}% (target: within 10%).")  # fmt: skip
    lines += [
        "",
        "## Cost (per 1,000 texts)",
        "",
        "| stage | LLM calls | prompt tokens | completion tokens | LLM wall time |",
        "|---|---|---|---|---|",
        f"| labels ({len(CEBAB_SCHEMA.names)} concepts) | {per_k(lab['llm_calls'] + lab['cached_llm_calls'])} | "
        f"{per_k(lab['prompt_tokens'])} | {per_k(lab['completion_tokens'])} | {per_k(lab['wall_s'])} s |",
        f"| edits ({pairs_r['planned_edits']} planned, with checks) | {per_k(pairs_r['llm_calls'] + pairs_r['cached_llm_calls'])} | "
        f"{per_k(pairs_r['prompt_tokens'])} | {per_k(pairs_r['completion_tokens'])} | {per_k(pairs_r['wall_s'])} s |",
        "",
        f"Plan before the build: {plan['llm_calls']} calls, ~{plan['prompt_tokens']} prompt + "
        f"~{plan['completion_tokens']} completion tokens, estimated {plan['estimated_seconds']} s "
        f"(measured speed {plan['speed']}). Tokens of cached answers count 0 in a re-run (cache hits "
        f"{lab['cache_hits']} labels, {pairs_r['cache_hits']} edits); calibrations: {cal_cost}.",
    ]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text("\n".join(lines) + "\n")
    args.out.with_suffix(".json").write_text(json.dumps(
        {"plan": plan, "accuracy": accuracy, "table": table, "llm_build": report, "calibration": cal_cost,
         "provenance": zl.meta["provenance"], "taggers": zl.meta["taggers"]}, indent=1, default=str))  # fmt: skip
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
