"""Model reports and comparisons on CEBaB dev, against the true CaCE of CEBaB's human pairs (issue 24).

    OMP_NUM_THREADS=2 nice python benchmarks/reports.py --root var/test --texts 300 [--models tfidf-lr,minilm-ft]

For each classifier, a report (the library's `ReportScorer` + `summarize_report`, what the
service's job runs) over N dev texts (originals, with their gold concept labels), searched in the
CEBaB domain's pool (train_inclusive, no dev text):

- cost: wall time, searches, classifier calls and texts;
- accuracy: every dev counterfactual pair gives f(edit) - f(base), so the mean per
  (concept, direction) is the true CaCE of that cell for this classifier. Spearman rank
  correlation of the report's CaCEs with the true ones over every (cell, label), and over the
  cells' effect sizes; the share of (cell, label) whose true CaCE lies in the reported CI;
- the placebo test's false-positive rate: the same report with the real search replaced by a
  second, independent placebo search (a random intervention): the share of cells called above
  noise at the nominal level (raw and Holm-corrected p < alpha).

Then a comparison of the first two classifiers on the same texts and counterfactuals: precision
and recall of the flagged cells against the cells whose TRUE CaCE differs by more than the
threshold on some label, and its cost against two separate reports.

Writes benchmarks/results/reports_<domain>.md and .json. `--domain movies` runs the same on the
library's sample movie-review domain (two rating models of different training sizes).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from scipy.stats import spearmanr

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from explainers.bench import runner  # noqa: E402
from explainers.data.cebab import build_pairs, load_split  # noqa: E402
from explainers.domains import load_domain  # noqa: E402
from explainers.embeddings import Encoder  # noqa: E402
from explainers.registry import build_explainer  # noqa: E402
from explainers.reports import ReportScorer, plan_cells, summarize_comparison, summarize_report  # noqa: E402
from explainers.reports.report import Cell, ScoreStats, ShuffledLabelPlacebo  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results"


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


class Counting:
    """A classifier wrapper counting calls and texts."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.calls = 0
        self.texts = 0

    @property
    def labels(self) -> list[str]:
        return list(self.inner.labels)

    def predict_proba(self, texts: list[str]) -> np.ndarray:
        self.calls += 1
        self.texts += len(texts)
        return np.asarray(self.inner.predict_proba(texts), float)


class PlaceboAsReal:
    """A 'method' whose counterfactuals are a second placebo search: an intervention known to do nothing
    concept-specific, to measure the placebo test's false-positive rate."""

    name = "placebo"
    aggregation = "mean"
    similarity_threshold = None

    def __init__(self, space: Any, seed: int) -> None:
        self.placebo = ShuffledLabelPlacebo(space, seed)

    def counterfactuals_batch(self, texts, interventions, top_k, *, base_labels=None):  # type: ignore[no-untyped-def]
        iv = interventions[0]
        cell = Cell(iv.concept, iv.source, iv.target)
        found = self.placebo.counterfactuals(cell, texts, base_labels, top_k)
        return [(cfs, {}) for cfs in found]


def true_cace(
    clf: Any, pairs: list[tuple[str, str, str, str, str]], cells: list[Cell]
) -> dict[str, np.ndarray]:
    texts = list(dict.fromkeys([t for p in pairs for t in p[:2]]))
    proba = np.asarray(clf.predict_proba(texts), float)
    row = {t: i for i, t in enumerate(texts)}
    out: dict[str, list[np.ndarray]] = {c.key: [] for c in cells}
    for base, cf, concept, source, target in pairs:
        key = f"{concept}:{source}->{target}"
        if key in out:
            out[key].append(proba[row[cf]] - proba[row[base]])
    return {k: np.mean(v, axis=0) for k, v in out.items() if v}


def run_report(
    explainer: Any, space: Any, texts: list[str], labels: list[dict], cells: list[Cell], clfs: list, args, *,
    placebo: bool, seed: int, batch: int = 64,
) -> tuple[list[dict], ScoreStats, float]:  # fmt: skip
    scorer = ReportScorer(explainer, top_k=args.top_k, space=space, placebo=placebo, seed=seed)
    stats = ScoreStats()
    rows: list[dict] = []
    started = time.perf_counter()
    for i in range(0, len(texts), batch):
        res = scorer.score(texts[i : i + batch], labels[i : i + batch], cells, clfs, stats)
        rows += [
            {"index": i + j, "status": "done", "payload": {"text": texts[i + j]}, "result": r}
            for j, r in enumerate(res)
        ]
    return rows, stats, time.perf_counter() - started


