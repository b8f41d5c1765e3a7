"""Reference classifiers trained on CEBaB, for benchmarks, demos and the embedded default.

Both predict the 5-way review rating (`review_majority`, "no majority" dropped) from
`train_exclusive`:
- `tfidf-lr`: TF-IDF + logistic regression; trains in seconds.
- `minilm-ft`: all-MiniLM-L6-v2 fine-tuned with a classification head; a transformers folder.

`ensure_reference(name, root)` loads an artifact or trains it on first use.
"""

from __future__ import annotations

import time
from pathlib import Path

import joblib
import numpy as np
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline

from explainers.artifacts import META, data_hash, read_meta, write_meta
from explainers.classifiers.base import Classifier
from explainers.classifiers.local import SklearnClassifier
from explainers.data.cebab import load_split
from explainers.reference.common import LABELS, REFERENCE_MODELS, rated


def tfidf_lr_pipeline() -> Pipeline:
    """The `tfidf-lr` model, unfitted (benchmarks train it on other texts of the same corpus too)."""
    return Pipeline(
        [
            ("tfidf", TfidfVectorizer(ngram_range=(1, 2), min_df=2, sublinear_tf=True)),
            ("lr", LogisticRegression(C=4.0, max_iter=2000)),
        ]
    )


def train_tfidf_lr(out: Path, data_dir: Path | None = None) -> dict:
    started = time.perf_counter()
    texts, y = rated(load_split("train_exclusive", data_dir))
    pipe = tfidf_lr_pipeline()
    pipe.fit(texts, y)
    train_s = time.perf_counter() - started
    out.mkdir(parents=True, exist_ok=True)
    joblib.dump(pipe, out / "model.joblib")
    dev_texts, dev_y = rated(load_split("dev", data_dir))
    acc = float(np.mean(pipe.predict(dev_texts) == np.array(dev_y)))
    return write_meta(
        out,
        "classifier",
        name="tfidf-lr",
        format="sklearn",
        labels=LABELS,
        trained_on="CEBaB train_exclusive review_majority (no majority dropped)",
        data_hash=data_hash(texts + y),
        n_train=len(texts),
        train_seconds=round(train_s, 2),
        dev_accuracy=round(acc, 4),
    )


def load_reference(path: Path) -> Classifier:
    meta = read_meta(path, "classifier")
    if meta["format"] == "sklearn":
        return SklearnClassifier.load(path, labels=meta["labels"])
    if meta["format"] == "transformers":
        from explainers.classifiers.transformers_local import TransformersClassifier

        return TransformersClassifier.load(path)
    raise ValueError(f"unknown classifier format {meta['format']!r} in {path}")


def ensure_reference(name: str, root: Path, data_dir: Path | None = None) -> Path:
    """Path to a trained reference classifier under root/classifiers/name, training it if missing."""
    if name not in REFERENCE_MODELS:
        raise ValueError(f"unknown reference classifier {name!r}; choose one of {REFERENCE_MODELS}")
    out = Path(root) / "classifiers" / name
    if (out / META).exists():
        return out
    if name == "tfidf-lr":
        train_tfidf_lr(out, data_dir)
    else:
        from explainers.reference.minilm import train_minilm_ft

        train_minilm_ft(out, data_dir)
    return out


def evaluate(classifier: Classifier, split: str | Path = "dev", data_dir: Path | None = None) -> dict:
    """Accuracy, macro-F1 and mean absolute rating error on a split's rated reviews, plus throughput."""
    texts, y = rated(load_split(split, data_dir))
    started = time.perf_counter()
    proba = classifier.predict_proba(texts)
    seconds = time.perf_counter() - started
    pred = np.asarray(classifier.labels)[proba.argmax(axis=1)]
    gold = np.asarray(y)
    f1s = []
    for lab in classifier.labels:
        tp = float(np.sum((pred == lab) & (gold == lab)))
        denom = float(np.sum(pred == lab) + np.sum(gold == lab))
        f1s.append(2 * tp / denom if denom else 0.0)
    mae = (
        float(np.mean(np.abs(pred.astype(float) - gold.astype(float))))
        if all(lab.isdigit() for lab in classifier.labels)
        else None
    )
    return {
        "split": str(split),
        "n": len(texts),
        "accuracy": round(float(np.mean(pred == gold)), 4),
        "macro_f1": round(float(np.mean(f1s)), 4),
        "mae": None if mae is None else round(mae, 4),
        "texts_per_second": round(len(texts) / max(seconds, 1e-9), 1),
    }


__all__ = [
    "LABELS",
    "REFERENCE_MODELS",
    "ensure_reference",
    "evaluate",
    "load_reference",
    "rated",
    "tfidf_lr_pipeline",
    "train_tfidf_lr",
]
