"""What one uploaded corpus may ask a domain build to do: caps checked before any work is queued.

A build's cost grows with the pairs it trains on and checks (every pair of same-origin texts is
compared), with the concepts (a head, a tagger and an index per value each) and with the values.
A corpus under the body limit can still ask for all of it at once (2,000 near-identical lines
sharing a few origins make ~10^6 pairs); these caps make the cost of one upload bounded and
known, and each refusal names the limit (its CACE_ setting).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from explainers.concepts import ConceptSchema

UNKNOWN = "unknown"  # the value a row without a label of the concept gets (as pool_from_rows does)


@dataclass(frozen=True)
class CorpusLimits:
    """Field names are the service's settings (env CACE_<NAME>)."""

    domain_max_group_texts: int = 64
    domain_max_pairs: int = 50_000
    domain_max_concepts: int = 32
    domain_max_values: int = 32

    def says(self, name: str) -> str:
        return f"this server allows at most {getattr(self, name)} (CACE_{name.upper()})"


class CorpusTooLarge(ValueError):
    """A corpus past one of the caps; `where` names the field or line, the message the limit."""

    def __init__(self, where: str, message: str) -> None:
        super().__init__(f"{where}: {message}")
        self.where = where
        self.message = message


def _short(name: str) -> str:
    return repr(name if len(name) <= 40 else name[:40] + "...")


def check_schema(schema: ConceptSchema, limits: CorpusLimits, where: str = "body.params.schema") -> None:
    """Concepts and values of a schema (given or inferred) within the caps."""
    if len(schema.names) > limits.domain_max_concepts:
        raise CorpusTooLarge(
            f"{where}.concepts",
            f"{len(schema.names)} concepts; {limits.says('domain_max_concepts')} per domain",
        )
    for c in schema.concepts:
        if len(c.values) > limits.domain_max_values:
            raise CorpusTooLarge(
                f"{where}.concepts",
                f"concept {_short(c.name)} has {len(c.values)} values; "
                f"{limits.says('domain_max_values')} per concept",
            )


def check_labels_seen(rows: Sequence[Mapping[str, Any]], limits: CorpusLimits) -> None:
    """Concepts and values the rows use, counted before a schema is inferred from them."""
    values: dict[str, set[str]] = {}
    for row in rows:
        for c, v in row["labels"].items():
            seen = values.setdefault(c, set())
            if len(values) > limits.domain_max_concepts:
                raise CorpusTooLarge(
                    "body.file", f"the labels name more than {limits.domain_max_concepts} concepts; "
                    f"{limits.says('domain_max_concepts')} per domain",
                )  # fmt: skip
            seen.add(v)
            if len(seen) > limits.domain_max_values:
                raise CorpusTooLarge(
                    "body.file", f"concept {_short(c)} has more than {limits.domain_max_values} values; "
                    f"{limits.says('domain_max_values')} per concept",
                )  # fmt: skip


def groups(rows: Sequence[Mapping[str, Any]]) -> dict[str, list[int]]:
    """Row indices per origin, duplicate texts dropped: the groups `pool_from_rows` pairs within."""
    seen: set[str] = set()
    out: dict[str, list[int]] = {}
    for i, r in enumerate(rows):
        if r["text"] in seen:
            continue
        seen.add(r["text"])
        out.setdefault(r.get("origin") or r.get("id") or f"row{i}", []).append(i)
    return out


def count_pairs(rows: Sequence[Mapping[str, Any]], schema: ConceptSchema) -> Counter[str]:
    """Ordered counterfactual pairs per concept (same origin, labels differing in that concept only),
    as `pool_from_rows` would make them, counted in O(texts * concepts^2) instead of O(group^2)."""
    names = schema.names
    out: Counter[str] = Counter()
    for members in groups(rows).values():
        if len(members) < 2:
            continue
        tuples = [tuple(rows[i]["labels"].get(c, UNKNOWN) for c in names) for i in members]
        for k, c in enumerate(names):
            by_rest: dict[tuple[str, ...], Counter[str]] = {}
            for t in tuples:
                by_rest.setdefault(t[:k] + t[k + 1 :], Counter())[t[k]] += 1
            for values in by_rest.values():
                n = sum(values.values())
                out[c] += n * n - sum(m * m for m in values.values())
    return out


def check_corpus(
    rows: Sequence[Mapping[str, Any]], schema: ConceptSchema, limits: CorpusLimits
) -> Counter[str]:
    """Group sizes and pairs within the caps (after `check_schema`); returns the pairs per concept."""
    for origin, members in groups(rows).items():
        if len(members) > limits.domain_max_group_texts:
            raise CorpusTooLarge(
                "body.file",
                f"origin {_short(origin)} groups {len(members)} distinct texts; "
                f"{limits.says('domain_max_group_texts')} texts per origin",
            )
    pairs = count_pairs(rows, schema)
    total = sum(pairs.values())
    if total > limits.domain_max_pairs:
        raise CorpusTooLarge(
            "body.file",
            f"the corpus makes {total} counterfactual pairs; {limits.says('domain_max_pairs')} per domain",
        )
    return pairs
