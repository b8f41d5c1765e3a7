"""The realistic setting: a concept space trained from `train_exclusive` + LLM-generated edits.

    python -m benchmarks.matching_exclusive [--sources 400] [--concepts 2] [--models tfidf-lr,minilm-ft]

`train_exclusive` holds one text per origin, so it has no counterfactual groups. This
script asks an LLM (Qwen2.5-Coder-1.5B-Instruct Q4_K_M on llama.cpp's OpenAI-compatible
server, CPU; see generation_model.py) for zero-shot edits of `--sources` texts on
`--concepts` concepts each, verifies them, and trains the head space on the augmented
corpus (`cebab-train_exclusive-gen-head`). Generations are cached in SQLite under
var/gen/, so an interrupted run resumes where it stopped.

It then reports, beside the space trained on `train_inclusive`'s human edits:
- the nearest-counterfactual hit rate on held-out CEBaB dev pairs (pretrained MiniLM,
  the inclusive head, the exclusive+generated head);
- faithfulness on CEBaB dev at K = 1, 5, 10 for each classifier: the baselines and the
  space methods (match, pair_transfer, stacked) in both settings. In the exclusive
  setting every method, baselines included, sees only train_exclusive + generated texts.

Writes benchmarks/results/matching_exclusive_<model>.md (+ .json) and matching_exclusive_space.md.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from dataclasses import replace
from pathlib import Path

from benchmarks.generation_model import DEFAULT_OUT as QWEN_GGUF
from benchmarks.generation_model import assemble
from benchmarks.harness import RESULTS, ROOT
from benchmarks.matching_faithfulness import BASELINES, STACK, run_methods, stacked, table
from benchmarks.matching_hit_rate import hit_rate_table
from explainers.artifacts import META
from explainers.bench import runner
from explainers.classifiers.cache import CachingClassifier
from explainers.data.pools import cebab_pool
from explainers.matching.augment import llm_augmenter
from explainers.matching.cebab import build_cebab_space, ensure_cebab_space, without_texts
from explainers.matching.space import ConceptSpace

SPACE = "cebab-train_exclusive-gen-head"
TAGGED = "cebab-train_exclusive-gentagged-head"
METHODS = ("match", "pair_transfer")


def build_space(root: Path, args, exclude: set[str], encoder, *, tagged: bool = False) -> ConceptSpace:
    """Train (or load) the space; `tagged` replays the same cached generations, keeping only
    edits that taggers trained on train_exclusive read as reaching the target value."""
    name = TAGGED if tagged else SPACE
    path = root / "spaces" / name
    if not (path / META).exists() or args.retrain:
        from explainers.generation.server import LlamaServer
        from explainers.taggers import train_cebab_taggers

        taggers = None
        if tagged:
            taggers = root / "taggers" / "cebab-train_exclusive"
            if not (taggers / META).exists():
                train_cebab_taggers(taggers, split="train_exclusive")
        gguf = assemble(QWEN_GGUF)
        (root / "gen").mkdir(parents=True, exist_ok=True)
        with LlamaServer(gguf, n_ctx=2048, n_threads=args.threads, log=root / "gen" / "llama.log") as srv:
            augment = llm_augmenter(srv.base_url, "qwen2.5-coder-1.5b-instruct-q4_k_m", n_sources=args.sources,
                                    concepts_per_source=args.concepts, cache=root / "gen" / "train_exclusive.sqlite",
                                    taggers=taggers, log=lambda m: print(m, file=sys.stderr, flush=True))  # fmt: skip
            build_cebab_space(root, "train_exclusive", "head", name=name, augment=augment, encoder=encoder,
                              exclude_texts=exclude, log=lambda m: print(m, file=sys.stderr))  # fmt: skip
    return ConceptSpace.load(path, encoder=encoder)


def dev_hit_rates(spaces: dict[str, ConceptSpace], encoder) -> dict[str, dict[str, float]]:
    """Hit rate on dev pairs, with each space's projections applied to the dev pool (held out)."""
    dev = cebab_pool("dev")
    base = encoder.encode(dev.texts)
    rows = {"pretrained MiniLM": ConceptSpace(dev, encoder, base_vectors=base)}
    for label, sp in spaces.items():
        rows[label] = ConceptSpace(dev, encoder, heads=sp.heads, base_vectors=base)
    out = {}
    for label, sp in rows.items():
        sp.build_indices()
        out[label] = {c: sp.nearest_counterfactual_hit_rate(c) for c in dev.schema.names}
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--models", default="tfidf-lr")
    p.add_argument("--root", type=Path, default=ROOT / "var")
    p.add_argument("--sources", type=int, default=400)
    p.add_argument("--concepts", type=int, default=2)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--limit", type=int, default=None)
    p.add_argument("--ks", default="1,5,10")
    p.add_argument("--retrain", action="store_true")
    p.add_argument(
        "--space-only", action="store_true", help="build the space and its hit rates, no faithfulness"
    )
    args = p.parse_args(argv)
    ks = [int(k) for k in args.ks.split(",")]
    pairs = runner.load_bench_pairs("dev", limit=args.limit)
    dev_texts = runner.benchmark_texts(pairs)
    resources = runner.build_bench_resources("train_inclusive", exclude_texts=dev_texts)
    encoder = resources.encoder
    excl = build_space(args.root, args, set(dev_texts), encoder)
    tagged = build_space(args.root, args, set(dev_texts), encoder, tagged=True)
    incl = ensure_cebab_space(args.root, encoder=encoder, log=print)
    incl = without_texts(incl, [t for t in incl.pool.texts if t not in set(resources.pool.texts)])
    # prefix -> (label, space, pool the setting's methods and baselines search)
    settings = {
        "": ("train_inclusive human edits", incl, resources.pool),
        "excl_": ("train_exclusive + generated", excl, excl.pool),
        "excltag_": ("train_exclusive + generated, tagger-checked", tagged, tagged.pool),
    }
    write_space_report(settings, args, encoder)
    if args.space_only:
        return 0
    for model in args.models.split(","):
        clf, name, meta = runner.load_model(model, args.root)
        cached = CachingClassifier(clf, key=name)
        started = time.perf_counter()
        got, rows, verdicts, fitted = {}, [], [], {}
        for prefix, (_, space, pool) in settings.items():
            res = replace(
                resources, pool=pool, space=space, extra=dict(resources.extra) if not prefix else {}
            )
            got.update(run_methods(cached, pairs, res, BASELINES + METHODS, ks, prefix=prefix))
            st, fits = stacked(
                got, pairs, ks, components=tuple(prefix + n for n in STACK), label=prefix + "stacked"
            )
            got.update(st)
            fitted[prefix] = {k: f.weights for k, f in fits.items()}
            rows += [prefix + n for n in (*BASELINES, *METHODS, "stacked")]
        for metric in ("l2", "cos"):
            for prefix, (label, _, _) in settings.items():
                base = min((got[(prefix + n, k)].summary().macro[metric], prefix + n, k) for n in BASELINES
                           for k in ks if (prefix + n, k) in got)  # fmt: skip
                best = min((got[(prefix + n, k)].summary().macro[metric], prefix + n, k)
                           for n in (*METHODS, "stacked") for k in ks if (prefix + n, k) in got)  # fmt: skip
                gain = 100 * (base[0] - best[0]) / base[0]
                verdicts.append(f"- {label}, macro {metric.upper()}: best space method **{best[1]} K={best[2]} "
                                f"{best[0]:.4f}** vs best baseline of the same setting {base[1]} K={base[2]} "
                                f"{base[0]:.4f}: {gain:+.1f}%")  # fmt: skip
        out = [f"# Realistic setting (train_exclusive + generated) vs human edits: {name} on CEBaB dev", "",
               f"- pairs: {len(pairs)}" + (" (stratified subset, seed 0)" if args.limit else " (all of dev)"),
               f"- classifier: {name} (dev accuracy {meta.get('dev_accuracy', '?')})",
               f"- rows without prefix: pool train_inclusive without dev texts ({len(resources.pool)} texts, "
               f"{len(resources.pool.pairs)} human pairs), space `cebab-train_inclusive-head`",
               f"- excl_ rows: pool train_exclusive + every verified generation ({len(excl.pool)} texts, "
               f"{len(excl.pool.pairs)} generated pairs), space `{SPACE}`",
               f"- excltag_ rows: the same generations, kept only where taggers trained on train_exclusive read the "
               f"target value ({len(tagged.pool)} texts, {len(tagged.pool.pairs)} pairs), space `{TAGGED}`",
               "- in each setting the baselines search the same pool as the space methods",
               "- stacked: match + pair_transfer + s_learner of the same setting, non-negative weights cross-fit "
               f"on dev (2 folds by original_id); weights fit on all dev: {fitted}",
               f"- wall time {time.perf_counter() - started:.0f} s", "", "## Verdict", "", *verdicts, "",
               table(got, ks, rows), "", "Space and generation details: "
               "[matching_exclusive_space.md](matching_exclusive_space.md)", ""]  # fmt: skip
        suffix = f"_n{args.limit}" if args.limit else ""
        md = RESULTS / f"matching_exclusive_{name}{suffix}.md"
        md.write_text("\n".join(out))
        md.with_suffix(".json").write_text(json.dumps(
            {f"{n}@{k}": e.summary().to_dict() for (n, k), e in got.items()}, indent=1, default=str))  # fmt: skip
        print("\n".join(out))
    return 0


