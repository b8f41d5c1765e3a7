"""`Pool`: the labelled corpus a domain's methods search (texts, concept labels, origins, pairs)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from explainers.concepts import ConceptSchema


@dataclass
class Pool:
    """A labelled corpus that matching methods search: texts, concept labels, and origins.

    `origins[i]` groups texts that are counterfactuals of each other (CEBaB's original_id);
    `pairs` lists counterfactual pairs inside the pool as (base index, counterfactual index,
    concept), used by pair-transfer and space training. `originals[i]`: text i is an original
    (not an edit of another text), where the corpus says so; `trained[i]`: the corpus marks
    text i as one the classifier to be explained was trained on (the calibration leaves such
    texts out of its fit when the classifier memorised them; explainers.estimators.shift).
    """

    texts: list[str]
    labels: list[dict[str, str]]
    schema: ConceptSchema
    ids: list[str] | None = None
    origins: list[str] | None = None
    pairs: list[tuple[int, int, str]] = field(default_factory=list)
    originals: list[bool] | None = None
    trained: list[bool] | None = None

    def __post_init__(self) -> None:
        if len(self.texts) != len(self.labels):
            raise ValueError("pool texts and labels differ in length")
        for name in ("ids", "origins", "originals", "trained"):
            column = getattr(self, name)
            if column is not None and len(column) != len(self.texts):
                raise ValueError(f"pool {name} and texts differ in length")

    def original_flags(self) -> list[bool] | None:
        """Which texts are originals: as the corpus said, else a text whose origin is itself
        (an uploaded row naming no other origin); None when the pool has no origins."""
        if self.originals is not None:
            return list(self.originals)
        if self.origins is None or self.ids is None:
            return None
        return [i == o for i, o in zip(self.ids, self.origins, strict=True)]

    def with_edits(
        self,
        texts: list[str],
        labels: list[dict[str, str]],
        ids: list[str],
        origins: list[str],
        pairs: list[tuple[int, int, str]],
    ) -> Pool:
        """This pool's rows followed by new edits (rows from len(self) on: generated counterfactuals,
        neither originals nor texts the classifier was trained on)."""
        added = len(texts) - len(self)
        flags = self.original_flags()
        return Pool(
            texts=texts,
            labels=labels,
            schema=self.schema,
            ids=ids,
            origins=origins,
            pairs=pairs,
            originals=None if flags is None else flags + [False] * added,
            trained=None if self.trained is None else list(self.trained) + [False] * added,
        )

    def subset(self, keep: Sequence[int]) -> Pool:
        """The pool restricted to rows `keep` (in that order): every per-text column follows,
        pairs are remapped and those touching a dropped row are left out."""
        keep = [int(i) for i in keep]
        new_of = {old: new for new, old in enumerate(keep)}

        def column(values: list[Any] | None) -> list[Any] | None:
            return None if values is None else [values[i] for i in keep]

        return replace(
            self,
            texts=[self.texts[i] for i in keep],
            labels=[self.labels[i] for i in keep],
            ids=column(self.ids),
            origins=column(self.origins),
            originals=column(self.originals),
            trained=column(self.trained),
            pairs=[(new_of[b], new_of[c], con) for b, c, con in self.pairs if b in new_of and c in new_of],
        )

    def __len__(self) -> int:
        return len(self.texts)

    def indices_with(self, concept: str, value: str) -> list[int]:
        return [i for i, lab in enumerate(self.labels) if lab.get(concept) == value]
