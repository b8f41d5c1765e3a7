"""Verify generated counterfactuals and say, per reason, why each rejected one was dropped.

Small LLMs often ignore the instruction: they echo the text, write about the task
("Here is the rewritten review"), stop mid-sentence, or flip the wrong aspect. Each
candidate gets one verdict; the first failing check names the reason. Text checks run
first and are cheap; the concept tagger (if configured) then checks that the treated
concept reached the target and, optionally, that no confounder changed.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from explainers.concepts import ConceptSchema, Intervention

# Order matters only for reporting: the first failing check is the reason.
REASONS = (
    "failed",  # the call failed or the text is empty
    "identical",  # same as the source (ignoring case/whitespace)
    "duplicate",  # same as another kept candidate
    "meta_text",  # talks about the task instead of being the text
    "truncated",  # ends mid-sentence / hit max_tokens
    "length",  # far longer or shorter than the source: rewritten, not edited
    "concept_not_reached",  # the tagger says the treated concept is not at the target
    "confounder_changed",  # the tagger says another concept changed
)

DEFAULT_META_PATTERNS = (
    r"\bas an ai\b",
    r"\blanguage model\b",
    r"\bthe (?:original |edited |rewritten |new )?review\b",
    r"\bnot mentioned\b",
    r"\bhere(?:'s| is| are)\b",
    r"\bi (?:have |had )?(?:changed|edited|rewrote|modified|removed|replaced)\b",
    r"\bi(?:'m| am) sorry\b",
    r"\bi cannot\b|\bi can't\b",
    r"\bcounterfactual\b",
    r"\b(?:note|explanation)\s*:",
    r"\bsentiment\b",
    r"\baspect\b",
)

_TERMINAL = ".!?)\"'”’…*:;~^"


class Tagger(Protocol):
    """What verification needs from `explainers.taggers.TaggerSet`."""

    def predict(self, texts: Sequence[str]) -> list[dict[str, str]]: ...


@dataclass
class Verdict:
    text: str
    ok: bool
    reason: str | None = None
    tags: dict[str, str] | None = None


@dataclass
class VerifyReport:
    kept: list[Verdict] = field(default_factory=list)
    rejections: Counter[str] = field(default_factory=Counter)


def _norm(text: str) -> str:
    return re.sub(r"\s+", " ", text.strip().lower())


class Verifier:
    """Checks candidates for one (source text, intervention).

    `length_ratio` bounds len(candidate)/len(source) in both directions; `check_confounders`
    adds the stricter tagger check. Meta-text patterns that occur in the source itself are
    ignored (a review may well say "here is").
    """

    def __init__(
        self,
        schema: ConceptSchema,
        taggers: Tagger | None = None,
        *,
        check_confounders: bool = False,
        meta_patterns: Iterable[str] = DEFAULT_META_PATTERNS,
        length_ratio: float = 3.0,
        check_truncation: bool = True,
    ) -> None:
        self.schema = schema
        self.taggers = taggers
        self.check_confounders = check_confounders
        self.meta = [re.compile(p, re.IGNORECASE) for p in meta_patterns]
        self.length_ratio = length_ratio
        self.check_truncation = check_truncation

    def _text_reason(self, cand: str, source: str, finish: str | None, seen: set[str]) -> str | None:
        if not cand.strip():
            return "failed"
        n = _norm(cand)
        if n == _norm(source):
            return "identical"
        if n in seen:
            return "duplicate"
        src = source.lower()
        for pat in self.meta:
            if pat.search(cand) and not pat.search(src):
                return "meta_text"
        if self.check_truncation:
            if finish == "length":
                return "truncated"
            if source.rstrip()[-1:] in _TERMINAL and cand.rstrip()[-1:] not in _TERMINAL:
                return "truncated"
        ratio = max(len(cand), 1) / max(len(source), 1)
        if ratio > self.length_ratio or ratio < 1 / self.length_ratio:
            return "length"
        return None

    def verify(
        self,
        source: str,
        candidates: Sequence[str],
        intervention: Intervention,
        *,
        finish_reasons: Sequence[str | None] | None = None,
        source_labels: Mapping[str, str] | None = None,
        seen: set[str] | None = None,
    ) -> VerifyReport:
        """Judge `candidates`; `seen` (normalised kept texts from earlier rounds) is updated."""
        seen = set() if seen is None else seen
        report = VerifyReport()
        finish = list(finish_reasons or []) + [None] * len(candidates)
        passed: list[str] = []
        for cand, fr in zip(candidates, finish, strict=False):
            reason = self._text_reason(cand, source, fr, seen)
            if reason:
                report.rejections[reason] += 1
                continue
            seen.add(_norm(cand))
            passed.append(cand)
        if not passed:
            return report
        if self.taggers is None:
            report.kept = [Verdict(t, True) for t in passed]
            return report
        tags = self.taggers.predict(passed)
        for cand, tag in zip(passed, tags, strict=True):
            reason = self._tag_reason(tag, intervention, source_labels)
            if reason:
                report.rejections[reason] += 1
                seen.discard(_norm(cand))
            else:
                report.kept.append(Verdict(cand, True, tags=dict(tag)))
        return report

    def _tag_reason(
        self, tag: Mapping[str, Any], intervention: Intervention, source_labels: Mapping[str, str] | None
    ) -> str | None:
        # A concept the taggers cannot read (no usable tagger in the domain) gets no tagger verdict.
        if intervention.concept in tag and tag[intervention.concept] != intervention.target:
            return "concept_not_reached"
        if self.check_confounders and source_labels:
            for name in self.schema.confounders(intervention.concept):
                before = source_labels.get(name)
                if before in self.schema[name].values and tag.get(name) not in (None, before):
                    return "confounder_changed"
        return None
