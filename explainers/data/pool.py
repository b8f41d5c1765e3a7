"""`Pool`: the labelled corpus a domain's methods search (texts, concept labels, origins, pairs)."""

from __future__ import annotations

from dataclasses import dataclass, field

from explainers.concepts import ConceptSchema


@dataclass
class Pool:
    """A labelled corpus that matching methods search: texts, concept labels, and origins.

    `origins[i]` groups texts that are counterfactuals of each other (CEBaB's original_id);
    `pairs` lists counterfactual pairs inside the pool as (base index, counterfactual index,
    concept), used by pair-transfer and space training.
    """

    texts: list[str]
    labels: list[dict[str, str]]
    schema: ConceptSchema
    ids: list[str] | None = None
    origins: list[str] | None = None
    pairs: list[tuple[int, int, str]] = field(default_factory=list)

    def __post_init__(self) -> None:
        if len(self.texts) != len(self.labels):
            raise ValueError("pool texts and labels differ in length")

    def __len__(self) -> int:
        return len(self.texts)

    def indices_with(self, concept: str, value: str) -> list[int]:
        return [i for i, lab in enumerate(self.labels) if lab.get(concept) == value]
