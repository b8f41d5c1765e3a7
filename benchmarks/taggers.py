"""Concept taggers on CEBaB: per-concept dev accuracy by feature set, next to the majority class.

Trains a `TaggerSet` on train_inclusive for each feature set (MiniLM embedding, TF-IDF, both)
and scores dev per concept (rows whose majority label is Positive/Negative/unknown only).
The majority-class column is what a tagger must beat: "unknown" dominates noise and ambiance.
Embeddings come from the shared disk cache, so a second run costs only the regressions.

    python -m benchmarks.taggers [--data DIR] [--features minilm,tfidf minilm tfidf]

Writes benchmarks/results/taggers.md and prints the same markdown.
"""

from __future__ import annotations

import argparse
import os
import time
from collections import Counter
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "2")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from benchmarks.harness import RESULTS  # noqa: E402
from explainers.concepts import CEBAB_SCHEMA  # noqa: E402
from explainers.taggers import TaggerSet, cebab_corpus  # noqa: E402

OUT = RESULTS / "taggers.md"


def majority_accuracy(
    train_labels: list[dict[str, str]],
    dev_labels: list[dict[str, str]],
    concept: str,
    values: tuple[str, ...],
) -> float:
    """Accuracy of always answering train's most common value for `concept`."""
    top = Counter(r[concept] for r in train_labels if r.get(concept) in values).most_common(1)[0][0]
    gold = [r[concept] for r in dev_labels if r.get(concept) in values]
    return sum(g == top for g in gold) / len(gold)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=None, help="CEBaB directory")
    ap.add_argument("--features", nargs="+", default=["minilm,tfidf", "minilm", "tfidf"])
    args = ap.parse_args(argv)
    texts, labels = cebab_corpus("train_inclusive", args.data)
    dev_texts, dev_labels = cebab_corpus("dev", args.data)
    names = CEBAB_SCHEMA.names
    rows = []
    maj = {c: majority_accuracy(labels, dev_labels, c, CEBAB_SCHEMA[c].values) for c in names}
    rows.append(
        ("majority class", *(f"{maj[c]:.3f}" for c in names), f"{sum(maj.values()) / 4:.3f}", "-", "-")
    )
    n = {}
    for feats in args.features:
        ts = TaggerSet(CEBAB_SCHEMA, features=feats.split(","))
        started = time.perf_counter()
        ts.fit(texts, labels)
        fit_s = time.perf_counter() - started
        started = time.perf_counter()
        acc = ts.accuracy(dev_texts, dev_labels)
        pred_s = time.perf_counter() - started
        n = {c: acc[c]["n"] for c in names}
        mean = sum(acc[c]["accuracy"] for c in names) / len(names)
        rows.append(
            (
                feats.replace(",", " + "),
                *(f"{acc[c]['accuracy']:.3f}" for c in names),
                f"{mean:.3f}",
                f"{fit_s:.1f}",
                f"{len(dev_texts) / pred_s:.0f}",
            )
        )
        print(rows[-1], flush=True)
    header = ["features", *names, "mean", "fit s", "dev texts/s"]
    table = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    table += ["| " + " | ".join(r) + " |" for r in rows]
    md = "\n".join(
        [
            "# Concept taggers: CEBaB dev accuracy per concept",
            "",
            f"Trained on train_inclusive ({len(texts)} texts; rows without a usable label skipped per concept), "
            f"scored on dev rows with a Positive/Negative/unknown majority label (n = "
            + ", ".join(f"{c} {n.get(c, '?')}" for c in names)
            + "). Logistic regression (C=2) per concept; "
            "MiniLM = all-MiniLM-L6-v2 sentence embedding (disk cached, so 'fit s' excludes first-time "
            "embedding), TF-IDF = word 1-2 grams. 'dev texts/s' includes embedding any text not yet cached. "
            "2-core CPU shared with other jobs, so times are upper bounds.",
            "",
            *table,
            "",
            "Command: `python -m benchmarks.taggers`",
            "",
        ]
    )
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(md)
    print(md)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
