"""Domains: the unit a user brings. A concept schema, a corpus, its counterfactual pairs,
concept taggers and a trained concept space, in one self-describing folder.

Every explanation method reads its data from one domain (`Domain.resources`): the pool the
matching baselines search, the space `match` searches, the taggers that infer a text's
labels, the schema prompts are built from. CEBaB is one domain (`explainers.domains.cebab`),
built by the same code as any uploaded corpus.

Folder layout (`meta.json` is written last, so a folder without it is an unfinished build):

    <root>/<id>/meta.json        kind "domain": schema, stats, tagger accuracy, methods per concept
    <root>/<id>/taggers/         a TaggerSet (explainers.taggers)
    <root>/<id>/spaces/default/  a ConceptSpace; it carries the corpus (pool.jsonl, pairs.json)
"""

from pathlib import Path
from typing import Any

from explainers.domains.build import (
    BUILD_STAGES,
    DomainBuildError,
    build_domain,
    ensure_corpus_domain,
    infer_schema,
    load_stage,
    pool_from_rows,
    validate_rows,
)
from explainers.domains.domain import DOMAIN_ID, Domain, MethodUnavailable, load_domain

# Domains the library builds by name (a service's default-domain setting may name one):
# name -> (module with `ensure_<name>_domain(root, data_dir, encoder=...)`, its reference classifier).
BUILTIN = {"cebab": ("explainers.domains.cebab", "tfidf-lr")}


def ensure_builtin(
    name: str, root: Path, data_dir: Any = None, *, encoder: Any, log: Any = None, stages: Any = None
) -> Domain:
    """Load (building on first use) the built-in domain `name` under root/name; `stages` gets the progress."""
    import importlib

    if name not in BUILTIN:
        raise LookupError(f"no built-in domain {name!r}; built-in: {sorted(BUILTIN)}")
    module = importlib.import_module(BUILTIN[name][0])
    return getattr(module, f"ensure_{name}_domain")(root, data_dir, encoder=encoder, log=log, stages=stages)


__all__ = [
    "BUILD_STAGES",
    "BUILTIN",
    "ensure_corpus_domain",
    "load_stage",
    "ensure_builtin",
    "DOMAIN_ID",
    "Domain",
    "DomainBuildError",
    "MethodUnavailable",
    "build_domain",
    "infer_schema",
    "load_domain",
    "pool_from_rows",
    "validate_rows",
]
