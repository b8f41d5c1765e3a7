"""A real KServe V1 model server for the tfidf-lr pipeline (runs in $CACHE/venvs/kserve).

`python kserve_sklearn.py --model_dir DIR --model_name NAME --http_port PORT` loads
DIR/model.joblib and answers `POST /v1/models/NAME:predict` with `predict_proba` rows,
and `POST /v1/models/NAME-dict:predict` with one mapping class -> probability per text,
so the adapter's by-name label mapping is exercised against a real server too.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import joblib
import kserve


class SklearnText(kserve.Model):
    """predict_proba over the instances (bare strings) of a V1 request."""

    def __init__(self, name: str, model_dir: str, dict_output: bool) -> None:
        super().__init__(name)
        self.model_dir = Path(model_dir)
        self.dict_output = dict_output
        self.pipeline: Any = None
        self.load()

    def load(self) -> bool:
        self.pipeline = joblib.load(self.model_dir / "model.joblib")
        self.ready = True
        return self.ready

    def predict(self, payload: dict, headers: dict[str, str] | None = None) -> dict:
        texts = [str(t) for t in payload["instances"]]
        proba = self.pipeline.predict_proba(texts)
        if self.dict_output:
            classes = [str(c) for c in self.pipeline.classes_]
            return {"predictions": [dict(zip(classes, map(float, row), strict=True)) for row in proba]}
        return {"predictions": proba.tolist()}


if __name__ == "__main__":
    parser = argparse.ArgumentParser(parents=[kserve.model_server.parser])
    parser.add_argument("--model_dir", required=True)
    args, _ = parser.parse_known_args()
    models = [
        SklearnText(args.model_name, args.model_dir, dict_output=False),
        SklearnText(f"{args.model_name}-dict", args.model_dir, dict_output=True),
    ]
    kserve.ModelServer().start(models)
