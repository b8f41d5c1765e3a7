"""Concept taggers: per-concept classifiers that say Positive / Negative / unknown for a text.

The service uses them to infer an intervention's source value when the caller gives none,
matching uses them to label candidate pools, and generation uses them to check that a
counterfactual reached its target without moving the other concepts. So the API is kept
small: `TaggerSet.fit(texts, labels, schema)`, `predict(texts) -> [{concept: value}]`,
`predict_proba`, `save`/`load`.

Each `ConceptTagger` is a logistic regression over the concatenation of a sentence
embedding (MiniLM, disk cached via `explainers.embeddings.Encoder`) and word/bigram
TF-IDF: the embedding carries sentiment, the n-grams carry the concept's vocabulary
("waiter", "loud"), and on CEBaB the pair beats either alone (see benchmarks/taggers.py).
Any labelled corpus works; rows whose label for a concept is not one of its values
("", "no majority") are skipped for that concept only.
"""

from __future__ import annotations

import argparse
import contextvars
import json
import threading
import time
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import joblib
import numpy as np
from scipy import sparse
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression

from explainers.artifacts import META, data_hash, read_meta, write_meta
from explainers.concepts import CEBAB_SCHEMA, Concept, ConceptSchema
from explainers.progress import Progress, checkpoint

FEATURES = ("minilm", "tfidf")
DEFAULT_ENCODER = "sentence-transformers/all-MiniLM-L6-v2"


@dataclass
class ConceptTagger:
    """One concept's classifier over shared features; `values` is the output column order."""

    concept: str
    values: list[str]
    model: LogisticRegression | None  # None when training saw a single value (it always predicts it)

    def predict_proba(self, X) -> np.ndarray:
        n = X.shape[0]
        out = np.zeros((n, len(self.values)))
        if self.model is None:
            out[:, 0] = 1.0
            return out
        proba = self.model.predict_proba(X)
        for j, cls in enumerate(self.model.classes_):
            out[:, self.values.index(str(cls))] = proba[:, j]
        return out


