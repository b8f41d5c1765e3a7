"""Hugging Face text-classification JSON adapter (Inference API/Endpoints, TEI, own servers).

Request: `POST {url}` with `{"inputs": [texts]}` (or one string per request with
`batch=False`), plus optional `parameters` (e.g. `{"top_k": null}` so the pipeline returns
every class) and extra top-level fields (TEI's `raw_scores`, `truncate`).
Response: `[[{"label", "score"}, ...], ...]` for a batch (TEI `/predict`, pipelines), or
the flat `[{"label", "score"}, ...]` for a single text. Rows arrive sorted by score, so
each row is mapped onto the declared labels by name.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import httpx
import numpy as np

from explainers.classifiers.base import MalformedResponse
from explainers.classifiers.http import HttpClassifier, HttpOptions


def _is_entry(x: Any) -> bool:
    return isinstance(x, Mapping) and "label" in x


class HFClassifier(HttpClassifier):
    """A Hugging Face-style text-classification endpoint; `url` is the full POST URL."""

    protocol = "hf"

    def __init__(
        self,
        url: str,
        labels: Sequence[str],
        *,
        batch: bool = True,
        parameters: Mapping[str, Any] | None = None,
        extra: Mapping[str, Any] | None = None,
        logits: bool = False,
        label_map: Mapping[str, str] | None = None,
        options: HttpOptions | None = None,
        transport: httpx.BaseTransport | None = None,
        name: str | None = None,
    ) -> None:
        opts = options or HttpOptions()
        if not batch:
            opts = HttpOptions(**{**vars(opts), "batch_size": 1})
        super().__init__(
            url,
            labels,
            logits=logits,
            label_map=label_map,
            options=opts,
            transport=transport,
            name=name or f"hf:{url.rstrip('/')}",
        )
        self.batch = batch
        self.parameters = dict(parameters) if parameters is not None else None
        self.extra = dict(extra or {})

    def request(self, texts: list[str]) -> tuple[str, Any]:
        body: dict[str, Any] = {**self.extra, "inputs": texts if self.batch else texts[0]}
        if self.parameters is not None:
            body["parameters"] = self.parameters
        return self.url, body

    def scores(self, body: Any, n: int) -> np.ndarray:
        if isinstance(body, Mapping) and "error" in body:
            raise MalformedResponse(
                f"{self.name}: endpoint answered an error object: {str(body['error'])[:200]}"
            )
        if not isinstance(body, list):
            raise MalformedResponse(
                f"{self.name}: expected a JSON list of label/score entries, "
                f"got {type(body).__name__}: {str(body)[:200]!r}"
            )
        if body and all(_is_entry(x) for x in body):
            if n == 1:
                rows: list[Any] = [body]  # flat: the one text's scores
            elif len(body) == n:
                raise MalformedResponse(
                    f"{self.name}: got one label per text (top-1 only) for {n} texts; ask the "
                    "endpoint for all scores (parameters top_k=null / return_all_scores)"
                )
            else:
                raise MalformedResponse(
                    f"{self.name}: sent {n} texts but got a flat list of {len(body)} label/score entries"
                )
        else:
            rows = body
        return self.mapper.matrix(rows, n)
