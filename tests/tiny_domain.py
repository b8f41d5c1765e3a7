"""A tiny movie-review domain for service tests that need a domain but not CEBaB's.

40 origins with one human edit per concept (160 texts, 240 pairs; taggers and a trained space),
built once per machine under the test data dir (about a minute on a busy 2-core machine) and
copied into each test's own folder, so calibrations a test saves stay with that test. A service
started with `tiny_env(folder)` loads it as its default domain in seconds and has no default
classifier (requests name a registered one).
"""

from __future__ import annotations

import shutil
from pathlib import Path

from tests.service_server import TEST_DATA_DIR

TINY_ID = "movies-tiny"
# Interventions these tests ask for: the source is given, so no tagger decides what a text says.
TINY_IV = {"concept": "plot", "target": "bad", "source": "good"}


def _built() -> Path:
    root = TEST_DATA_DIR / "tiny-domains"
    out = root / TINY_ID
    if not (out / "meta.json").exists():
        from explainers.concepts import ConceptSchema
        from explainers.data.movies import CONCEPTS, VALUES, movie_corpus
        from explainers.domains import build_domain, pool_from_rows
        from explainers.embeddings import Encoder

        schema = ConceptSchema.from_dict(
            {"concepts": [{"name": c, "values": list(VALUES)} for c in CONCEPTS]}
        )
        pool = pool_from_rows(movie_corpus(40, seed=1), schema)
        build_domain(root, TINY_ID, pool, encoder=Encoder())  # atomic: a concurrent build's twin is dropped
    return out


def tiny_domain(folder: Path) -> Path:
    """A fresh copy of the tiny domain under `folder`."""
    dest = folder / TINY_ID
    if not dest.exists():
        shutil.copytree(_built(), dest)
    return dest


def tiny_env(folder: Path) -> dict[str, str]:
    return {"CACE_DEFAULT_DOMAIN": str(tiny_domain(folder)), "CACE_DEFAULT_CLASSIFIER": "none"}


def tiny_texts(n: int, seed: int = 7) -> list[str]:
    """n distinct movie reviews that are not in the domain's corpus."""
    from explainers.data.movies import movie_corpus

    seen: list[str] = []
    for row in movie_corpus(n * 2, edits=False, seed=seed, prefix="q"):
        if row["text"] not in seen:
            seen.append(row["text"])
        if len(seen) == n:
            break
    return seen
