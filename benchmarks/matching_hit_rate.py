"""Nearest-counterfactual hit rate on held-out CEBaB dev, per concept and space.

    python -m benchmarks.matching_hit_rate

The diagnostic every space reports, measured where no space was trained: for each dev
pair (base, counterfactual) on concept c, is the counterfactual the base's nearest dev
text among those with the target value and the base's confounder labels (the base's own
text excluded)? Spaces compared: pretrained MiniLM; heads trained on train_inclusive with
our default lambdas (TC, TA, AN) and with the paper's (TC, TA, AC); and the full
fine-tune (GPU-made vectors in var/full_ft, when present). Writes
benchmarks/results/matching_hit_rate.md.
"""

from __future__ import annotations

import json
import sys
import time

import numpy as np

from benchmarks.harness import RESULTS, ROOT
from explainers.data.pools import cebab_pool
from explainers.embeddings import Encoder
from explainers.matching.loss import DEFAULT_LAMBDAS, PAPER_LAMBDAS
from explainers.matching.space import ConceptSpace
from explainers.matching.trainers import TrainConfig, train_head


def hit_rate_table(rows: dict[str, dict[str, float]], names: list[str]) -> list[str]:
    """Markdown rows: one line per space, a column per concept and their mean."""
    lines = ["| space | " + " | ".join(names) + " | mean |", "|---|" + "---|" * (len(names) + 1)]
    for label, r in rows.items():
        vals = [r[c] for c in names]
        lines.append(f"| {label} | " + " | ".join(f"{v:.3f}" for v in vals) + f" | {np.mean(vals):.3f} |")
    return lines


def main() -> int:
    enc = Encoder()
    train = cebab_pool("train_inclusive")
    dev = cebab_pool("dev")
    base_train, base_dev = enc.encode(train.texts), enc.encode(dev.texts)
    names = dev.schema.names
    rows = {}
    spaces = {"pretrained MiniLM": ConceptSpace(dev, enc, base_vectors=base_dev)}
    for label, lambdas in (
        ("head, lambdas TC+TA+AN (ours)", DEFAULT_LAMBDAS),
        ("head, lambdas TC+TA+AC (paper)", PAPER_LAMBDAS),
    ):
        t = time.perf_counter()
        heads = {
            c: train_head(
                base_train, train.labels, train.origins, c, names, TrainConfig(lambdas=dict(lambdas))
            )[0]
            for c in names
        }
        spaces[label] = ConceptSpace(dev, enc, heads=heads, base_vectors=base_dev)
        print(label, f"{time.perf_counter() - t:.0f} s", file=sys.stderr)
    full = ROOT / "var" / "full_ft"
    if (full / "full_finetune.json").exists():
        from benchmarks.matching_faithfulness import PrecomputedVectors

        texts = json.loads((ROOT / "var" / "gpu" / "bundle.json").read_text())["texts"]
        from explainers.matching.cebab import without_texts

        encs = {c: PrecomputedVectors(texts, np.load(full / f"{c}.npy"), c) for c in names}
        # The GPU run embedded the dev texts that are in some pair; the others can never be a hit's
        # counterfactual but can be a distractor, so the full space is also scored on the smaller pool.
        known = set(texts)
        small = without_texts(spaces["pretrained MiniLM"], [t for t in dev.texts if t not in known]).pool
        spaces["full fine-tune (GPU, lr 5e-6, 4-6 epochs) [paired dev texts only]"] = ConceptSpace(
            small, enc, encoders=encs
        )
        spaces["pretrained MiniLM [paired dev texts only]"] = ConceptSpace(small, enc)
    for label, sp in spaces.items():
        sp.build_indices()
        rows[label] = {c: sp.nearest_counterfactual_hit_rate(c) for c in names}
        print(label, rows[label], file=sys.stderr)
    lines = [
        "# Nearest-counterfactual hit rate on CEBaB dev (held out)",
        "",
        f"- dev pool: {len(dev)} texts, {len(dev.pairs)} pairs; spaces trained on train_inclusive only",
        "- hit = the pair's counterfactual is the base's nearest dev text with the target value and the "
        "base's confounder labels",
        "",
        *hit_rate_table(rows, names),
    ]
    out = RESULTS / "matching_hit_rate.md"
    out.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