def accuracy(rep: dict, truth: dict[str, np.ndarray], labels: list[str]) -> dict[str, Any]:
    est, true, inside, eff_est, eff_true = [], [], [], [], []
    for c in rep["cells"]:
        if c["key"] not in truth:
            continue
        t = truth[c["key"]]
        for j, lab in enumerate(labels):
            est.append(c["cace"][lab])
            true.append(t[j])
            inside.append(c["ci_low"][lab] <= t[j] <= c["ci_high"][lab])
        eff_est.append(c["effect"])
        eff_true.append(float(np.abs(t).max()))
    return {
        "cells_scored": len(eff_est),
        "spearman_cell_label": float(spearmanr(est, true).statistic),
        "spearman_effect": float(spearmanr(eff_est, eff_true).statistic),
        "pearson_cell_label": float(np.corrcoef(est, true)[0, 1]),
        "mae": float(np.mean(np.abs(np.array(est) - np.array(true)))),
        "ci_coverage": float(np.mean(inside)),
    }


@dataclass
class Setup:
    """A domain, the report's texts (with their known labels), the held-out pairs and the classifiers."""

    name: str
    domain: Any
    texts: list[str]
    labels: list[dict[str, str]]
    pairs: list[tuple[str, str, str, str, str]]  # (base text, counterfactual text, concept, source, target)
    classifiers: dict[str, Any]
    note: str


def setup_cebab(args: argparse.Namespace, encoder: Any) -> Setup:
    domain = load_domain(args.root / "domains" / "cebab", encoder=encoder)
    dev = load_split("dev")
    pairs = [(p.base.text, p.counterfactual.text, p.concept, p.source, p.target) for p in build_pairs(dev)]
    # Originals first; beyond their number (272), dev's edited texts too (each a review with its own labels).
    originals = [r for r in dev if r.is_original]
    seen = {r.text for r in originals}
    for r in dev:
        if not r.is_original and r.text not in seen:
            seen.add(r.text)
            originals.append(r)
    n_orig = sum(r.is_original for r in dev)
    rng = np.random.default_rng(args.seed)
    if args.texts <= n_orig:
        pick = sorted(rng.choice(n_orig, size=args.texts, replace=False).tolist())
    else:
        extra = rng.choice(
            len(originals) - n_orig, size=min(args.texts, len(originals)) - n_orig, replace=False
        )
        pick = list(range(n_orig)) + sorted((n_orig + extra).tolist())
    clfs: dict[str, Any] = {}
    for m in args.models.split(","):
        if m == "bow-lr":
            clfs[m] = bow_classifier()
        else:
            clf, name, _ = runner.load_model(m, args.root)
            clfs[name] = clf
    return Setup(
        "CEBaB",
        domain,
        [originals[i].text for i in pick],
        [originals[i].clean_labels() for i in pick],
        pairs,
        clfs,
        f"{len(pick)} CEBaB dev texts ({min(len(pick), n_orig)} originals, the rest edits; gold concept labels); pool train_inclusive (no dev text); "
        f"true CaCE = mean f(edit) - f(base) over the {len(pairs)} dev pairs of each cell",
    )


def bow_classifier() -> Any:
    """A stand-in second model with tfidf-lr's labels: word counts + logistic regression on train_exclusive."""
    from sklearn.feature_extraction.text import CountVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline

    from explainers.classifiers.local import SklearnClassifier

    rows = [r for r in load_split("train_exclusive") if r.review_majority in ("1", "2", "3", "4", "5")]
    model = make_pipeline(CountVectorizer(min_df=2), LogisticRegression(max_iter=1000, C=0.5))
    model.fit([r.text for r in rows], [r.review_majority for r in rows])
    return SklearnClassifier(model)


