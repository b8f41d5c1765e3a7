"""Full fine-tune of all-MiniLM-L6-v2 per CEBaB concept, run where a GPU is (2 CPU cores cannot).

Two steps:

    python -m benchmarks.matching_full_finetune prepare var/gpu     # here: pool + dev texts + fp16 model
    python -m benchmarks.matching_full_finetune train var/gpu $OUT  # on the GPU machine

`train` fine-tunes one encoder per concept with the ordered contrastive loss (`train_full`,
paper defaults: tau 0.1, lr 5e-6, 8 epochs unless the time budget ends first) and writes
the fine-tuned embeddings of every bundle text (float16, one .npy per concept) plus a
JSON of training facts. The model is carried as float16 to fit the transfer limit and
trained in float32. `benchmarks/matching_faithfulness.py --full-vectors DIR` evaluates
a space built from those vectors.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path


def prepare(out: Path) -> None:
    from sentence_transformers import SentenceTransformer

    from explainers.data.cebab import build_pairs, load_split
    from explainers.data.pools import cebab_pool
    from explainers.embeddings import resolve_model

    out.mkdir(parents=True, exist_ok=True)
    pool = cebab_pool("train_inclusive")
    dev = list(
        dict.fromkeys(t for p in build_pairs(load_split("dev")) for t in (p.base.text, p.counterfactual.text))
    )
    texts = list(dict.fromkeys(pool.texts + dev))
    (out / "bundle.json").write_text(
        json.dumps(
            {
                "pool_texts": pool.texts,
                "labels": pool.labels,
                "origins": pool.origins,
                "concepts": pool.schema.names,
                "texts": texts,
            }
        )
    )
    model = SentenceTransformer(resolve_model("all-MiniLM-L6-v2"), device="cpu")
    model.half()
    model.save(str(out / "model"))
    print(f"bundle: {len(pool.texts)} pool texts, {len(texts)} texts to embed")


def train(bundle_dir: Path, out: Path, budget_s: float = 110.0) -> None:
    import numpy as np
    import torch
    from sentence_transformers import SentenceTransformer

    from explainers.matching.trainers import TrainConfig, train_full

    data = json.loads((bundle_dir / "bundle.json").read_text())
    device = "cuda" if torch.cuda.is_available() else "cpu"
    cfg = TrainConfig(lr=5e-6, epochs=8, batch_size=32, max_a=8, max_n=8)
    facts = {
        "device": torch.cuda.get_device_name(0) if device == "cuda" else "cpu",
        "config": cfg.to_dict(),
        "budget_s_per_concept": budget_s,
        "concepts": {},
    }
    started = time.perf_counter()
    base = SentenceTransformer(str(bundle_dir / "model"), device=device).float()
    vec = base.encode(data["texts"], batch_size=256, normalize_embeddings=True, convert_to_numpy=True)
    np.save(out / "pretrained.npy", vec.astype(np.float16))
    for c in data["concepts"]:
        model_dir = Path("/tmp/ft") / c
        info = train_full(
            data["pool_texts"],
            data["labels"],
            data["origins"],
            c,
            data["concepts"],
            model_dir,
            base_model=str(bundle_dir / "model"),
            config=cfg,
            device=device,
            time_budget_s=budget_s,
            log=print,
        )
        ft = SentenceTransformer(str(model_dir), device=device)
        vec = ft.encode(data["texts"], batch_size=256, normalize_embeddings=True, convert_to_numpy=True)
        np.save(out / f"{c}.npy", vec.astype(np.float16))
        facts["concepts"][c] = info
        print(c, info, flush=True)
    facts["total_s"] = round(time.perf_counter() - started, 1)
    (out / "full_finetune.json").write_text(json.dumps(facts, indent=1))


if __name__ == "__main__":
    if sys.argv[1] == "prepare":
        prepare(Path(sys.argv[2]))
    else:
        train(Path(sys.argv[2]), Path(sys.argv[3]), float(sys.argv[4]) if len(sys.argv) > 4 else 110.0)
