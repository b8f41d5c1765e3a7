"""The project's own classifier server: any in-process Classifier over HTTP.

Serves one model in the formats the adapters speak, so a reference classifier can be
explained exactly as a user's remote model would be (through HTTP, batching, retries):
- Hugging Face text-classification JSON: `POST /predict` and `POST /` with
  `{"inputs": str | [str]}` -> `[{"label", "score"}]` (flat for one string, nested for a list);
- Open Inference Protocol V2: `POST /v2/models/{name}/infer` (BYTES in, FP64 [n, C]
  probabilities out, output name `probabilities`), `GET /v2/health/ready|live`,
  `GET /v2/models/{name}` metadata, `GET /v2/models/{name}/ready`;
- KServe V1: `POST /v1/models/{name}:predict` -> `{"predictions": [[...]]}`;
- `GET /health` and `GET /info` (labels, model name).

`python -m explainers.serving PATH_OR_NAME --port N` (and `cace classifiers serve`) run it.
"""

from __future__ import annotations

import argparse
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from fastapi import Body, FastAPI, HTTPException, Request
from fastapi.responses import JSONResponse

from explainers import env
from explainers.artifacts import META
from explainers.classifiers.base import Classifier, ClassifierError

MAX_INPUTS = 4096


class _Counter:
    """Requests and texts served, so tests and benchmarks can see batching at the server."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.requests = 0
        self.texts = 0
        self.batch_sizes: list[int] = []

    def add(self, n: int) -> None:
        with self.lock:
            self.requests += 1
            self.texts += n
            if len(self.batch_sizes) < 10_000:
                self.batch_sizes.append(n)


def _texts(value: Any, field: str) -> list[str]:
    items = value if isinstance(value, list) else [value]
    if not items:
        raise HTTPException(422, f"{field} is empty")
    if len(items) > MAX_INPUTS:
        raise HTTPException(413, f"{field} has {len(items)} texts; at most {MAX_INPUTS} per request")
    if not all(isinstance(t, str) for t in items):
        raise HTTPException(422, f"{field} must be a string or a list of strings")
    return items


def create_classifier_app(classifier: Classifier, name: str) -> FastAPI:
    """A FastAPI app serving `classifier` as model `name` in HF, V2 and V1 formats."""
    labels = list(classifier.labels)
    counter = _Counter()
    app = FastAPI(title=f"classifier {name}", description="CaCE reference classifier server")
    app.state.classifier = classifier
    app.state.counter = counter

    def predict(texts: Sequence[str]) -> np.ndarray:
        counter.add(len(texts))
        try:
            return np.asarray(classifier.predict_proba(list(texts)), dtype=np.float64)
        except ClassifierError as e:
            raise HTTPException(502, str(e)) from e

    def check_model(model: str) -> None:
        if model != name:
            raise HTTPException(404, f"model {model!r} not found; this server serves {name!r}")

    def hf_rows(proba: np.ndarray) -> list[list[dict[str, Any]]]:
        rows = []
        for p in proba:
            order = np.argsort(-p, kind="stable")
            rows.append([{"label": labels[j], "score": float(p[j])} for j in order])
        return rows

    @app.get("/health")
    def health() -> dict[str, str]:
        return {"status": "ok", "model": name}

    @app.get("/info")
    def info() -> dict[str, Any]:
        return {
            "model_id": name,
            "labels": labels,
            "model_type": "classifier",
            "requests": counter.requests,
            "texts": counter.texts,
        }

    @app.get("/stats")
    def stats() -> dict[str, Any]:
        with counter.lock:
            return {
                "requests": counter.requests,
                "texts": counter.texts,
                "batch_sizes": list(counter.batch_sizes),
            }

    @app.post("/predict")
    @app.post("/")
    def hf_predict(body: dict[str, Any] = Body(...)) -> Any:
        if "inputs" not in body:
            raise HTTPException(422, "body must have 'inputs': a string or a list of strings")
        texts = _texts(body["inputs"], "inputs")
        rows = hf_rows(predict(texts))
        return rows if isinstance(body["inputs"], list) else rows[0]

    @app.get("/v2/health/ready")
    @app.get("/v2/health/live")
    def v2_health() -> dict[str, bool]:
        return {"ready": True}

    @app.get("/v2/models/{model}")
    def v2_metadata(model: str) -> dict[str, Any]:
        check_model(model)
        return {
            "name": name,
            "platform": "cace",
            "versions": [],
            "inputs": [{"name": "text", "datatype": "BYTES", "shape": [-1, 1]}],
            "outputs": [{"name": "probabilities", "datatype": "FP64", "shape": [-1, len(labels)]}],
            "parameters": {"labels": labels},
        }

    @app.get("/v2/models/{model}/ready")
    def v2_ready(model: str) -> dict[str, Any]:
        check_model(model)
        return {"name": name, "ready": True}

    @app.post("/v2/models/{model}/infer")
    def v2_infer(model: str, body: dict[str, Any] = Body(...)) -> Any:
        check_model(model)
        inputs = body.get("inputs")
        if not isinstance(inputs, list) or len(inputs) != 1 or not isinstance(inputs[0], dict):
            raise HTTPException(422, "inputs must be a list with one BYTES tensor")
        tensor = inputs[0]
        if tensor.get("datatype") != "BYTES":
            raise HTTPException(422, f"input datatype must be BYTES, got {tensor.get('datatype')!r}")
        data = tensor.get("data")
        if isinstance(data, list) and data and all(isinstance(d, list) and len(d) == 1 for d in data):
            data = [d[0] for d in data]  # nested [n, 1] form
        texts = _texts(data, "inputs[0].data")
        proba = predict(texts)
        out: dict[str, Any] = {
            "model_name": name,
            "outputs": [
                {
                    "name": "probabilities",
                    "datatype": "FP64",
                    "shape": [len(texts), len(labels)],
                    "data": proba.reshape(-1).tolist(),
                    "parameters": {"labels": labels},
                }
            ],
        }
        if "id" in body:
            out["id"] = body["id"]
        return out

    @app.post("/v1/models/{model}:predict")
    def v1_predict(model: str, body: dict[str, Any] = Body(...)) -> Any:
        check_model(model)
        if "instances" not in body:
            raise HTTPException(422, "body must have 'instances'")
        texts = _texts(body["instances"], "instances")
        return {"predictions": predict(texts).tolist()}

    @app.exception_handler(HTTPException)
    async def _problem(request: Request, exc: HTTPException) -> JSONResponse:
        return JSONResponse({"error": exc.detail}, status_code=exc.status_code)

    return app


def load_classifier(path_or_name: str, root: str | Path | None = None) -> tuple[Classifier, str]:
    """A classifier from an artifact directory, a joblib file, or a reference name trained under root."""
    from explainers.reference import REFERENCE_MODELS, ensure_reference, load_reference

    p = Path(path_or_name)
    if p.is_dir() and (p / META).exists():
        return load_reference(p), p.name
    if p.is_file() and p.suffix == ".joblib":
        from explainers.classifiers.local import SklearnClassifier

        return SklearnClassifier.load(p), p.stem
    if path_or_name in REFERENCE_MODELS:
        base = Path(root) if root else env.data_dir()
        return load_reference(ensure_reference(path_or_name, base)), path_or_name
    raise ValueError(
        f"{path_or_name!r} is neither a classifier artifact directory, a .joblib file, "
        f"nor a reference classifier name {REFERENCE_MODELS}"
    )


def serve(
    path_or_name: str,
    host: str = "127.0.0.1",
    port: int = 8080,
    *,
    name: str | None = None,
    root: str | Path | None = None,
    log_level: str = "warning",
) -> None:
    """Load a classifier and serve it with uvicorn until interrupted."""
    import uvicorn

    classifier, default_name = load_classifier(path_or_name, root)
    uvicorn.run(
        create_classifier_app(classifier, name or default_name),
        host=host,
        port=port,
        log_level=log_level,
        access_log=False,
    )


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="cace classifiers serve", description=__doc__.splitlines()[0])
    ap.add_argument(
        "classifier", help="artifact directory, .joblib file, or reference name (tfidf-lr, minilm-ft)"
    )
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=8080)
    ap.add_argument("--name", help="model name in V2/V1 routes (default: the artifact's name)")
    ap.add_argument(
        "--root", help="where reference classifiers are trained/kept (default $CACE_DATA_DIR or var)"
    )
    args = ap.parse_args(argv)
    serve(args.classifier, args.host, args.port, name=args.name, root=args.root)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
