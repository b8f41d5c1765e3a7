"""Open Inference Protocol V2 adapter (MLServer, Triton, KServe V2).

Request: `POST {base}/v2/models/{name}[/versions/{v}]/infer` with one BYTES input holding
the texts, shape [n, 1] (Triton string models, MLServer) or [n]. Response: an output
tensor of n x C probabilities or logits, flat or nested, in the endpoint's class order
(declare it with `endpoint_labels` when it differs from `labels`).

Servers differ in how they want strings decoded, so the input's `parameters` (MLServer:
`{"content_type": "str"}`) and the requested outputs (MLServer's scikit-learn runtime:
`predict_proba`) are options rather than guesses.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Literal
from urllib.parse import quote

import httpx
import numpy as np

from explainers.classifiers.base import MalformedResponse
from explainers.classifiers.http import HttpClassifier, HttpOptions


class V2Classifier(HttpClassifier):
    """A model behind the Open Inference Protocol V2 REST API."""

    protocol = "v2"

    def __init__(
        self,
        url: str,
        model: str,
        labels: Sequence[str],
        *,
        version: str | None = None,
        input_name: str = "text",
        shape: Literal["n1", "n"] = "n1",
        input_parameters: Mapping[str, Any] | None = None,
        request_parameters: Mapping[str, Any] | None = None,
        output_name: str | None = None,
        request_outputs: Sequence[str] | None = None,
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
            name=name or f"v2:{model}@{url.rstrip('/')}",
        )
        if shape not in ("n1", "n"):
            raise ValueError("shape must be 'n1' ([n, 1]) or 'n' ([n])")
        self.model = model
        self.version = version
        self.input_name = input_name
        self.shape = shape
        self.input_parameters = dict(input_parameters or {})
        self.request_parameters = dict(request_parameters or {})
        self.output_name = output_name
        self.request_outputs = list(request_outputs or ([output_name] if output_name else []))
        path = f"/v2/models/{quote(model, safe='')}"
        if version:
            path += f"/versions/{quote(version, safe='')}"
        self.path = path + "/infer"

    def request(self, texts: list[str]) -> tuple[str, Any]:
        tensor: dict[str, Any] = {
            "name": self.input_name,
            "shape": [len(texts), 1] if self.shape == "n1" else [len(texts)],
            "datatype": "BYTES",
            "data": texts,
        }
        if self.input_parameters:
            tensor["parameters"] = self.input_parameters
        body: dict[str, Any] = {"inputs": [tensor]}
        if self.request_outputs:
            body["outputs"] = [{"name": o} for o in self.request_outputs]
        if self.request_parameters:
            body["parameters"] = self.request_parameters
        return self.path, body

    def scores(self, body: Any, n: int) -> np.ndarray:
        if not isinstance(body, Mapping) or not isinstance(body.get("outputs"), list) or not body["outputs"]:
            raise MalformedResponse(f"{self.name}: V2 response has no 'outputs' list: {str(body)[:200]!r}")
        outputs = body["outputs"]
        if self.output_name is not None:
            found = [o for o in outputs if isinstance(o, Mapping) and o.get("name") == self.output_name]
            if not found:
                names = [o.get("name") for o in outputs if isinstance(o, Mapping)]
                raise MalformedResponse(f"{self.name}: no output named {self.output_name!r} (got {names})")
            out = found[0]
        else:
            out = outputs[0]
        if not isinstance(out, Mapping) or "data" not in out:
            raise MalformedResponse(f"{self.name}: V2 output has no 'data': {str(out)[:200]!r}")
        try:
            data = np.asarray(out["data"], dtype=np.float64)
        except (TypeError, ValueError) as e:
            raise MalformedResponse(
                f"{self.name}: V2 output {out.get('name')!r} is not numeric "
                f"(datatype {out.get('datatype')}): {e}"
            ) from e
        c = len(self.labels)
        shape = out.get("shape")
        if data.size != n * c:
            raise MalformedResponse(
                f"{self.name}: sent {n} texts with {c} labels, so expected {n * c} scores, "
                f"got {data.size} (output {out.get('name')!r}, shape {shape})"
            )
        if isinstance(shape, list) and shape and shape[0] != n:
            raise MalformedResponse(f"{self.name}: sent {n} texts but output shape is {shape}")
        rows = data.reshape(n, c).tolist()
        return self.mapper.matrix(rows, n)