def setup_movies(args: argparse.Namespace, encoder: Any) -> Setup:
    from explainers.classifiers.local import SklearnClassifier
    from explainers.data.movies import movie_corpus, train_rating_classifier
    from explainers.domains import build_domain, infer_schema, pool_from_rows, validate_rows

    root = args.root / "bench-domains"
    if (root / "movies-bench" / "meta.json").exists():
        domain = load_domain(root / "movies-bench", encoder=encoder)
    else:
        rows = validate_rows(movie_corpus(300, seed=0))
        domain = build_domain(root, "movies-bench", pool_from_rows(rows, infer_schema(rows)), encoder=encoder)
    held = movie_corpus(max(args.texts, 100), seed=11, prefix="h")
    by_origin: dict[str, list[dict]] = {}
    for r in held:
        by_origin.setdefault(r["origin"], []).append(r)
    pairs = []
    for group in by_origin.values():
        for a in group:
            for b in group:
                diff = [c for c in a["labels"] if a["labels"][c] != b["labels"][c]]
                if len(diff) == 1:
                    c = diff[0]
                    pairs.append((a["text"], b["text"], c, a["labels"][c], b["labels"][c]))
    originals = [g[0] for g in by_origin.values()][: args.texts]
    clfs = {
        "rating-lr": SklearnClassifier(train_rating_classifier(movie_corpus(200, edits=False, seed=7))),
        "rating-lr-small": SklearnClassifier(train_rating_classifier(movie_corpus(40, edits=False, seed=9))),
    }
    return Setup(
        "movies",
        domain,
        [r["text"] for r in originals],
        [dict(r["labels"]) for r in originals],
        pairs,
        clfs,
        f"{len(originals)} held-out movie reviews (their labels); pool: the sample corpus of 300 origins "
        f"with one edit per concept; true CaCE from the {len(pairs)} held-out edit pairs",
    )


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--root", type=Path, default=Path(os.environ.get("CACE_TEST_DATA_DIR", "var")))
    ap.add_argument("--domain", choices=("cebab", "movies"), default="cebab")
    ap.add_argument("--models", default="tfidf-lr,bow-lr")
    ap.add_argument("--texts", type=int, default=300)
    ap.add_argument("--method", default="match")
    ap.add_argument("--top-k", type=int, default=5)
    ap.add_argument("--threshold", type=float, default=0.05)
    ap.add_argument("--alpha", type=float, default=0.05)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument(
        "--fpr-repeats", type=int, default=5, help="placebo-as-real reports for the false-positive rate"
    )
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    args.out = args.out or f"reports_{args.domain}"

    encoder = Encoder()
    setup = (setup_cebab if args.domain == "cebab" else setup_movies)(args, encoder)
    domain, texts, labels, pairs = setup.domain, setup.texts, setup.labels, setup.pairs
    space = domain.space
    explainer = build_explainer(args.method, domain.resources(encoder=encoder))
    cells = plan_cells(domain.schema)
    log(f"{setup.name}: {len(texts)} texts, {len(pairs)} pairs, {len(cells)} cells, method {args.method}")
    # Embeddings first (the encoder caches them): every timed run below pays the same search cost.
    for c in domain.schema.names:
        space.embed(texts, c)
        space.pool_vectors(c)

    clfs = setup.classifiers
    out: dict[str, Any] = {
        "domain": setup.name,
        "note": setup.note,
        "texts": len(texts),
        "method": args.method,
        "top_k": args.top_k,
        "models": {},
    }
    truths = {}
    reports = {}
    for name, clf in clfs.items():
        counted = Counting(clf)
        rows, stats, wall = run_report(
            explainer, space, texts, labels, cells, [counted], args, placebo=True, seed=args.seed
        )
        labs = list(clf.labels)
        rep = summarize_report(rows, labels=labs, cells=cells, alpha=args.alpha, seed=args.seed)
        reports[name] = rep
        truths[name] = true_cace(clf, pairs, cells)
        acc = accuracy(rep, truths[name], labs)
        # The placebo test's false-positive rate: a "method" that is itself a placebo (fresh seeds each repeat).
        raw: list[bool] = []
        corrected: list[bool] = []
        for rep_i in range(args.fpr_repeats):
            fake_rows, _, _ = run_report(
                PlaceboAsReal(space, args.seed + 1000 + rep_i), space, texts, labels, cells, [clf], args,
                placebo=True, seed=args.seed + rep_i,
            )  # fmt: skip
            fake = summarize_report(
                fake_rows, labels=labs, cells=cells, alpha=args.alpha, seed=args.seed + rep_i
            )
            raw += [c["placebo"]["p_value"] < args.alpha for c in fake["cells"]]
            corrected += [c["placebo"]["above_noise"] for c in fake["cells"]]
        real_above = sum(bool(c["placebo"]["above_noise"]) for c in rep["cells"])
        out["models"][name] = {
            "wall_s": round(wall, 2),
            "searches": stats.searches,
            "placebo_searches": stats.placebo_searches,
            "classifier_calls": counted.calls,
            "classifier_texts": counted.texts,
            "cells": len(rep["cells"]),
            "skipped": len(rep["skipped"]),
            "cells_above_noise": real_above,
            **acc,
            "placebo_fpr_raw": float(np.mean(raw)),
            "placebo_fpr_holm": float(np.mean(corrected)),
            "placebo_cells": len(raw),
        }
        log(f"{name}: {json.dumps(out['models'][name])}")
    if len(clfs) >= 2:
        (a, ca), (b, cb) = list(clfs.items())[:2]
        cnt_a, cnt_b = Counting(ca), Counting(cb)
        rows, stats, wall = run_report(
            explainer, space, texts, labels, cells, [cnt_a, cnt_b], args, placebo=False, seed=args.seed
        )
        cmp_ = summarize_comparison(
            rows, labels=list(ca.labels), cells=cells, names=(a, b), threshold=args.threshold, seed=args.seed
        )
        flagged = {c["key"] for c in cmp_["cells"] if c["flagged"]}
        true_diff = {
            k
            for k in truths[a]
            if k in truths[b] and np.abs(truths[b][k] - truths[a][k]).max() > args.threshold
        }
        scored = {c["key"] for c in cmp_["cells"]}
        true_diff &= scored
        tp = len(flagged & true_diff)
        sig = {c["key"] for c in cmp_["cells"] if c["flagged"] and c["significant"]}
        tp_sig = len(sig & true_diff)
        two_reports_wall = out["models"][a]["wall_s"] + out["models"][b]["wall_s"]
        two_reports_texts = out["models"][a]["classifier_texts"] + out["models"][b]["classifier_texts"]
        diff_est = [c["diff"][lab] for c in cmp_["cells"] for lab in cmp_["labels"]]
        diff_true = [
            (truths[b][c["key"]] - truths[a][c["key"]])[j]
            for c in cmp_["cells"]
            for j, _ in enumerate(cmp_["labels"])
        ]
        out["comparison"] = {
            "classifiers": [a, b],
            "threshold": args.threshold,
            "cells": len(scored),
            "flagged": len(flagged),
            "truly_different": len(true_diff),
            "precision": tp / len(flagged) if flagged else None,
            "recall": tp / len(true_diff) if true_diff else None,
            "flagged_and_significant": len(sig),
            "precision_significant": tp_sig / len(sig) if sig else None,
            "recall_significant": tp_sig / len(true_diff) if true_diff else None,
            "spearman_diff": float(spearmanr(diff_est, diff_true).statistic),
            "wall_s": round(wall, 2),
            "classifier_texts": cnt_a.texts + cnt_b.texts,
            "cost_vs_two_reports_wall": round(wall / two_reports_wall, 3),
            "cost_vs_two_reports_texts": round((cnt_a.texts + cnt_b.texts) / two_reports_texts, 3),
        }
        log(f"comparison: {json.dumps(out['comparison'])}")
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"{args.out}.json").write_text(json.dumps(out, indent=2))
    (RESULTS / f"{args.out}.md").write_text(markdown(out, args))
    log(f"wrote {RESULTS / (args.out + '.md')}")


