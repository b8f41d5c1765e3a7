"""A loaded domain: its schema, pool, space and taggers, and what each method can do with them."""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from explainers.artifacts import FORMAT_VERSIONS, META, child_path, read_meta
from explainers.concepts import ConceptSchema
from explainers.data.pool import Pool
from explainers.registry import MissingResource, Resources

KIND = "domain"
# 2: the space names its files by concept/value position (names are data); 1: after the names
# (still loaded, every path checked to stay in the folder). read_meta checks it (artifacts.READABLE_VERSIONS).
FORMAT_VERSION = FORMAT_VERSIONS[KIND]
DOMAIN_ID = re.compile(r"^[a-z0-9][a-z0-9._-]{0,63}$")
DEFAULT_SPACE = "default"
CALIBRATION_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")

# Methods that transfer the output change of the pool's own counterfactual pairs of the
# treated concept: without such pairs they have nothing to transfer.
PAIR_METHODS = frozenset({"pair_transfer", "stacked"})
# Methods that return texts (or label means) of the pool with the target value.
POOL_METHODS = frozenset(
    {
        "match",
        "match_dr",
        "stacked",
        "pt_match",
        "approx",
        "approx_match",
        "random_matching",
        "random",
        "conexp",
        "s_learner",
        "pair_transfer",
    }
)


class MethodUnavailable(MissingResource):
    """A method cannot answer for this concept/value in this domain (the message says why)."""


class TaggerView:
    """The domain's taggers restricted to the concepts whose tagger is usable.

    A tagger no better than always guessing the majority value would label texts silently
    wrong; its concept is left out, so callers must supply that label themselves.
    """

    def __init__(self, taggers: Any, usable: Sequence[str]) -> None:
        self.taggers = taggers
        self.concepts = [c for c in taggers.schema.names if c in set(usable)]
        self.schema = taggers.schema

    def predict(self, texts: Sequence[str]) -> list[dict[str, str]]:
        return [{c: row[c] for c in self.concepts} for row in self.taggers.predict(texts)]

    def predict_proba(self, texts: Sequence[str]) -> dict[str, np.ndarray]:
        return {c: p for c, p in self.taggers.predict_proba(texts).items() if c in self.concepts}

    def values(self, concept: str) -> list[str]:
        return self.taggers.values(concept)


@dataclass
class Domain:
    id: str
    directory: Path
    meta: dict[str, Any]
    space: Any  # explainers.matching.ConceptSpace; it carries the pool
    taggers: TaggerView | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def schema(self) -> ConceptSchema:
        return self.space.schema

    @property
    def pool(self) -> Pool:
        return self.space.pool

    def pairs_by_concept(self) -> dict[str, int]:
        return {c: int(self.meta.get("stats", {}).get("pairs", {}).get(c, 0)) for c in self.schema.names}

    @property
    def pairs_origin(self) -> str:
        """Who made the counterfactual pairs: human, llm or mixed (an LLM build's provenance, or
        `generate` edits added to a corpus's own groups)."""
        provenance = self.meta.get("provenance") or {}
        if provenance.get("pairs_origin"):
            return str(provenance["pairs_origin"])
        generated = int((self.meta.get("generation") or {}).get("kept_edits") or 0)
        if generated:
            return "llm" if generated >= len(self.pool.pairs) else "mixed"
        return "human"

    def tagger_usable(self, concept: str) -> bool:
        return self.taggers is not None and concept in self.taggers.concepts

    def unavailable_reason(self, method: str, concept: str, target: str | None = None) -> str | None:
        """Why `method` cannot explain `concept` -> `target` here, or None when it can."""
        if method in PAIR_METHODS and self.pairs_by_concept().get(concept, 0) == 0:
            return (
                f"domain {self.id!r} has no counterfactual pairs of concept {concept!r} (texts sharing an origin "
                f"that differ only in it), so method {method!r} cannot run for it; add edits or rebuild the "
                "domain with generate"
            )
        if method in POOL_METHODS and target is not None and not self.pool.indices_with(concept, target):
            return f"domain {self.id!r} has no text with {concept}={target!r} for method {method!r} to use"
        return None

    def check_method(self, method: str, concept: str, target: str | None = None) -> None:
        reason = self.unavailable_reason(method, concept, target)
        if reason:
            raise MethodUnavailable(reason)

    def calibration_dir(self, classifier_name: str) -> Path:
        """Where the calibration of a (named) classifier on this domain lives."""
        if not CALIBRATION_NAME.match(classifier_name):
            raise ValueError(f"classifier name {classifier_name!r} cannot name a calibration")
        return child_path(self.directory, "calibrations", classifier_name)

    def calibrations(self) -> dict[str, dict[str, Any]]:
        return calibration_summaries(self.directory)

    def resources(self, *, encoder: Any, llm: Any | None = None, seed: int = 0) -> Resources:
        """What every explainer factory reads: this domain's data and nothing else."""
        return Resources(
            schema=self.schema,
            pool=self.pool,
            encoder=encoder,
            space=self.space,
            llm=llm,
            taggers=self.taggers,
            seed=seed,
            extra=dict(self.extra),
        )

    def describe(self) -> dict[str, Any]:
        """The public view: schema, status, stats, taggers, methods per concept, calibrations."""
        return describe(self.id, self.directory, self.meta)


