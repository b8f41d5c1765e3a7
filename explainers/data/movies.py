"""A templated movie-review corpus with known counterfactual edits: a second, non-CEBaB domain.

Three concepts (acting, plot, music), each `good`, `bad` or `unknown` (not mentioned). A review
is a few neutral sentences plus one sentence per mentioned concept; an edit swaps (or drops,
or adds) exactly one concept's sentence and leaves every other word as it was, so every edit is
a true counterfactual of its origin. Each review also has a star rating ("neg"/"pos") driven by
the concepts (plot weighs most, music least) plus noise, for training a test classifier.

It exists so the service, its tests and benchmarks can be run end to end on a domain whose
schema is not CEBaB's, with nothing downloaded.
"""

from __future__ import annotations

from typing import Any

import numpy as np

CONCEPTS = ("acting", "plot", "music")
VALUES = ("bad", "good", "unknown")
WEIGHTS = {"acting": 1.0, "plot": 1.5, "music": 0.5}
PHRASES = {
    ("acting", "good"): [
        "The cast is superb in every scene.",
        "The lead gives a moving, nuanced performance.",
        "Every actor feels completely believable.",
        "The performances are the best I saw this year.",
        "The actors have wonderful chemistry.",
    ],
    ("acting", "bad"): [
        "The acting is wooden and flat.",
        "The lead mumbles through every line.",
        "Nobody in the cast seems to care.",
        "The performances are painfully stiff.",
        "The actors read their lines like a shopping list.",
    ],
    ("plot", "good"): [
        "The story is gripping from start to finish.",
        "The plot twists land perfectly.",
        "The script is clever and tightly written.",
        "The story kept me guessing until the end.",
        "The narrative builds to a satisfying ending.",
    ],
    ("plot", "bad"): [
        "The story makes no sense at all.",
        "The plot is predictable and dull.",
        "The script is a mess of loose ends.",
        "The story drags and goes nowhere.",
        "The twists are obvious an hour ahead.",
    ],
    ("music", "good"): [
        "The score is beautiful and haunting.",
        "The soundtrack fits every scene.",
        "The music lifts the whole film.",
        "The songs are catchy and well placed.",
    ],
    ("music", "bad"): [
        "The score is loud and intrusive.",
        "The soundtrack is forgettable noise.",
        "The music drowns out the dialogue.",
        "The songs feel cheap and out of place.",
    ],
}
FILLERS = [
    "I watched it on a rainy Sunday.",
    "The cinema was half empty.",
    "It runs a little over two hours.",
    "I went with two friends.",
    "It is the director's third feature.",
    "We got popcorn before it started.",
    "It was released last spring.",
    "I had read nothing about it beforehand.",
    "The screening started late.",
    "It is based on a short novel.",
]

SCHEMA_DICT = {
    "domain": "movie review",
    "concepts": [
        {
            "name": c,
            "values": list(VALUES),
            "description": f"what the review says about the {c}",
            "value_descriptions": {
                "good": f"the review praises the {c}",
                "bad": f"the review criticises the {c}",
                "unknown": f"the review does not mention the {c}",
            },
        }
        for c in CONCEPTS
    ],
}


def rating(labels: dict[str, str], rng: np.random.Generator) -> str:
    score = sum(WEIGHTS[c] * {"good": 1.0, "bad": -1.0}.get(labels[c], 0.0) for c in CONCEPTS)
    return "pos" if score + rng.normal(0.0, 0.6) > 0 else "neg"


def _render(sentences: list[tuple[str, str | None]]) -> str:
    return " ".join(s for s, _ in sentences)