class TaggerSet:
    """One `ConceptTagger` per schema concept, over one shared feature extractor."""

    def __init__(
        self,
        schema: ConceptSchema,
        *,
        features: Sequence[str] = FEATURES,
        encoder_model: str = DEFAULT_ENCODER,
        C: float = 2.0,
        tfidf_weight: float = 1.0,
    ) -> None:
        unknown = set(features) - set(FEATURES)
        if unknown or not features:
            raise ValueError(f"features must be a non-empty subset of {FEATURES}, got {list(features)}")
        self.schema = schema
        self.features = tuple(features)
        self.encoder_model = encoder_model
        self.C = C
        self.tfidf_weight = tfidf_weight
        self.vectorizer: TfidfVectorizer | None = None
        self.taggers: dict[str, ConceptTagger] = {}
        self._encoder = None

    # -- features ---------------------------------------------------------------------------
    @property
    def encoder(self):
        if self._encoder is None:
            from explainers.embeddings import Encoder

            self._encoder = Encoder(self.encoder_model)
        return self._encoder

    def _features(self, texts: Sequence[str]):
        parts = []
        if "minilm" in self.features:
            parts.append(sparse.csr_matrix(self.encoder.encode(list(texts))))
        if "tfidf" in self.features:
            assert self.vectorizer is not None, "TaggerSet is not fitted"
            parts.append(self.vectorizer.transform(list(texts)) * self.tfidf_weight)
        return sparse.hstack(parts, format="csr") if len(parts) > 1 else parts[0]

    # -- training and inference -------------------------------------------------------------
    def fit(
        self,
        texts: Sequence[str],
        labels: Sequence[Mapping[str, str]],
        schema: ConceptSchema | None = None,
        *,
        workers: int = 1,
    ) -> TaggerSet:
        """Fit every concept's tagger; `labels[i]` maps concept -> value for `texts[i]`.

        `workers` > 1 fits that many concepts at once (the same taggers, sooner on several cores).
        """
        if schema is not None:
            self.schema = schema
        if len(texts) != len(labels):
            raise ValueError(f"{len(texts)} texts but {len(labels)} label rows")
        if "tfidf" in self.features:
            self.vectorizer = TfidfVectorizer(
                ngram_range=(1, 2), min_df=1 if len(texts) < 200 else 2, sublinear_tf=True
            )
            self.vectorizer.fit(list(texts))
        X = self._features(texts)
        bar = Progress(len(self.schema.concepts), "taggers", unit="concept")
        lock = threading.Lock()

        def fit_one(concept: Concept) -> ConceptTagger:
            checkpoint()  # a cancelled build stops between concepts
            values = list(concept.values)
            keep = [i for i, row in enumerate(labels) if row.get(concept.name) in values]
            if not keep:
                raise ValueError(f"no usable labels for concept {concept.name!r}")
            y = np.array([labels[i][concept.name] for i in keep])
            if len(set(y)) == 1:
                only = str(y[0])
                tagger = ConceptTagger(concept.name, [only] + [v for v in values if v != only], None)
            else:
                model = LogisticRegression(C=self.C, max_iter=3000)
                model.fit(X[keep], y)
                tagger = ConceptTagger(concept.name, values, model)
            with lock:
                bar.update(note=concept.name)
            return tagger

        concepts = list(self.schema.concepts)
        if workers > 1 and len(concepts) > 1:
            # Each concept's fit is independent (and deterministic): side by side on single-threaded
            # BLAS, as many as `workers` cores (the solver's sparse products release the GIL).
            # Each worker runs in a copy of this context: progress reaches the caller's stage and
            # a cancelled build stops its fits (explainers.progress.cancellable).
            from threadpoolctl import threadpool_limits

            with threadpool_limits(1), ThreadPoolExecutor(min(workers, len(concepts))) as pool:
                futures = [pool.submit(contextvars.copy_context().run, fit_one, c) for c in concepts]
                fitted = [f.result() for f in futures]
        else:
            fitted = [fit_one(c) for c in concepts]
        self.taggers = {c.name: t for c, t in zip(concepts, fitted, strict=True)}
        bar.close()
        return self

    def _check_fitted(self) -> None:
        if not self.taggers:
            raise RuntimeError("TaggerSet is not fitted; call fit() or TaggerSet.load()")

    def predict_proba(self, texts: Sequence[str]) -> dict[str, np.ndarray]:
        """concept -> (n, len(values)) probabilities, columns in `self.values(concept)` order."""
        self._check_fitted()
        if len(texts) == 0:
            return {c: np.zeros((0, len(t.values))) for c, t in self.taggers.items()}
        X = self._features(texts)
        return {c: t.predict_proba(X) for c, t in self.taggers.items()}

    def values(self, concept: str) -> list[str]:
        return list(self.taggers[concept].values)

    def predict(self, texts: Sequence[str]) -> list[dict[str, str]]:
        """The most probable value of every concept, one dict per text."""
        proba = self.predict_proba(texts)
        cols = {c: np.asarray(self.taggers[c].values)[p.argmax(axis=1)] for c, p in proba.items()}
        return [{c: str(cols[c][i]) for c in cols} for i in range(len(texts))]

    def accuracy(
        self, texts: Sequence[str], labels: Sequence[Mapping[str, str]]
    ) -> dict[str, dict[str, float]]:
        """Per-concept accuracy (and n) over rows whose gold label is one of the concept's values."""
        preds = self.predict(texts)
        out: dict[str, dict[str, float]] = {}
        for concept in self.schema.concepts:
            pairs = [
                (p[concept.name], g[concept.name])
                for p, g in zip(preds, labels, strict=True)
                if g.get(concept.name) in concept.values
            ]
            acc = float(np.mean([p == g for p, g in pairs])) if pairs else float("nan")
            out[concept.name] = {"accuracy": round(acc, 4), "n": len(pairs)}
        return out

    # -- persistence --------------------------------------------------------------------------
    def save(self, directory: Path, **meta_fields) -> dict:
        self._check_fitted()
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        joblib.dump({"vectorizer": self.vectorizer, "taggers": self.taggers}, directory / "taggers.joblib")
        return write_meta(
            directory,
            "taggers",
            schema=self.schema.to_dict(),
            features=list(self.features),
            encoder=self.encoder_model if "minilm" in self.features else None,
            C=self.C,
            tfidf_weight=self.tfidf_weight,
            **meta_fields,
        )

    @classmethod
    def load(cls, directory: Path) -> TaggerSet:
        directory = Path(directory)
        meta = read_meta(directory, "taggers")
        ts = cls(
            ConceptSchema.from_dict(meta["schema"]),
            features=meta["features"],
            encoder_model=meta.get("encoder") or DEFAULT_ENCODER,
            C=meta.get("C", 2.0),
            tfidf_weight=meta.get("tfidf_weight", 1.0),
        )
        state = joblib.load(directory / "taggers.joblib")
        ts.vectorizer, ts.taggers = state["vectorizer"], state["taggers"]
        return ts