def load_domain(directory: Path, encoder: Any | None = None) -> Domain:
    """Load a domain folder (see the package docstring); raises FileNotFoundError/ValueError if it is not one."""
    from explainers.matching.space import ConceptSpace
    from explainers.taggers import TaggerSet

    directory = Path(directory)
    meta = read_meta(directory, KIND)  # checks the format version
    space = ConceptSpace.load(directory / "spaces" / DEFAULT_SPACE, encoder=encoder)
    taggers = None
    if (directory / "taggers" / META).exists():
        usable = [c for c, t in meta.get("taggers", {}).items() if t.get("usable")]
        taggers = TaggerView(TaggerSet.load(directory / "taggers"), usable)
    return Domain(
        id=str(meta.get("id") or directory.name), directory=directory, meta=meta, space=space, taggers=taggers
    )


def majority_rate(labels: Sequence[Mapping[str, str]], concept: str, values: Sequence[str]) -> float:
    seen = [row.get(concept) for row in labels if row.get(concept) in values]
    if not seen:
        return float("nan")
    _, counts = np.unique(np.array(seen), return_counts=True)
    return float(counts.max() / len(seen))


def calibration_summaries(directory: Path) -> dict[str, dict[str, Any]]:
    """Per calibrated classifier of the domain folder: when, fingerprint, cost, held-out error table (macro)."""
    out: dict[str, dict[str, Any]] = {}
    for d in sorted((Path(directory) / "calibrations").glob("*/meta.json")):
        meta = read_meta(d.parent)
        report = (
            json.loads((d.parent / "report.json").read_text()) if (d.parent / "report.json").exists() else {}
        )
        out[d.parent.name] = {
            "created_at": meta.get("created_at"),
            "fingerprint": meta.get("classifier", {}).get("fingerprint"),
            "cost": meta.get("cost"),
            "heldout_pairs": meta.get("protocol", {}).get("heldout_pairs"),
            "coverage": meta.get("coverage"),
            "default_estimator": meta.get("default_estimator"),
            "pairs_origin": meta.get("pairs_origin"),
            "shift": meta.get("shift"),
            "robust_estimator": meta.get("robust_estimator"),
            "auto": report.get("auto", {}).get("macro"),
            "zero": report.get("zero"),
            "table": {name: row.get("macro") for name, row in report.get("methods", {}).items()},
        }
    return out


def describe(domain_id: str, directory: Path, meta: Mapping[str, Any]) -> dict[str, Any]:
    """A domain's public view from its folder's meta.json (no need to load the domain)."""
    keys: dict[str, Any] = {
        "source": None,
        "created_at": None,
        "stats": {},
        "taggers": {},
        "space": {},
        "methods": {},
        "generation": None,
        "provenance": None,
        "llm_build": None,
        "task": None,
        "label_names": None,
    }
    return {
        "id": domain_id,
        "status": "ready",
        "schema": meta.get("schema"),
        **{k: meta.get(k, default) for k, default in keys.items()},
        "calibrations": calibration_summaries(directory),
    }
