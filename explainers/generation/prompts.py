"""Counterfactual-editing prompts built from the concept schema.

The rule follows Gat et al.: change only the treated concept to the target value, keep
every other concept as it is, and keep as much of the original wording as possible.
Concept descriptions and value wordings come from the `ConceptSchema`, so a new domain
needs a new schema, not new prompt code. Few-shot examples are chat turns (user asks,
assistant answers with only the edited text), which small instruction models follow
better than a long instruction alone.
"""

from __future__ import annotations

import random
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from explainers.concepts import ConceptSchema, Intervention


@dataclass(frozen=True)
class FewShot:
    """One worked example: `source` edited into `edited` by `intervention`."""

    source: str
    edited: str
    intervention: Intervention
    # The source's other concept labels, shown so the model sees what to keep.
    labels: Mapping[str, str] | None = None


class PromptBuilder:
    """Turns (text, intervention, known labels) into chat messages for an LLM."""

    def __init__(
        self, schema: ConceptSchema, examples: Sequence[FewShot] = (), *, max_examples: int = 2
    ) -> None:
        self.schema = schema
        self.examples = list(examples)
        self.max_examples = max_examples

    def system(self) -> str:
        kinds = "; ".join(f"{c.name}: {c.description}" for c in self.schema.concepts if c.description)
        return (
            f"You edit {self.schema.domain}s to create counterfactuals. "
            "Change only what the instruction asks about and keep everything else: every other aspect "
            "keeps its sentiment, and as much of the original wording as possible stays the same. "
            f"The aspects are: {kinds}. "
            f"Answer with the edited {self.schema.domain} only: no title, no quotes, no explanation."
        )

    def instruction(
        self, text: str, intervention: Intervention, labels: Mapping[str, str] | None = None
    ) -> str:
        concept = self.schema[intervention.concept]
        parts = [f"Edit this {self.schema.domain} so that {concept.describe(intervention.target)}."]
        if intervention.source:
            parts.append(f"(Currently {concept.describe(intervention.source)}.)")
        keep = [
            self.schema[n].describe(labels[n])
            for n in self.schema.confounders(intervention.concept)
            if labels and labels.get(n) in self.schema[n].values
        ]
        if keep:
            parts.append("Keep the rest as it is: " + "; ".join(keep) + ".")
        else:
            parts.append(f"Do not change what it says about anything other than the {concept.name}.")
        parts.append(f"\n\n{self.schema.domain.capitalize()}: {text}")
        return " ".join(parts[:-1]) + parts[-1]

    def pick_examples(self, intervention: Intervention) -> list[FewShot]:
        """Prefer examples on the same concept and direction, then the same concept, then any."""

        def rank(ex: FewShot) -> int:
            same_c = ex.intervention.concept == intervention.concept
            same_t = ex.intervention.target == intervention.target
            return 0 if same_c and same_t else 1 if same_c else 2 if same_t else 3

        return sorted(self.examples, key=rank)[: self.max_examples]

    def messages(
        self, text: str, intervention: Intervention, labels: Mapping[str, str] | None = None
    ) -> list[dict[str, str]]:
        msgs = [{"role": "system", "content": self.system()}]
        for ex in self.pick_examples(intervention):
            msgs.append({"role": "user", "content": self.instruction(ex.source, ex.intervention, ex.labels)})
            msgs.append({"role": "assistant", "content": ex.edited})
        msgs.append({"role": "user", "content": self.instruction(text, intervention, labels)})
        return msgs


_LABEL_PREFIX = re.compile(
    r"^\s*(?:\*\*)?(?:edited|rewritten|new|modified|counterfactual)?\s*(?:review|text|version)?\s*(?:\*\*)?\s*:\s*",
    re.IGNORECASE,
)


def clean_output(text: str, domain: str = "review") -> str:
    """Strip formatting a model adds around the answer (a leading 'Review:' label, quotes, fences).

    Only wrapping is removed; chatty sentences stay so verification can count them as meta-text.
    """
    out = (text or "").strip()
    out = re.sub(r"^```\w*\s*|\s*```$", "", out).strip()
    m = _LABEL_PREFIX.match(out)
    if m and m.end() > 0 and out[: m.end()].strip(" :*").strip():
        out = out[m.end() :].strip()
    if len(out) >= 2 and out[0] == out[-1] and out[0] in "\"'“”":
        out = out[1:-1].strip()
    elif len(out) >= 2 and out[0] == "“" and out[-1] == "”":
        out = out[1:-1].strip()
    return out


def fewshot_from_cebab(
    split: str | Path,
    schema: ConceptSchema,
    *,
    per_concept: int = 2,
    seed: int = 0,
    max_chars: int = 300,
) -> list[FewShot]:
    """Worked examples from human CEBaB edits (use a train split, never the evaluated one).

    Picks short original->edit pairs, `per_concept` per concept, spreading the targets.
    """
    from explainers.data.cebab import build_pairs, load_split

    pairs = [p for p in build_pairs(load_split(split)) if p.kind == "original->edit"]
    rng = random.Random(seed)
    rng.shuffle(pairs)
    out: list[FewShot] = []
    for concept in schema.names:
        seen_targets: set[str] = set()
        for p in pairs:
            if sum(1 for e in out if e.intervention.concept == concept) >= per_concept:
                break
            if p.concept != concept or p.target in seen_targets:
                continue
            if len(p.base.text) > max_chars or len(p.counterfactual.text) > max_chars:
                continue
            seen_targets.add(p.target)
            labels = {k: v for k, v in p.base.clean_labels().items() if k in schema}
            out.append(
                FewShot(p.base.text, p.counterfactual.text, Intervention(concept, p.target, p.source), labels)
            )
    return out
