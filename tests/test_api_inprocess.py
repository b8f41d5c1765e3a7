"""The fast tier: the app in process (FastAPI's TestClient), no uvicorn, no domain loaded.

Request validation, problem documents and the OpenAPI contract need no server process and no
trained artifacts; these run in well under a second each. Everything that needs a live server,
a model or a second process is in the live-server tests.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from app.main import create_app
from app.settings import Settings


@pytest.fixture(scope="module")
def client(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    data = tmp_path_factory.mktemp("inprocess")
    settings = Settings(
        data_dir=Path(data),
        database_url=f"sqlite:///{data / 'jobs.sqlite'}",
        default_domain="none",
        auto_calibrate=False,
        log_format="text",
    )
    with TestClient(create_app(settings)) as c:
        deadline = time.monotonic() + 30
        while c.get("/readyz").status_code != 200:
            assert time.monotonic() < deadline, c.get("/readyz").json()
            time.sleep(0.05)
        yield c


def problem(r, status: int) -> dict:  # noqa: ANN001 (a TestClient response)
    assert r.status_code == status, r.text
    assert r.headers["content-type"].startswith("application/problem+json")
    return r.json()


def test_a_server_without_a_default_domain_is_ready_and_lists_none(client: TestClient) -> None:
    assert client.get("/v1/domains").json() == {"domains": []}
    assert "match" in client.get("/v1/methods").json()["methods"]


def test_requests_name_what_is_missing(client: TestClient) -> None:
    body = {"text": "A fine film.", "intervention": {"concept": "plot", "target": "bad"}}
    assert "no default domain" in problem(client.post("/v1/explanations", json=body), 409)["detail"]
    p = problem(client.post("/v1/explanations", json={**body, "domain": "movies"}), 422)
    assert p["errors"][0]["field"] == "body.domain"
    p = problem(client.post("/v1/explanations", json={**body, "domain": "Not An Id"}), 422)
    assert p["errors"][0]["field"] == "body.domain"
    p = problem(client.post("/v1/explanations", json={**body, "top_k": True}), 422)
    assert p["errors"][0]["field"] == "body.top_k"


def test_domain_uploads_are_checked_before_any_job(client: TestClient) -> None:
    def post(lines: list[str], params: dict) -> dict:
        files = {"file": ("c.jsonl", "\n".join(lines).encode(), "application/x-ndjson")}
        return problem(client.post("/v1/domains", files=files, data={"params": json.dumps(params)}), 422)

    good = json.dumps({"text": "fine", "labels": {"plot": "good"}})
    assert post([good, "{oops"], {"id": "d1"})["errors"][0]["field"] == "body.file.line2"
    assert post([good, good], {"id": "d1"})["errors"][0]["field"] == "body.params.schema"  # one value only
    assert post([good], {"id": "d1", "nope": 1})["errors"][0]["field"] == "body.params.nope"
    assert client.get("/v1/jobs").json()["total"] == 0


def test_the_spec_describes_uploads_as_files_and_errors_as_problems(client: TestClient) -> None:
    spec = client.get("/openapi.json").json()
    upload = spec["components"]["schemas"]["Body_create_domain"]["properties"]["file"]
    assert upload == {**upload, "type": "string", "format": "binary"}
    for path in spec["paths"].values():
        for op in path.values():
            for code, resp in op.get("responses", {}).items():
                if (
                    code.startswith(("4", "5")) and op["operationId"] != "readyz"
                ):  # 503 there is a Health body
                    assert list(resp.get("content", {})) == ["application/problem+json"], (
                        op["operationId"],
                        code,
                    )


@pytest.mark.parametrize(
    "path, raw, field",
    [
        (
            "/v1/explanations",
            '{"text": SURR, "intervention": {"concept": "food", "target": "Negative"}}',
            "body.text",
        ),
        (
            "/v1/effects",
            '{"texts": [SURR], "intervention": {"concept": "food", "target": "Negative"}}',
            "body.texts",
        ),
        (
            "/v1/effects",
            '{"texts": [{"text": "ok", "id": SURR}], "intervention": {"concept": "food", "target": '
            '"Negative"}, "mode": "job"}',
            "body.texts",
        ),
        (
            "/v1/effects",
            '{"texts": ["a\\u0000b"], "intervention": {"concept": "food", "target": "Negative"}}',
            "body.texts",
        ),
        (
            "/v1/explanations",
            '{"text": "   \\n\\t ", "intervention": {"concept": "food", "target": "Negative"}}',
            "body.text",
        ),
        (
            "/v1/effects",
            '{"texts": ["  "], "intervention": {"concept": "food", "target": "Negative"}}',
            "body.texts",
        ),
        (
            "/v1/explanations",
            '{"text": "ok", "top_k": true, "intervention": {"concept": "food", "target": "Negative"}}',
            "body.top_k",
        ),
        (
            "/v1/effects",
            '{"texts": ["ok"], "seed": -1, "intervention": {"concept": "food", "target": "Negative"}}',
            "body.seed",
        ),
        ("/v1/classifiers", '{"name": "n", "description": "a\\u0000b", "spec": {}}', "body.description"),
    ],
)
def test_bad_text_and_types_are_422_naming_the_field(
    client: TestClient, path: str, raw: str, field: str
) -> None:
    """Every 500 a probe found in request validation (lone surrogates, NUL, blank text, wrong types)."""
    r = client.post(
        path, content=raw.replace("SURR", '"\\ud800"').encode(), headers={"content-type": "application/json"}
    )
    body = problem(r, 422)
    assert any(e["field"].startswith(field) for e in body.get("errors") or []) or field in body["detail"], (
        body
    )
