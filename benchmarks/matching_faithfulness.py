"""Faithfulness of the concept-space methods on CEBaB dev, beside every baseline.

    python -m benchmarks.matching_faithfulness [--models tfidf-lr,minilm-ft] [--limit N]

For each reference classifier (minilm-ft only once var/classifiers/minilm-ft exists) it
scores, on every dev pair at K = 1, 5, 10, with the benchmark runner
(`explainers.bench.runner`; pool = train_inclusive minus every dev text):

- baselines: zero, conexp, approx, approx_match, s_learner, pt_match;
- ours: match (head space), match_full (fully fine-tuned encoders, if their GPU-made
  vectors are in var/full_ft), match_dr, pair_transfer (head space), pt_pair_transfer
  (pair-transfer ranked by pretrained MiniLM), stacked (match + pair_transfer + s_learner,
  weights cross-fit: 2 folds split by the base's original_id; each pair is scored with
  weights fit on the other fold).

It writes benchmarks/results/matching_faithfulness_<model>.md (+ .json), a K-curve
(1..50) on a stratified subset as matching_kcurve_<model>.png/.md, and stores the
stacking weights fit on all of dev, with the procedure, in the head space's meta.json.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

from benchmarks.harness import RESULTS, ROOT
from explainers.artifacts import META
from explainers.bench import runner
from explainers.classifiers.cache import CachingClassifier
from explainers.estimators.crossfit import cross_fit
from explainers.matching.cebab import ensure_cebab_space, without_texts
from explainers.matching.space import ConceptSpace

BASELINES = ("zero", "conexp", "approx", "approx_match", "s_learner", "pt_match")
STACK = ("match", "pair_transfer", "s_learner")


class PrecomputedVectors:
    """Embeddings made elsewhere (the GPU fine-tune) looked up by text; unknown texts are an error.

    Not a stand-in for a model: these are the fine-tuned encoder's real outputs, computed on
    the GPU machine for every pool and dev text, because the encoders cannot travel back.
    """

    def __init__(self, texts: list[str], vectors: np.ndarray, name: str) -> None:
        self.row = {t: i for i, t in enumerate(texts)}
        self.vectors = vectors.astype(np.float32)
        self.vectors /= np.linalg.norm(self.vectors, axis=1, keepdims=True)
        self.model_name = self.path = name

    def encode(self, texts):
        return self.vectors[[self.row[t] for t in texts]]


def full_space(pool, encoder, folder: Path, bundle: Path) -> ConceptSpace | None:
    if not (folder / "full_finetune.json").exists() or not (bundle / "bundle.json").exists():
        return None
    texts = json.loads((bundle / "bundle.json").read_text())["texts"]
    encs = {
        c: PrecomputedVectors(texts, np.load(folder / f"{c}.npy"), f"full-ft:{c}")
        for c in pool.schema.names
        if (folder / f"{c}.npy").exists()
    }
    space = ConceptSpace(
        pool,
        encoder,
        encoders=encs,
        meta={
            "name": "full-ft",
            "trainer": "full",
            **json.loads((folder / "full_finetune.json").read_text()),
        },
    )
    space.build_indices()
    return space


def run_methods(classifier, pairs, resources, names, ks, prefix=""):
    got = {}

    def keep(est):
        got[(prefix + est.explainer, est.k)] = est

    def show(row):
        print(
            f"  {prefix}{row.explainer} K={row.k}: macro L2 {row.summary.macro['l2']:.4f} "
            f"cos {row.summary.macro['cos']:.4f} ({row.wall_s:.0f} s)",
            file=sys.stderr,
            flush=True,
        )

    result = runner.run_benchmark(classifier, pairs, resources, names, ks, on_estimates=keep, on_row=show)
    for n, e in result.errors.items():
        print(f"  {prefix}{n} not run: {e}", file=sys.stderr)
    return got


def stacked(got, pairs, ks, components=STACK, label="stacked"):
    groups = [p.base.original_id for p in pairs]
    out, fits = {}, {}
    for k in ks:
        parts = {n: got[(n, k)].estimates for n in components if (n, k) in got}
        if len(parts) < 2:
            continue
        ref = got[(next(iter(parts)), k)]
        cf = cross_fit(parts, ref.truths, groups, folds=2, seed=0)
        out[(label, k)] = replace(
            ref, explainer=label, estimates=cf.predictions, wall_s=sum(got[(n, k)].wall_s for n in parts)
        )
        fits[k] = cf
    return out, fits


def table(got, ks, title_rows) -> str:
    head = ["method", "K", "L2 macro", "Cos macro", "ND macro", "L2 micro", "Cos micro"] + [
        f"L2 {c}" for c in ("food", "service", "ambiance", "noise")
    ]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for name in title_rows:
        for k in ks:
            if (name, k) not in got:
                continue
            s = got[(name, k)].summary()
            lines.append(
                "| "
                + " | ".join(
                    [
                        name,
                        str(k),
                        f"{s.macro['l2']:.4f}",
                        f"{s.macro['cos']:.4f}",
                        f"{s.macro['normdiff']:.4f}",
                        f"{s.micro['l2']:.4f}",
                        f"{s.micro['cos']:.4f}",
                    ]
                    + [
                        f"{s.per_concept[c]['l2']:.4f}" if c in s.per_concept else "-"
                        for c in ("food", "service", "ambiance", "noise")
                    ]
                )
                + " |"
            )
    return "\n".join(lines)


def verdict(got, ours, ks) -> list[str]:
    lines = []
    for metric in ("l2", "cos"):
        base = min(
            (got[(n, k)].summary().macro[metric], n, k) for n in BASELINES for k in ks if (n, k) in got
        )
        best = min((got[(n, k)].summary().macro[metric], n, k) for n in ours for k in ks if (n, k) in got)
        gain = 100 * (base[0] - best[0]) / base[0]
        lines.append(
            f"- macro {metric.upper()}: best ours **{best[1]} K={best[2]} {best[0]:.4f}** vs best baseline "
            f"{base[1]} K={base[2]} {base[0]:.4f}: {gain:+.1f}% ({'beats' if gain > 0 else 'does not beat'} "
            f"every baseline; target +15%)"
        )
    return lines


def kcurve(classifier, pairs, res_head, res_pt, model, curve_ks, limit):
    sub = runner.select_pairs(pairs, limit, seed=0)
    got = {}
    got.update(
        run_methods(
            classifier,
            sub,
            res_head,
            ("zero", "s_learner", "approx_match", "pt_match", "match", "pair_transfer"),
            curve_ks,
        )
    )
    got.update(run_methods(classifier, sub, res_pt, ("pair_transfer",), curve_ks, prefix="pt_"))
    st, _ = stacked(got, sub, curve_ks)
    got.update(st)
    names = [
        "zero",
        "s_learner",
        "approx_match",
        "pt_match",
        "match",
        "pair_transfer",
        "pt_pair_transfer",
        "stacked",
    ]
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for ax, metric in zip(axes, ("l2", "cos"), strict=True):
        for n in names:
            ys = [got[(n, k)].summary().macro[metric] for k in curve_ks if (n, k) in got]
            if ys:
                ax.plot(curve_ks[: len(ys)], ys, marker="o", ms=3, label=n)
        ax.set_xlabel("K")
        ax.set_ylabel(f"macro {metric.upper()} (lower is better)")
        ax.set_xscale("log")
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=7)
    fig.suptitle(f"CEBaB dev K-curve, {model}, {len(sub)}-pair stratified subset")
    fig.tight_layout()
    png = RESULTS / f"matching_kcurve_{model}.png"
    fig.savefig(png, dpi=110)
    md = [
        f"# K-curve: {model} on a {len(sub)}-pair stratified subset of CEBaB dev",
        "",
        f"![K-curve]({png.name})",
        "",
        table(got, curve_ks, names),
        "",
    ]
    (RESULTS / f"matching_kcurve_{model}.md").write_text("\n".join(md))


def main(argv=None) -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--models", default=None)
    p.add_argument("--root", type=Path, default=ROOT / "var")
    p.add_argument("--limit", type=int, default=None)
    p.add_argument("--ks", default="1,5,10")
    p.add_argument("--curve-ks", default="1,2,3,5,7,10,15,20,30,40,50")
    p.add_argument("--curve-limit", type=int, default=800)
    p.add_argument("--no-curve", action="store_true")
    p.add_argument("--curve-only", action="store_true", help="only the K-curve (the tables exist)")
    args = p.parse_args(argv)
    models = (
        args.models.split(",")
        if args.models
        else ["tfidf-lr"]
        + (["minilm-ft"] if (args.root / "classifiers" / "minilm-ft" / META).exists() else [])
    )
    ks = [int(k) for k in args.ks.split(",")]
    pairs = runner.load_bench_pairs("dev", limit=args.limit)
    started = time.perf_counter()
    resources = runner.build_bench_resources("train_inclusive", exclude_texts=runner.benchmark_texts(pairs))
    head_dir = args.root / "spaces" / "cebab-train_inclusive-head"
    head = ensure_cebab_space(args.root, encoder=resources.encoder, log=print)
    pool_texts = set(resources.pool.texts)
    head = without_texts(head, [t for t in head.pool.texts if t not in pool_texts])
    full = full_space(resources.pool, resources.encoder, args.root / "full_ft", args.root / "gpu")
    res_head = replace(resources, space=head, extra=dict(resources.extra))
    res_pt = replace(resources, space=None, extra=dict(resources.extra))
    print(
        f"prepared in {time.perf_counter() - started:.0f} s; pool {len(resources.pool)}; pairs {len(pairs)}",
        file=sys.stderr,
    )
    for model in models:
        clf, name, meta = runner.load_model(model, args.root)
        cached = CachingClassifier(clf, key=name)
        if args.curve_only:
            kcurve(
                cached,
                pairs,
                res_head,
                res_pt,
                name,
                [int(k) for k in args.curve_ks.split(",")],
                args.curve_limit,
            )
            continue
        got = {}
        got.update(
            run_methods(cached, pairs, res_head, BASELINES + ("match", "match_dr", "pair_transfer"), ks)
        )
        got.update(run_methods(cached, pairs, res_pt, ("pair_transfer",), ks, prefix="pt_"))
        if full is not None:
            res_full = replace(resources, space=full, extra=dict(resources.extra))
            got.update(run_methods(cached, pairs, res_full, ("match", "pair_transfer"), ks, prefix="full_"))
        st, fits = stacked(got, pairs, ks)
        got.update(st)
        wide = (
            "match",
            "pair_transfer",
            "s_learner",
            "match_dr",
            "pt_pair_transfer",
            "approx_match",
            "conexp",
        )
        st2, _ = stacked(got, pairs, ks, components=wide, label="stacked_wide")
        got.update(st2)
        ours = [
            "match",
            "full_match",
            "match_dr",
            "pair_transfer",
            "pt_pair_transfer",
            "full_pair_transfer",
            "stacked",
            "stacked_wide",
        ]
        head_meta = json.loads((head_dir / META).read_text())
        stacking = head_meta.get("stacking", {})
        stacking[name] = {
            "weights": fits[max(fits)].weights,
            "weights_by_k": {str(k): f.weights for k, f in fits.items()},
            "fold_weights_by_k": {str(k): f.fold_weights for k, f in fits.items()},
            "procedure": {
                **fits[max(fits)].procedure,
                "components": list(STACK),
                "fit_on": "CEBaB dev pairs",
                "pool": "train_inclusive minus dev texts",
            },
            "cross_fit_macro": {str(k): got[("stacked", k)].summary().macro for k in fits},
        }
        head.update_meta(head_dir, stacking=stacking)
        lines = [
            f"# Concept-space methods vs baselines: {name} on CEBaB dev",
            "",
            f"- pairs: {len(pairs)}"
            + (" (stratified subset of dev, seed 0)" if args.limit else " (all of dev)")
            + f"; pool: train_inclusive without dev texts ({len(resources.pool)} texts)",
            f"- classifier: {name} (dev accuracy {meta.get('dev_accuracy', '?')})",
            "- head space: `cebab-train_inclusive-head` (projection head on frozen MiniLM; "
            f"hit rate {head.meta.get('diagnostics', {}).get('hit_rate')}, pretrained "
            f"{head.meta.get('diagnostics', {}).get('hit_rate_pretrained')})",
            "- full_*: all-MiniLM-L6-v2 fully fine-tuned per concept on a GPU (see matching_full_finetune.md)"
            if full is not None
            else "- full fine-tune: not available",
            "- stacked: match + pair_transfer + s_learner, non-negative weights cross-fit on dev "
            "(2 folds by original_id; each pair scored with weights from the other fold); "
            "stacked_wide adds match_dr, pt_pair_transfer, approx_match, conexp",
            f"- stacking weights fit on all dev (stored in the space meta): "
            f"{ {k: f.weights for k, f in fits.items()} }",
            "- macro = mean over (concept, direction) cells, then directions, then concepts (lower is better)",
            "",
            "## Verdict",
            "",
            *verdict(got, ours, ks),
            "",
            table(got, ks, list(BASELINES) + ours),
            "",
        ]
        suffix = f"_n{args.limit}" if args.limit else ""
        out = RESULTS / f"matching_faithfulness_{name}{suffix}.md"
        out.write_text("\n".join(lines))
        out.with_suffix(".json").write_text(
            json.dumps(
                {f"{n}@{k}": e.summary().to_dict() for (n, k), e in got.items()}, indent=1, default=str
            )
        )
        print("\n".join(lines))
        if not args.no_curve:
            kcurve(
                cached,
                pairs,
                res_head,
                res_pt,
                name,
                [int(k) for k in args.curve_ks.split(",")],
                args.curve_limit,
            )
    return 0


if __name__ == "__main__":
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    raise SystemExit(main())