# -- CEBaB ------------------------------------------------------------------------------------
def cebab_corpus(split: str | Path, data_dir: Path | None = None) -> tuple[list[str], list[dict[str, str]]]:
    """Texts and raw per-concept labels ("" / "no majority" kept, so `fit` skips them per concept)."""
    from explainers.data.cebab import load_split

    reviews = load_split(split, data_dir)
    return [r.text for r in reviews], [dict(r.labels) for r in reviews]


def train_cebab_taggers(
    out: Path, data_dir: Path | None = None, *, split: str = "train_inclusive", workers: int = 1, **options
) -> dict:
    """Train CEBaB taggers on `split`, save them to `out` with per-concept dev accuracy in meta.json."""
    texts, labels = cebab_corpus(split, data_dir)
    started = time.perf_counter()
    ts = TaggerSet(CEBAB_SCHEMA, **options).fit(texts, labels, workers=workers)
    train_s = time.perf_counter() - started
    dev_texts, dev_labels = cebab_corpus("dev", data_dir)
    dev = ts.accuracy(dev_texts, dev_labels)
    return ts.save(
        Path(out),
        name="cebab",
        trained_on=f"CEBaB {split} (per-concept majority labels)",
        data_hash=data_hash(texts),
        n_train=len(texts),
        train_seconds=round(train_s, 2),
        dev_accuracy=dev,
    )


def ensure_taggers(root: Path, data_dir: Path | None = None) -> Path:
    """Path to the CEBaB taggers under root/taggers/cebab, training them on first use."""
    out = Path(root) / "taggers" / "cebab"
    if not (out / META).exists():
        train_cebab_taggers(out, data_dir)
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="cace taggers", description="Train or evaluate CEBaB concept taggers.")
    sub = ap.add_subparsers(dest="cmd", required=True)
    t = sub.add_parser("train", help="train taggers on CEBaB train_inclusive (once; --force retrains)")
    e = sub.add_parser("eval", help="per-concept accuracy of the trained taggers on a split")
    for p in (t, e):
        p.add_argument("--root", type=Path, default=Path("var"))
        p.add_argument("--data", type=Path, default=None, help="CEBaB directory")
    t.add_argument("--force", action="store_true")
    e.add_argument("--split", default="dev", help="split name or path to a split file")
    args = ap.parse_args(argv)
    if args.cmd == "train":
        out = Path(args.root) / "taggers" / "cebab"
        if args.force and (out / META).exists():
            (out / META).unlink()
        path = ensure_taggers(args.root, args.data)
        print(json.dumps(read_meta(path)["dev_accuracy"], indent=2))
        return 0
    ts = TaggerSet.load(ensure_taggers(args.root, args.data))
    texts, labels = cebab_corpus(args.split, args.data)
    print(json.dumps(ts.accuracy(texts, labels), indent=2))
    return 0
