"""KServe V1 ("TensorFlow Serving style") adapter.

Request: `POST {base}/v1/models/{name}:predict` with `{"instances": [...]}`; each instance
is the bare text or, with `instance_key`, `{instance_key: text}`. Response:
`{"predictions": [...]}`, one row per text, either a list of scores in the endpoint's
class order or a mapping label -> score.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any
from urllib.parse import quote

import httpx
import numpy as np

from explainers.classifiers.base import MalformedResponse
from explainers.classifiers.http import HttpClassifier, HttpOptions


class KServeV1Classifier(HttpClassifier):
    """A model behind the KServe V1 REST protocol."""

    protocol = "kserve-v1"

    def __init__(
        self,
        url: str,
        model: str,
        labels: Sequence[str],
        *,
        instance_key: str | None = None,
        logits: bool = False,
        endpoint_labels: Sequence[str] | None = None,
        label_map: Mapping[str, str] | None = None,
        options: HttpOptions | None = None,
        transport: httpx.BaseTransport | None = None,
        name: str | None = None,
    ) -> None:
        super().__init__(
            url,
            labels,
            logits=logits,
            endpoint_labels=endpoint_labels,
            label_map=label_map,
            options=options,
            transport=transport,
            name=name or f"kserve-v1:{model}@{url.rstrip('/')}",
        )
        self.model = model
        self.instance_key = instance_key
        self.path = f"/v1/models/{quote(model, safe='')}:predict"

    def request(self, texts: list[str]) -> tuple[str, Any]:
        instances: list[Any] = [{self.instance_key: t} for t in texts] if self.instance_key else list(texts)
        return self.path, {"instances": instances}

    def scores(self, body: Any, n: int) -> np.ndarray:
        if not isinstance(body, Mapping) or "predictions" not in body:
            raise MalformedResponse(f"{self.name}: V1 response has no 'predictions': {str(body)[:200]!r}")
        return self.mapper.matrix(body["predictions"], n)