def movie_corpus(
    n_origins: int = 200,
    *,
    edits: bool = True,
    seed: int = 0,
    prefix: str = "m",
    edits_per_concept: int = 1,
) -> list[dict[str, Any]]:
    """Rows {text, labels, origin, id, rating}: each origin's review, then (if `edits`) its edits.

    One edit per concept by default (to a random other value); with `edits_per_concept=2`
    every other value, so two edits of one concept also form a pair (edit->edit), as in CEBaB.
    """
    rng = np.random.default_rng(seed)
    rows: list[dict[str, Any]] = []
    for o in range(n_origins):
        labels = {c: str(rng.choice(VALUES, p=[0.4, 0.4, 0.2])) for c in CONCEPTS}
        sentences: list[tuple[str, str | None]] = [
            (f, None) for f in rng.choice(FILLERS, size=2, replace=False)
        ]
        for c in rng.permutation(CONCEPTS):
            if labels[c] != "unknown":
                options = PHRASES[(c, labels[c])]
                sentences.insert(
                    int(rng.integers(0, len(sentences) + 1)), (options[rng.integers(len(options))], c)
                )
        # Every row of an origin names its original's id as its origin: the original is the row
        # whose id is its origin (what an uploaded corpus says with the same two fields).
        name = f"{prefix}{seed}-{o}"
        origin = f"{name}-0"
        rows.append(
            {
                "text": _render(sentences),
                "labels": dict(labels),
                "origin": origin,
                "id": origin,
                "rating": rating(labels, rng),
            }
        )
        if not edits:
            continue
        k = 0
        for c in CONCEPTS:
            others = [v for v in VALUES if v != labels[c]]
            # One edit draws its target here, as it always did, so the default corpus is unchanged.
            targets = [str(rng.choice(others))] if edits_per_concept == 1 else others[:edits_per_concept]
            for target in targets:
                k += 1
                rows.append(_edit(sentences, labels, c, target, rng, name, k))
    return rows


def _edit(
    sentences: list[tuple[str, str | None]],
    labels: dict[str, str],
    c: str,
    target: str,
    rng: np.random.Generator,
    name: str,
    k: int,
) -> dict[str, Any]:
    edited = [(s, cc) for s, cc in sentences if cc != c]
    if target != "unknown":
        options = PHRASES[(c, target)]
        at = next(
            (i for i, (_, cc) in enumerate(sentences) if cc == c),
            int(rng.integers(0, len(edited) + 1)),
        )
        edited.insert(min(at, len(edited)), (options[rng.integers(len(options))], c))
    new = {**labels, c: target}
    return {
        "text": _render(edited),
        "labels": new,
        "origin": f"{name}-0",
        "id": f"{name}-{k}",
        "rating": rating(new, rng),
    }


def train_rating_classifier(rows: list[dict[str, Any]]) -> Any:
    """A TF-IDF + logistic regression pipeline predicting the rating (the test's black-box model)."""
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import Pipeline

    pipe = Pipeline(
        [("tfidf", TfidfVectorizer(ngram_range=(1, 2))), ("lr", LogisticRegression(C=4.0, max_iter=2000))]
    )
    return pipe.fit([r["text"] for r in rows], [r["rating"] for r in rows])


def main(argv: list[str] | None = None) -> int:
    """`python -m explainers.data.movies corpus FILE` or `... classifier FILE`: the sample domain's files."""
    import argparse
    import json
    from pathlib import Path

    import joblib

    ap = argparse.ArgumentParser(prog="python -m explainers.data.movies", description=main.__doc__)
    ap.add_argument("what", choices=("corpus", "classifier"))
    ap.add_argument("out", type=Path)
    ap.add_argument("--origins", type=int, default=300)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    if args.what == "corpus":
        rows = movie_corpus(args.origins, seed=args.seed)
        args.out.write_text(
            "".join(json.dumps({k: v for k, v in r.items() if k != "rating"}) + "\n" for r in rows)
        )
        print(f"{len(rows)} texts ({args.origins} origins with one edit per concept) -> {args.out}")
    else:
        joblib.dump(
            train_rating_classifier(movie_corpus(args.origins, edits=False, seed=args.seed + 7)), args.out
        )
        print(f"rating classifier (labels neg, pos) -> {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
