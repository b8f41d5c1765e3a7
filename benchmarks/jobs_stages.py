"""Per-stage CPU cost of an effects batch (the numbers behind jobs_scaleout_plan.md).

In one process, OMP_NUM_THREADS=1, on N distinct CEBaB texts in batches of 32, each stage
timed in CPU seconds on its own: embedding the query texts (torch and onnx-int8), tagging
them (embeddings cached), finding counterfactuals (`counterfactuals_batch`: projection +
FAISS for match, a pool product for pt_match; embeddings cached), and scoring the distinct
base + counterfactual texts with the in-process tfidf-lr.

    OMP_NUM_THREADS=1 .venv/bin/python -m benchmarks.jobs_stages [--n-texts 1000]
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

from benchmarks.harness import RESULTS, ROOT

DATA_DIR = Path(os.environ.get("CACE_TEST_DATA_DIR", ROOT / "var" / "test"))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n-texts", type=int, default=1000)
    ap.add_argument("--out", type=Path, default=RESULTS / "jobs_stages.md")
    args = ap.parse_args(argv)
    import torch

    torch.set_num_threads(1)
    from benchmarks.jobs_throughput import CONCEPT, TARGET, bench_texts
    from explainers.concepts import CEBAB_SCHEMA, Intervention
    from explainers.data.pools import cebab_pool
    from explainers.embeddings import Encoder
    from explainers.matching.cebab import ensure_cebab_space
    from explainers.reference import load_reference
    from explainers.registry import Resources, build_explainer
    from explainers.taggers import TaggerSet

    texts = [f"{t} (stage)" for t in bench_texts(args.n_texts)]  # never in an embedding cache
    clf = load_reference(DATA_DIR / "classifiers" / "tfidf-lr")
    taggers = TaggerSet.load(DATA_DIR / "taggers" / "cebab")
    enc = Encoder()
    pool = cebab_pool("train_inclusive")
    enc.encode(pool.texts)
    space = ensure_cebab_space(DATA_DIR, encoder=enc)
    res = Resources(schema=CEBAB_SCHEMA, pool=pool, encoder=enc, space=space, taggers=taggers, seed=0)
    batches = [texts[i : i + 32] for i in range(0, len(texts), 32)]

    def cpu(fn, over=None) -> float:
        over = batches if over is None else over
        c = time.process_time()
        for b in over:
            fn(b)
        return (time.process_time() - c) / sum(len(b) for b in over) * 1000

    int8 = Encoder(backend="onnx-int8", use_disk_cache=False)
    int8._embed(texts[:8])
    stages = [
        ("embed queries, torch", cpu(lambda b: enc._embed(b))),
        ("embed queries, onnx-int8", cpu(lambda b: int8._embed(b))),
    ]
    enc.encode(texts)  # the rest run on cached embeddings, as they do after the tagging step's embedding
    labels = {t: lab for t, lab in zip(texts, taggers.predict(texts), strict=True)}
    stages.append(("tag (source inference), embeddings cached", cpu(lambda b: taggers.predict(b))))
    changed = [t for t in texts if labels[t][CONCEPT] != TARGET]  # the others need only a base prediction
    cbatches = [changed[i : i + 32] for i in range(0, len(changed), 32)]
    for method in ("match", "pt_match"):
        ex = build_explainer(method, res)

        def find(b, ex=ex):
            ivs = [Intervention(CONCEPT, TARGET, labels[t][CONCEPT]) for t in b]
            return ex.counterfactuals_batch(b, ivs, 10, base_labels=[labels[t] for t in b])

        stages.append((f"find 10 counterfactuals ({method}), embeddings cached", cpu(find, cbatches)))
        found = {t: cf for b in cbatches for t, cf in zip(b, find(b), strict=True)}
        stages.append(
            (
                f"score base + counterfactuals with tfidf-lr ({method}, distinct texts per batch)",
                cpu(
                    lambda b, found=found: clf.predict_proba(
                        list(dict.fromkeys([*b, *(c.text for t in b for c in found[t][0])]))
                    ),
                    cbatches,
                ),
            )
        )
    lines = [
        "# Per-stage CPU cost of an effects batch",
        "",
        f"{len(texts)} distinct CEBaB texts in batches of 32, one thread, CPU ms per text (process time); "
        f"finding and scoring counterfactuals per changed text ({len(changed)} of them: the others already "
        f"have {CONCEPT}={TARGET}). The pool is CEBaB train_inclusive (the shipped space).",
        "",
        "| stage | CPU ms / text |",
        "|---|---:|",
        *[f"| {name} | {ms:.2f} |" for name, ms in stages],
        "",
    ]
    args.out.write_text("\n".join(lines))
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    raise SystemExit(main())
