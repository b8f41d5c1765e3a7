"""Reference classifiers trained on CEBaB, for benchmarks, demos and the embedded default.

Both predict the 5-way review rating (`review_majority`, "no majority" dropped) from
`train_exclusive`:
- `tfidf-lr`: TF-IDF + logistic regression; trains in seconds.
- `minilm-ft`: all-MiniLM-L6-v2 fine-tuned with a classification head; a transformers folder.

`ensure_reference(name, root)` loads an artifact or trains it on first use.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import joblib
import numpy as np
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline

from explainers.artifacts import data_hash, read_meta, write_meta
from explainers.bench.cebab import Review, load_split
from explainers.classifiers.base import Classifier
from explainers.classifiers.local import SklearnClassifier

LABELS = ["1", "2", "3", "4", "5"]
REFERENCE_MODELS = ("tfidf-lr", "minilm-ft")


def rated(reviews: list[Review]) -> tuple[list[str], list[str]]:
    keep = [r for r in reviews if r.review_majority in LABELS]
    return [r.text for r in keep], [r.review_majority for r in keep]


def train_tfidf_lr(out: Path, data_dir: Path | None = None) -> dict:
    started = time.perf_counter()
    texts, y = rated(load_split("train_exclusive", data_dir))
    pipe = Pipeline([
        ("tfidf", TfidfVectorizer(ngram_range=(1, 2), min_df=2, sublinear_tf=True)),
        ("lr", LogisticRegression(C=4.0, max_iter=2000)),
    ])
    pipe.fit(texts, y)
    train_s = time.perf_counter() - started
    out.mkdir(parents=True, exist_ok=True)
    joblib.dump(pipe, out / "model.joblib")
    dev_texts, dev_y = rated(load_split("dev", data_dir))
    acc = float(np.mean(pipe.predict(dev_texts) == np.array(dev_y)))
    return write_meta(
        out, "classifier", name="tfidf-lr", format="sklearn", labels=LABELS,
        trained_on="CEBaB train_exclusive review_majority (no majority dropped)",
        data_hash=data_hash(texts + y), n_train=len(texts), train_seconds=round(train_s, 2),
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
    if (out / "meta.json").exists():
        return out
    if name == "tfidf-lr":
        train_tfidf_lr(out, data_dir)
    else:
        from explainers.reference_minilm import train_minilm_ft

        train_minilm_ft(out, data_dir)
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="cace classifiers", description=__doc__)
    sub = ap.add_subparsers(dest="cmd", required=True)
    t = sub.add_parser("train", help="train a reference classifier")
    t.add_argument("name", choices=REFERENCE_MODELS)
    t.add_argument("--root", type=Path, default=Path("var"))
    t.add_argument("--data", type=Path, default=None)
    t.add_argument("--force", action="store_true")
    e = sub.add_parser("eval", help="accuracy of a classifier on a CEBaB split (rated reviews)")
    e.add_argument("classifier", help="reference name (trained under --root if missing) or artifact directory")
    e.add_argument("--split", default="dev", help="split name or path to a split file")
    e.add_argument("--root", type=Path, default=Path("var"))
    e.add_argument("--data", type=Path, default=None)
    s = sub.add_parser("serve", help="serve a classifier over HTTP (HF JSON, Open Inference V2, KServe V1)")
    s.add_argument("classifier", help="artifact directory, .joblib file, or reference name (tfidf-lr, minilm-ft)")
    s.add_argument("--host", default="127.0.0.1")
    s.add_argument("--port", type=int, default=8080)
    s.add_argument("--name", help="model name in V2/V1 routes (default: the artifact's name)")
    s.add_argument("--root", help="where reference classifiers are kept (default $CACE_DATA_DIR or var)")
    args = ap.parse_args(argv)
    if args.cmd == "train":
        out = Path(args.root) / "classifiers" / args.name
        if args.force and (out / "meta.json").exists():
            (out / "meta.json").unlink()
        path = ensure_reference(args.name, args.root, args.data)
        print(read_meta(path))
    elif args.cmd == "eval":
        path = ensure_reference(args.classifier, args.root, args.data) if args.classifier in REFERENCE_MODELS \
            else Path(args.classifier)
        print(json.dumps(evaluate(load_reference(path), args.split, args.data), indent=2))
    elif args.cmd == "serve":
        from explainers.serving import serve

        serve(args.classifier, args.host, args.port, name=args.name, root=args.root)
    return 0


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
    mae = float(np.mean(np.abs(pred.astype(float) - gold.astype(float)))) if all(
        lab.isdigit() for lab in classifier.labels) else None
    return {"split": str(split), "n": len(texts), "accuracy": round(float(np.mean(pred == gold)), 4),
            "macro_f1": round(float(np.mean(f1s)), 4), "mae": None if mae is None else round(mae, 4),
            "texts_per_second": round(len(texts) / max(seconds, 1e-9), 1)}