def markdown(out: dict[str, Any], args: argparse.Namespace) -> str:
    cmd = " ".join(["python benchmarks/reports.py", *sys.argv[1:]])
    lines = [
        f"# Model reports and comparisons: {out['domain']}",
        "",
        f"`{cmd}` — {out['note']}; method `{out['method']}`, K={out['top_k']}. 2 CPU cores shared with "
        "other jobs (wall times are upper bounds).",
        "",
        "| classifier | wall s | searches (+ placebo) | classifier calls / texts | cells (skipped) | Spearman cell×label | "
        "Spearman effect | MAE | true CaCE in CI | above noise | placebo FPR raw / Holm |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name, m in out["models"].items():
        lines.append(
            f"| {name} | {m['wall_s']:.1f} | {m['searches']} (+{m['placebo_searches']}) | "
            f"{m['classifier_calls']} / {m['classifier_texts']} | {m['cells']} ({m['skipped']}) | "
            f"{m['spearman_cell_label']:.3f} | {m['spearman_effect']:.3f} | {m['mae']:.4f} | {m['ci_coverage']:.3f} | "
            f"{m['cells_above_noise']}/{m['cells']} | {m['placebo_fpr_raw']:.3f} / {m['placebo_fpr_holm']:.3f} "
            f"({m['placebo_cells']} cells) |"
        )
    if "comparison" in out:
        c = out["comparison"]

        def num(x: float | None) -> str:
            return "–" if x is None else f"{x:.2f}"

        prec, rec = num(c["precision"]), num(c["recall"])
        prec_sig, rec_sig = num(c["precision_significant"]), num(c["recall_significant"])
        lines += [
            "",
            f"Comparison {c['classifiers'][0]} → {c['classifiers'][1]} (threshold {c['threshold']}; truly different: "
            "the true CaCEs differ by more than the threshold on some label):",
            "",
            "| cells | flagged | truly different | precision | recall | flagged + CI excludes 0: n, precision, recall | "
            "Spearman of differences | wall s | classifier texts | cost vs two reports (wall / texts) |",
            "|---|---|---|---|---|---|---|---|---|---|",
            f"| {c['cells']} | {c['flagged']} | {c['truly_different']} | {prec} | {rec} | "
            f"{c['flagged_and_significant']}, {prec_sig}, {rec_sig} | {c['spearman_diff']:.3f} | "
            f"{c['wall_s']:.1f} | {c['classifier_texts']} | {c['cost_vs_two_reports_wall']:.2f} / "
            f"{c['cost_vs_two_reports_texts']:.2f} |",
        ]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