def write_space_report(settings, args, encoder) -> None:
    """matching_exclusive_space.md: what generation cost and kept, and each space's dev hit rate."""
    excl = settings["excl_"][1]
    names = list(excl.schema.names)
    hits = dev_hit_rates({f"head on {label}": space for label, space, _ in settings.values()}, encoder)
    aug = excl.meta.get("augmentation", {})
    tag = settings["excltag_"][1].meta.get("augmentation", {})
    lines = ["# Concept space from train_exclusive + LLM-generated counterfactuals", "",
             f"- corpus: train_exclusive without dev texts ({aug.get('corpus_texts')} texts), "
             f"{aug.get('sources')} sources edited on {aug.get('concepts_per_source')} concepts each "
             f"({aug.get('planned_edits')} edits asked, one sample each, zero-shot)",
             f"- LLM: {aug.get('llm', {}).get('model')} on llama.cpp's server (CPU, {args.threads} threads); "
             f"temperature {aug.get('temperature')}, max_tokens {aug.get('max_tokens')}",
             f"- kept {aug.get('kept_edits')} edits (keep rate {aug.get('keep_rate')}); by concept "
             f"{aug.get('kept_by_concept')}; rejections {aug.get('rejections')}; "
             f"{aug.get('duplicates_of_pool')} duplicated a text already there",
             f"- cost of the generations: {aug.get('llm_calls', 0) + aug.get('cached_llm_calls', 0)} LLM calls, "
             f"{aug.get('prompt_tokens', 0) + aug.get('cached_prompt_tokens', 0)} prompt + "
             f"{aug.get('completion_tokens', 0) + aug.get('cached_completion_tokens', 0)} completion tokens "
             f"({aug.get('cached_llm_calls', 0)} calls replayed from the generation cache, made by an earlier "
             f"run: {aug.get('cached_llm_time_s', 0)} s of LLM time; this run {aug.get('wall_s')} s)",
             f"- tagger-checked variant (taggers trained on train_exclusive only): kept {tag.get('kept_edits')} "
             f"(keep rate {tag.get('keep_rate')}); rejections {tag.get('rejections')}",
             *[f"- space `{space.meta.get('name')}`: {space.meta.get('n_pairs')} pairs, built in "
               f"{space.meta.get('build_seconds')} s; in-pool hit rate {space.meta.get('diagnostics', {}).get('hit_rate')}"
               for space in (excl, settings["excltag_"][1])],
             "", "## Nearest-counterfactual hit rate on CEBaB dev (held out for every space)", "",
             *hit_rate_table(hits, names)]  # fmt: skip
    (RESULTS / "matching_exclusive_space.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    raise SystemExit(main())
