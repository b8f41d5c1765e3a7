"""Concepts, their values, and interventions on them.

A `ConceptSchema` is the vocabulary an explanation is asked in: which concepts a text
can carry (food, service, ...), which values each takes (Positive, Negative, unknown)
and natural-language descriptions that prompts use. An `Intervention` says which
concept to set to which value; everything else about the text should stay as it was.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Concept:
    """One human concept and the values it can take."""

    name: str
    values: tuple[str, ...]
    description: str = ""
    # How each value reads in a prompt, e.g. {"Negative": "the food was bad"}.
    value_descriptions: Mapping[str, str] = field(default_factory=dict)
    # A few example sentences per value (a definition by example, for LLM labelling prompts).
    value_examples: Mapping[str, tuple[str, ...]] = field(default_factory=dict)

    def describe(self, value: str) -> str:
        return self.value_descriptions.get(value, f"{self.name} is {value}")

    @property
    def defined(self) -> bool:
        """Whether the schema says what the concept means (a description, or one per value)."""
        return bool(self.description.strip()) or any(
            self.value_descriptions.get(v, "").strip() for v in self.values
        )


@dataclass(frozen=True)
class ConceptSchema:
    """The concepts an explanation can intervene on, in a fixed order."""

    concepts: tuple[Concept, ...]
    domain: str = "text"

    def __post_init__(self) -> None:
        names = [c.name for c in self.concepts]
        if len(set(names)) != len(names):
            raise ValueError(f"duplicate concept names in schema: {names}")

    @property
    def names(self) -> list[str]:
        return [c.name for c in self.concepts]

    def __getitem__(self, name: str) -> Concept:
        for c in self.concepts:
            if c.name == name:
                return c
        raise KeyError(f"unknown concept {name!r}; known: {self.names}")

    def __contains__(self, name: object) -> bool:
        return any(c.name == name for c in self.concepts)

    def confounders(self, treated: str) -> list[str]:
        """Every concept but the treated one: what an intervention must leave alone."""
        self[treated]
        return [n for n in self.names if n != treated]

    def validate(self, intervention: Intervention) -> None:
        """Raise ValueError naming what is wrong with an intervention under this schema."""
        concept = self[intervention.concept] if intervention.concept in self else None
        if concept is None:
            raise ValueError(f"unknown concept {intervention.concept!r}; known: {self.names}")
        for what, value in (("target", intervention.target), ("source", intervention.source)):
            if value is not None and value not in concept.values:
                raise ValueError(
                    f"{what} value {value!r} is not a value of {concept.name!r}; allowed: {list(concept.values)}"
                )
        if intervention.source is not None and intervention.source == intervention.target:
            raise ValueError("source and target values are equal: the intervention changes nothing")

    def to_dict(self) -> dict[str, Any]:
        return {
            "domain": self.domain,
            "concepts": [
                {
                    "name": c.name,
                    "values": list(c.values),
                    "description": c.description,
                    "value_descriptions": dict(c.value_descriptions),
                    "value_examples": {v: list(ex) for v, ex in c.value_examples.items()},
                }
                for c in self.concepts
            ],
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ConceptSchema:
        return cls(
            concepts=tuple(
                Concept(
                    name=c["name"],
                    values=tuple(c["values"]),
                    description=c.get("description", ""),
                    value_descriptions=dict(c.get("value_descriptions", {})),
                    value_examples={v: tuple(ex) for v, ex in (c.get("value_examples") or {}).items()},
                )
                for c in data["concepts"]
            ),
            domain=data.get("domain", "text"),
        )

    @classmethod
    def simple(cls, concepts: Iterable[str], values: Iterable[str], domain: str = "text") -> ConceptSchema:
        vals = tuple(values)
        return cls(tuple(Concept(n, vals) for n in concepts), domain=domain)


@dataclass(frozen=True)
class Intervention:
    """Set `concept` to `target`; `source` is the value the text has now (None: infer it)."""

    concept: str
    target: str
    source: str | None = None

    @property
    def direction(self) -> str:
        return f"{self.source}->{self.target}"

    def with_source(self, source: str) -> Intervention:
        return Intervention(self.concept, self.target, source)


CEBAB_VALUES = ("Positive", "Negative", "unknown")

CEBAB_SCHEMA = ConceptSchema(
    domain="restaurant review",
    concepts=tuple(
        Concept(
            name=name,
            values=CEBAB_VALUES,
            description=desc,
            value_descriptions={
                "Positive": f"the review says something positive about the {aspect}",
                "Negative": f"the review says something negative about the {aspect}",
                "unknown": f"the review does not mention the {aspect} at all",
            },
        )
        for name, aspect, desc in (
            ("food", "food", "the quality and taste of the food and drinks"),
            ("service", "service", "the staff, waiters and how the diners were served"),
            ("ambiance", "ambiance", "the atmosphere, decor and look of the restaurant"),
            ("noise", "noise level", "how loud or quiet the restaurant was"),
        )
    ),
)
