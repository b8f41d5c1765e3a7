"""CEBaB: loader and counterfactual pair builder.

CEBaB (Abraham et al., 2022; CC BY 4.0) holds restaurant reviews and human edits of
them, each edit changing one concept (food, service, ambiance, noise). A pair is
(base text, counterfactual text, concept, source value, target value); the true ICaCE
of a model on a pair is model(counterfactual) - model(base). Explainers only ever see
the base text, the intervention and (for methods that use them) the base's labels.
"""

from __future__ import annotations

import json
import os
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from explainers import env

CONCEPTS = ("food", "service", "ambiance", "noise")
VALUES = ("Positive", "Negative", "unknown")


@dataclass(frozen=True)
class Review:
    id: str
    original_id: str
    is_original: bool
    edit_type: str | None
    edit_goal: str | None
    text: str
    review_majority: str
    # Validated majority label per concept; "" (not annotated) and "no majority" kept as is.
    labels: dict[str, str] = field(hash=False)

    def clean_labels(self) -> dict[str, str]:
        """Labels with anything outside {Positive, Negative, unknown} mapped to unknown."""
        return {c: (v if v in VALUES else "unknown") for c, v in self.labels.items()}

    @property
    def rating(self) -> int | None:
        return int(self.review_majority) if self.review_majority.isdigit() else None


@dataclass(frozen=True)
class Pair:
    """A counterfactual pair: `base` with `concept` changed from `source` to `target` gives `counterfactual`."""

    base: Review
    counterfactual: Review
    concept: str
    source: str
    target: str
    kind: str  # "original->edit", "edit->original" or "edit->edit"

    @property
    def direction(self) -> str:
        return f"{self.source}->{self.target}"


def default_data_dir() -> Path:
    """Where the CEBaB split files are: $CACE_CEBAB_DIR, else ../shared/data/cebab, else ./data/cebab."""
    given = env.cebab_dir()
    if given is not None:
        return given
    repo = Path(__file__).resolve().parents[2]
    for candidate in (repo.parent / "shared" / "data" / "cebab", repo / "data" / "cebab"):
        if candidate.is_dir():
            return candidate
    return repo.parent / "shared" / "data" / "cebab"


def split_path(split: str | os.PathLike[str], data_dir: str | os.PathLike[str] | None = None) -> Path:
    """Accept a split name ("dev") or any path to a split file (the withheld test split included)."""
    p = Path(split)
    if p.suffix == ".json" or p.exists():
        return p
    return Path(data_dir or default_data_dir()) / f"{split}.json"


def load_split(split: str | os.PathLike[str], data_dir: str | os.PathLike[str] | None = None) -> list[Review]:
    path = split_path(split, data_dir)
    if not path.exists():
        raise FileNotFoundError(f"CEBaB split file not found: {path} (set CACE_CEBAB_DIR or pass a path)")
    with open(path, encoding="utf-8") as f:
        rows = json.load(f)
    return [_review(r) for r in rows]


def _review(r: dict) -> Review:
    return Review(
        id=str(r["id"]),
        original_id=str(r["original_id"]),
        is_original=bool(r["is_original"]),
        edit_type=r.get("edit_type") or None,
        edit_goal=r.get("edit_goal") or None,
        text=r["description"],
        review_majority=str(r.get("review_majority", "")),
        labels={c: (r.get(f"{c}_aspect_majority") or "") for c in CONCEPTS},
    )


def build_pairs(reviews: Iterable[Review]) -> list[Pair]:
    """All CEBaB counterfactual pairs: edit->original, original->edit and edit->edit (same edit_type).

    The direction is read from the validated majority labels of the edited concept; pairs
    whose labels are equal (the edit did not change the concept as validated) are dropped.
    """
    by_origin: dict[str, list[Review]] = defaultdict(list)
    for r in reviews:
        by_origin[r.original_id].append(r)
    pairs: list[Pair] = []
    for group in by_origin.values():
        originals = [r for r in group if r.is_original]
        edits = [r for r in group if not r.is_original and r.edit_type in CONCEPTS]
        for orig in originals:
            for e in edits:
                pairs += _pair(e, orig, str(e.edit_type), "edit->original")
                pairs += _pair(orig, e, str(e.edit_type), "original->edit")
        for i, a in enumerate(edits):
            for b in edits[i + 1 :]:
                if a.edit_type == b.edit_type:
                    pairs += _pair(a, b, str(a.edit_type), "edit->edit")
                    pairs += _pair(b, a, str(a.edit_type), "edit->edit")
    return pairs


def _pair(base: Review, cf: Review, concept: str, kind: str) -> list[Pair]:
    src, tgt = base.labels.get(concept, ""), cf.labels.get(concept, "")
    if src not in VALUES or tgt not in VALUES or src == tgt:
        return []
    return [Pair(base, cf, concept, src, tgt, kind)]


def pair_counts(pairs: Sequence[Pair]) -> dict[str, int]:
    counts: dict[str, int] = defaultdict(int)
    for p in pairs:
        counts[p.concept] += 1
    return dict(counts)
