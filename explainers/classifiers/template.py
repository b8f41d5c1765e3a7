"""Template adapter for custom JSON APIs: a request template plus JSON paths to the scores.

For endpoints that speak no standard protocol (a team's own FastAPI, a vendor API). The
request template is any JSON value; a string equal to `"{{texts}}"` is replaced by the
batch of texts (batch mode), and `"{{text}}"` (whole value or inside a string) by one
text (one request per text). `scores_path` is a small JSON path (`data.results[*].probs`,
`outputs[0].data`, `$.predictions`) that must select, for a batch of n texts, n score
rows (lists in `endpoint_labels` order, label->score mappings, or label/score entries)
or a flat row-major list of n * C numbers; in per-text mode, the one row. `labels_path` optionally selects the class names the
endpoint used: one list for all rows, or one list per row.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

import httpx
import numpy as np

from explainers.classifiers.base import MalformedResponse
from explainers.classifiers.http import HttpClassifier, HttpOptions

TEXTS = "{{texts}}"
TEXT = "{{text}}"
_TOKEN = re.compile(r"\.?([A-Za-z_][\w\-]*)|\[(\*|-?\d+)\]|\[['\"]([^'\"]+)['\"]\]")


def parse_path(path: str) -> list[str | int]:
    """Split a simple JSON path into keys, indexes and "*" (map over a list); ValueError if malformed."""
    p = path.strip()
    if p.startswith("$"):
        p = p[1:]
    steps: list[str | int] = []
    pos = 0
    while pos < len(p):
        m = _TOKEN.match(p, pos)
        if not m or m.end() == pos:
            raise ValueError(f"bad JSON path {path!r} at {p[pos:]!r}; use keys, [index], [*] or ['key']")
        name, idx, quoted = m.groups()
        if name is not None:
            steps.append(name)
        elif quoted is not None:
            steps.append(quoted)
        elif idx == "*":
            steps.append("*")
        else:
            steps.append(int(idx))
        pos = m.end()
    return steps


def select(value: Any, steps: Sequence[str | int], *, path: str = "", source: str = "response") -> Any:
    """Apply parsed path steps; "*" maps the rest of the path over every element of a list."""
    for k, step in enumerate(steps):
        if step == "*":
            if not isinstance(value, list):
                raise MalformedResponse(
                    f"{source}: path {path!r}: [*] needs a list, got {type(value).__name__}"
                )
            return [select(v, steps[k + 1 :], path=path, source=source) for v in value]
        if isinstance(step, int):
            if not isinstance(value, list) or not -len(value) <= step < len(value):
                raise MalformedResponse(
                    f"{source}: path {path!r}: index [{step}] not found in {str(value)[:120]!r}"
                )
            value = value[step]
        else:
            if not isinstance(value, Mapping) or step not in value:
                raise MalformedResponse(
                    f"{source}: path {path!r}: key {step!r} not found in {str(value)[:120]!r}"
                )
            value = value[step]
    return value


def _has(value: Any, marker: str) -> bool:
    if isinstance(value, str):
        return marker in value
    if isinstance(value, Mapping):
        return any(_has(v, marker) for v in value.values())
    if isinstance(value, list):
        return any(_has(v, marker) for v in value)
    return False


def _fill(value: Any, texts: list[str]) -> Any:
    if isinstance(value, str):
        if value == TEXTS:
            return list(texts)
        if value == TEXT:
            return texts[0]
        return value.replace(TEXT, texts[0]) if TEXT in value else value
    if isinstance(value, Mapping):
        return {k: _fill(v, texts) for k, v in value.items()}
    if isinstance(value, list):
        return [_fill(v, texts) for v in value]
    return value


class TemplateClassifier(HttpClassifier):
    """A custom JSON API described by a request template and paths into its response."""

    protocol = "template"

    def __init__(
        self,
        url: str,
        labels: Sequence[str],
        *,
        request_template: Any,
        scores_path: str,
        labels_path: str | None = None,
        logits: bool = False,
        endpoint_labels: Sequence[str] | None = None,
        label_map: Mapping[str, str] | None = None,
        options: HttpOptions | None = None,
        transport: httpx.BaseTransport | None = None,
        name: str | None = None,
    ) -> None:
        batch = _has(request_template, TEXTS)
        per_text = _has(request_template, TEXT)
        if batch == per_text:
            raise ValueError(
                f"request_template must contain exactly one kind of placeholder: {TEXTS!r} "
                f"(a list of texts) or {TEXT!r} (one text per request)"
            )
        opts = options or HttpOptions()
        if per_text:
            opts = HttpOptions(**{**vars(opts), "batch_size": 1})
        super().__init__(
            url,
            labels,
            logits=logits,
            endpoint_labels=endpoint_labels,
            label_map=label_map,
            options=opts,
            transport=transport,
            name=name or f"template:{url.rstrip('/')}",
        )
        self.template = request_template
        self.batch = batch
        self.scores_path = scores_path
        self.labels_path = labels_path
        self._scores_steps = parse_path(scores_path)
        self._labels_steps = parse_path(labels_path) if labels_path else None

    def request(self, texts: list[str]) -> tuple[str, Any]:
        return self.url, _fill(self.template, texts)

    def scores(self, body: Any, n: int) -> np.ndarray:
        rows = select(body, self._scores_steps, path=self.scores_path, source=self.name)
        row_labels = None
        if self._labels_steps is not None:
            row_labels = select(body, self._labels_steps, path=self.labels_path or "", source=self.name)
            if not isinstance(row_labels, list):
                raise MalformedResponse(
                    f"{self.name}: labels_path {self.labels_path!r} did not select a list"
                )
        c = len(self.labels)
        if (
            isinstance(rows, list)
            and rows
            and all(isinstance(x, int | float) and not isinstance(x, bool) for x in rows)
        ):
            # A flat tensor (e.g. V2 `outputs[0].data`): n * C numbers, row-major.
            if len(rows) != n * c:
                raise MalformedResponse(
                    f"{self.name}: {self.scores_path!r} selected {len(rows)} numbers; "
                    f"expected {n} rows x {c} labels = {n * c}"
                )
            rows = [rows[i * c : (i + 1) * c] for i in range(n)]
        elif not self.batch:
            rows = [rows]
            if row_labels is not None and row_labels and isinstance(row_labels[0], list):
                row_labels = row_labels[0] if len(row_labels) == 1 else row_labels
        return self.mapper.matrix(rows, n, row_labels)
