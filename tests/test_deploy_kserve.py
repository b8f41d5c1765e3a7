"""The KServe V1 data plane on the real service: `:explain` gives what `/v1/explanations` gives."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from benchmarks.harness.servers import Server
from tests.test_security import service

TEXTS = ["The food was delicious but the waiter ignored us.", "Rude staff, cold fries, loud music."]
LABELS = {"food": "Positive", "service": "Negative", "ambiance": "unknown", "noise": "unknown"}
PARAMS = {
    "intervention": {"concept": "service", "target": "Positive", "source": "Negative"},
    "method": "approx",
    "top_k": 3,
    "base_labels": LABELS,
}


@pytest.fixture(scope="module")
def svc(
    tmp_path_factory: pytest.TempPathFactory, tfidf_lr_dir: Path, test_data_dir: Path
) -> Iterator[Server]:
    with service(
        tmp_path_factory.mktemp("kserve"),
        test_data_dir,
        CACE_DEFAULT_POOL="train_inclusive",
        CACE_MAX_INLINE_TEXTS="3",
    ) as srv:
        yield srv


def test_explain_matches_the_native_api(svc: Server) -> None:
    with httpx.Client(base_url=svc.base_url, timeout=120) as c:
        r = c.post("/v1/models/tfidf-lr:explain", json={"instances": TEXTS, "parameters": PARAMS})
        assert r.status_code == 200, r.text
        out = r.json()
        assert out["model_name"] == "tfidf-lr" and len(out["explanations"]) == 2
        for text, exp in zip(TEXTS, out["explanations"], strict=True):
            native = c.post("/v1/explanations", json={"text": text, "classifier": "tfidf-lr", **PARAMS})
            assert native.status_code == 200, native.text
            assert exp["icace"] == pytest.approx(native.json()["icace"])
            assert set(exp["icace"]) == {"1", "2", "3", "4", "5"}
            assert exp["intervention"]["concept"] == "service" and exp["method"] == "approx"
        # Per-instance objects override the shared parameters.
        r = c.post(
            "/v1/models/tfidf-lr:explain",
            json={
                "instances": [
                    {
                        "text": TEXTS[0],
                        "intervention": {"concept": "food", "target": "Negative", "source": "Positive"},
                    }
                ],
                "parameters": PARAMS,
            },
        )
        assert r.status_code == 200 and r.json()["explanations"][0]["intervention"]["concept"] == "food"
        assert c.get("/v1/models/tfidf-lr").json() == {"name": "tfidf-lr", "ready": True}


def test_explain_errors_are_problems(svc: Server) -> None:
    with httpx.Client(base_url=svc.base_url, timeout=60) as c:
        r = c.post("/v1/models/no-such-model:explain", json={"instances": ["x"], "parameters": PARAMS})
        assert r.status_code == 404 and "CACE_KSERVE_PREDICTOR_HOST" in r.json()["detail"]
        r = c.post(
            "/v1/models/tfidf-lr:explain", json={"instances": ["x"], "parameters": {"method": "approx"}}
        )
        assert r.status_code == 422 and "body.instances.0.intervention" in r.json()["detail"]
        r = c.post("/v1/models/tfidf-lr:explain", json={"instances": ["a"] * 4, "parameters": PARAMS})
        assert r.status_code == 413
        r = c.post("/v1/models/tfidf-lr:explain", json={"instances": [], "parameters": PARAMS})
        assert r.status_code == 422
