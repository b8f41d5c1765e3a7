"""The service over real HTTP: explanations, effects (inline, job, upload), registries,
spaces, jobs, problem+json errors, and the OpenAPI contract.

One uvicorn subprocess (SQLite store) serves the module; the project's own classifier
server (explainers.serving) is started to exercise a registered remote classifier.
"""

from __future__ import annotations

import json
import time
import uuid
from pathlib import Path

import httpx
import numpy as np
import pytest

from benchmarks.harness.servers import free_port, python, running
from benchmarks.harness.service import service, store_env
from explainers.data.cebab import load_split

LABELS = ["1", "2", "3", "4", "5"]
PROBLEM = "application/problem+json"


@pytest.fixture(scope="module")
def base(tmp_path_factory: pytest.TempPathFactory) -> str:
    tmp = tmp_path_factory.mktemp("svc")
    # The first splice/auto request builds its explainer: past 60 s on a loaded 2-core machine.
    env = {**store_env("sqlite", tmp), "CACE_MAX_INLINE_TEXTS": "5", "CACE_REQUEST_TIMEOUT_S": "300"}
    with service(env) as srv:
        yield srv.base_url


@pytest.fixture(scope="module")
def client(base: str) -> httpx.Client:
    with httpx.Client(base_url=base, timeout=120) as c:
        yield c


@pytest.fixture(scope="module")
def dev_texts() -> list[str]:
    seen, out = set(), []
    for r in load_split("dev"):
        if r.is_original and r.text not in seen:
            seen.add(r.text)
            out.append(r.text)
    return out[:40]


def explain(client: httpx.Client, **body) -> httpx.Response:
    body.setdefault("intervention", {"concept": "service", "target": "Positive", "source": "Negative"})
    body.setdefault("text", "The food was great but the waiter was rude and slow.")
    return client.post("/v1/explanations", json=body)


def wait_job(client: httpx.Client, job_id: str, timeout: float = 300) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = client.get(f"/v1/jobs/{job_id}").json()
        if job["status"] in ("succeeded", "failed", "cancelled"):
            return job
        time.sleep(0.2)
    raise TimeoutError(job)


def assert_problem(r: httpx.Response, status: int, field: str | None = None) -> dict:
    assert r.status_code == status, r.text
    assert r.headers["content-type"].startswith(PROBLEM)
    body = r.json()
    assert body["status"] == status and body["title"] and body["detail"] and body["type"]
    if field is not None:
        assert field in [e["field"] for e in body["errors"]], body
    return body


# ---- health and contract ---------------------------------------------------------------------


def test_health_and_readiness(client: httpx.Client) -> None:
    assert client.get("/healthz").json()["status"] == "ok"
    ready = client.get("/readyz").json()
    assert ready["ready"] is True
    for name in ("classifier", "domain", "store"):
        assert ready["components"][name]["status"] == "ready", ready
    # The default domain's explainers with their state: `match` was prebuilt (CACE_PREWARM_METHODS=match).
    built = {e["method"]: e for e in ready["explainers"]}
    assert built["match"]["status"] == "ready" and built["match"]["seconds"] is not None, ready["explainers"]


def test_openapi_operation_ids_are_stable_and_unique(client: httpx.Client) -> None:
    spec = client.get("/openapi.json").json()
    ops = [op["operationId"] for path in spec["paths"].values() for op in path.values()]
    assert len(ops) == len(set(ops))
    assert {
        "create_explanation",
        "estimate_effects",
        "upload_effects",
        "get_job",
        "list_jobs",
        "cancel_job",
        "list_job_rows",
        "download_job_rows",
        "register_classifier",
        "list_classifiers",
        "get_classifier",
        "delete_classifier",
        "register_llm",
        "list_llms",
        "create_domain",
        "list_domains",
        "get_domain",
        "delete_domain",
        "calibrate_domain",
        "list_calibrations",
        "list_methods",
        "healthz",
        "readyz",
    } <= set(ops)
    schemas = spec["components"]["schemas"]
    for name in ("ExplanationRequest", "ExplanationResponse", "EffectsRequest", "JobOut", "Registration"):
        assert "examples" in schemas[name], name


def test_methods_list_generate_match_and_baselines(client: httpx.Client) -> None:
    methods = client.get("/v1/methods").json()["methods"]
    assert {"match", "generate", "pt_match", "approx", "zero"} <= set(methods)


# ---- explanations ----------------------------------------------------------------------------


def test_explanation_with_a_baseline(client: httpx.Client) -> None:
    r = explain(client, method="pt_match", top_k=4)
    assert r.status_code == 200, r.text
    e = r.json()
    assert e["labels"] == LABELS and e["method"] == "pt_match" and e["classifier"] == "tfidf-lr"
    assert sum(e["base_prediction"].values()) == pytest.approx(1.0, abs=1e-6)
    assert sum(e["icace"].values()) == pytest.approx(0.0, abs=1e-6)  # a difference of two distributions
    assert len(e["counterfactuals"]) == 4
    sims = [c["similarity"] for c in e["counterfactuals"]]
    assert sims == sorted(sims, reverse=True)
    # ICaCE is the mean counterfactual prediction minus the base prediction.
    mean_cf = np.mean([[c["prediction"][lab] for lab in LABELS] for c in e["counterfactuals"]], axis=0)
    base = np.array([e["base_prediction"][lab] for lab in LABELS])
    assert np.allclose(mean_cf - base, [e["icace"][lab] for lab in LABELS], atol=1e-9)
    assert e["uncertainty"]["n_counterfactuals"] == 4
    assert e["cost"]["classifier_texts"] == 5 and e["timings"]["total_ms"] > 0


def test_explanation_with_match_reports_the_domain_and_space(client: httpx.Client) -> None:
    r = explain(client, method="match", top_k=3, aggregation="similarity_weighted")
    assert r.status_code == 200, r.text
    e = r.json()
    assert e["domain"] == "cebab" and e["space_id"] == "default" and e["pool"]["pairs"] > 0
    assert 1 <= len(e["counterfactuals"]) <= 3
    assert all(c["similarity"] is not None for c in e["counterfactuals"])


def test_each_counterfactual_carries_the_taggers_reading_of_every_concept(client: httpx.Client) -> None:
    r = explain(client, method="match", top_k=4, intervention={"concept": "food", "target": "Negative"})
    assert r.status_code == 200, r.text
    e = r.json()
    schema = [c["name"] for c in client.get("/v1/domains/cebab").json()["schema"]["concepts"]]
    base = e["base_concepts"]
    assert base and set(base) <= set(schema) and base["food"] == e["intervention"]["source"]
    assert e["counterfactuals"] and e["timings"]["concepts_ms"] > 0
    assert e["timings"]["total_ms"] >= e["timings"]["concepts_ms"]
    for cf in e["counterfactuals"]:
        assert set(cf["concepts"]) == set(base)
        # The same taggers, asked through the source inference of the counterfactual as a query.
        alone = explain(
            client, text=cf["text"], method="zero", intervention={"concept": "service", "target": "Positive"}
        ).json()
        assert alone["base_concepts"] == cf["concepts"]
        assert alone["intervention"]["source"] == cf["concepts"]["service"]


def test_uncalibrated_auto_reports_the_spread_its_counterfactuals_measured(client: httpx.Client) -> None:
    """It said 0.000 on every label while its counterfactuals disagreed."""
    body = {"text": "The food was great but the waiter was rude and slow.", "method": "auto", "top_k": 5}
    body["intervention"] = {"concept": "food", "target": "Negative"}
    r = client.post("/v1/explanations", json=body, timeout=300)
    assert r.status_code == 200, r.text
    e = r.json()
    assert e["details"]["calibrated"] is False, "the shared test domain is not calibrated"
    preds = np.array([[c["prediction"][lab] for lab in LABELS] for c in e["counterfactuals"]])
    assert len(preds) >= 2 and preds.std(axis=0).max() > 0.01, "the counterfactuals disagree"
    assert e["uncertainty"]["n_counterfactuals"] >= len(preds)
    assert max(e["uncertainty"]["spread"].values()) > 0.001


def test_methods_say_generate_needs_an_llm(client: httpx.Client) -> None:
    got = client.get("/v1/methods").json()
    assert "generate" in got["methods"] and "LLM" in got["unavailable"]["generate"]
    spec = {"kind": "openai", "base_url": "http://127.0.0.1:9/v1", "model": "m"}
    assert client.post("/v1/llms", json={"name": "for-generate", "spec": spec}).status_code == 201
    try:
        assert "generate" not in client.get("/v1/methods").json()["unavailable"]
    finally:
        client.delete("/v1/llms/for-generate")
    assert "generate" in client.get("/v1/methods").json()["unavailable"]


def test_source_is_inferred_by_the_taggers(client: httpx.Client) -> None:
    r = explain(
        client,
        method="pt_match",
        intervention={"concept": "food", "target": "Negative"},
        text="The pasta was wonderful and fresh, best I have had in years.",
    )
    assert r.status_code == 200, r.text
    iv = r.json()["intervention"]
    assert iv["source_inferred"] is True and iv["source"] == "Positive"


def test_already_at_target_is_a_zero_effect(client: httpx.Client) -> None:
    r = explain(
        client,
        method="pt_match",
        intervention={"concept": "food", "target": "Positive"},
        text="The pasta was wonderful and fresh, best I have had in years.",
    )
    e = r.json()
    assert r.status_code == 200 and e["intervention"]["source"] == "Positive"
    assert all(v == 0 for v in e["icace"].values()) and e["counterfactuals"] == []


@pytest.mark.parametrize(
    ("body", "status", "field"),
    [
        ({"intervention": {"concept": "price", "target": "Positive"}}, 422, "body.intervention.concept"),
        ({"intervention": {"concept": "food", "target": "Great"}}, 422, "body.intervention.target"),
        (
            {"intervention": {"concept": "food", "target": "Positive", "source": "Positive"}},
            422,
            "body.intervention.source",
        ),
        ({"text": ""}, 422, "body.text"),
        ({"method": "magic"}, 422, "body.method"),
        ({"classifier": "nope"}, 422, "body.classifier"),
        ({"top_k": 0}, 422, "body.top_k"),
        ({"top_k": 500}, 422, "body.top_k"),
        ({"aggregation": "mode"}, 422, "body.aggregation"),
        ({"domain": "no-such-domain", "method": "match"}, 422, "body.domain"),
        ({"base_labels": {"service": "Bogus"}}, 422, "body.base_labels.service"),
        ({"base_labels": {"price": "high"}}, 422, "body.base_labels.price"),
        ({"similarity_threshold": 0.5, "method": "zero"}, 422, "body.similarity_threshold"),
        # generate declares no similarity threshold: refused, not silently ignored
        ({"similarity_threshold": 0.5, "method": "generate"}, 422, "body.similarity_threshold"),
        ({"aggregation": "median", "method": "pair_transfer"}, 422, "body.aggregation"),
        (
            {"classifier": {"protocol": "hf", "url": "http://127.0.0.1:9/predict"}},
            422,
            "body.classifier.hf.labels",
        ),
        (
            {"classifier": {"protocol": "sklearn", "path": "var/test/classifiers/tfidf-lr"}},
            422,
            "body.classifier",
        ),
    ],
)
def test_bad_input_is_a_4xx_naming_the_field(
    client: httpx.Client, body: dict, status: int, field: str
) -> None:
    assert_problem(explain(client, **body), status, field)


def test_malformed_json_and_unknown_routes_are_problems(client: httpx.Client) -> None:
    r = client.post("/v1/explanations", content=b"{not json", headers={"content-type": "application/json"})
    assert_problem(r, 422)
    assert_problem(client.get("/v1/jobs/doesnotexist"), 404)
    assert_problem(client.get("/v1/nothing-here"), 404)


def test_generate_without_an_llm_is_a_409_saying_what_is_missing(client: httpx.Client) -> None:
    body = assert_problem(explain(client, method="generate"), 409)
    assert "LLM" in body["detail"]


def test_unreachable_classifier_is_a_502(client: httpx.Client) -> None:
    spec = {
        "protocol": "hf",
        "url": f"http://127.0.0.1:{free_port()}/predict",
        "labels": LABELS,
        "retries": 0,
    }
    body = assert_problem(explain(client, method="pt_match", classifier=spec), 502)
    assert "127.0.0.1" in body["detail"]


# ---- registries ------------------------------------------------------------------------------


def test_registered_remote_classifier_matches_the_in_process_one(
    client: httpx.Client, tfidf_lr_dir: Path
) -> None:
    port = free_port()
    cmd = [
        python(),
        "-c",
        f"from explainers.serving import serve; serve({str(tfidf_lr_dir)!r}, '127.0.0.1', {port})",
    ]
    with running(cmd, port=port, health_path="/health", timeout=120) as clf_server:
        spec = {"protocol": "hf", "url": clf_server.base_url + "/predict", "labels": LABELS}
        r = client.post("/v1/classifiers", json={"name": "tfidf-remote", "spec": spec, "description": "test"})
        assert r.status_code == 201, r.text
        assert_problem(client.post("/v1/classifiers", json={"name": "tfidf-remote", "spec": spec}), 409)
        assert client.get("/v1/classifiers/tfidf-remote").json()["spec"]["url"] == spec["url"]
        names = {c["name"]: c for c in client.get("/v1/classifiers").json()["items"]}
        assert names["tfidf-lr"]["builtin"] is True and "tfidf-remote" in names
        remote = explain(client, method="pt_match", classifier="tfidf-remote").json()
        local = explain(client, method="pt_match", classifier="tfidf-lr").json()
        assert remote["classifier"] == "tfidf-remote"
        for lab in LABELS:
            assert remote["icace"][lab] == pytest.approx(local["icace"][lab], abs=1e-6)
    # The endpoint is gone now: upstream failure, then delete the registration.
    assert explain(
        client,
        method="pt_match",
        classifier="tfidf-remote",
        text="A different text so the prediction cache cannot answer.",
    ).status_code in (502, 504)
    assert client.delete("/v1/classifiers/tfidf-remote").status_code == 204
    assert_problem(client.get("/v1/classifiers/tfidf-remote"), 404)
    assert_problem(client.delete("/v1/classifiers/tfidf-lr"), 409)


def test_bad_classifier_registration_names_the_field(client: httpx.Client) -> None:
    r = client.post("/v1/classifiers", json={"name": "bad", "spec": {"protocol": "v2", "labels": LABELS}})
    assert_problem(r, 422, "body.spec.v2.url")
    assert_problem(client.post("/v1/classifiers", json={"name": "bad name!", "spec": {}}), 422, "body.name")


def test_llm_registry_round_trip_hides_the_key(client: httpx.Client) -> None:
    spec = {"kind": "openai", "base_url": "http://127.0.0.1:9/v1", "model": "m", "api_key": "sk-secret"}
    assert client.post("/v1/llms", json={"name": "local", "spec": spec}).status_code == 201
    got = client.get("/v1/llms/local").json()
    assert got["spec"]["api_key"] == "***" and "sk-secret" not in client.get("/v1/llms").text
    assert client.delete("/v1/llms/local").status_code == 204
    assert_problem(client.get("/v1/llms/local"), 404)


# ---- effects ---------------------------------------------------------------------------------

EFFECT = {"intervention": {"concept": "food", "target": "Negative"}, "method": "pt_match", "top_k": 3}


def test_inline_effects_cace_is_the_mean_icace(client: httpx.Client, dev_texts: list[str]) -> None:
    r = client.post("/v1/effects", json={**EFFECT, "texts": dev_texts[:4]})
    assert r.status_code == 200, r.text
    body = r.json()
    rows = [x for x in body["rows"] if x["status"] == "done"]
    res = body["result"]
    assert res["summary"]["n_texts"] == 4 and res["summary"]["n_changed"] == len(rows) >= 1
    mean = np.mean([[x["icace"][lab] for lab in LABELS] for x in rows], axis=0)
    assert np.allclose(mean, [res["cace"][lab] for lab in LABELS])
    for lab in LABELS:
        assert res["ci_low"][lab] <= res["cace"][lab] + 1e-12 <= res["ci_high"][lab] + 2e-12


def test_effects_job_equals_inline_and_pages_and_downloads(
    client: httpx.Client, dev_texts: list[str]
) -> None:
    texts = dev_texts[:12]
    inline = client.post("/v1/effects", json={**EFFECT, "texts": texts, "mode": "inline"})
    assert_problem(inline, 422, "body.mode")  # 12 > max_inline_texts=5
    r = client.post("/v1/effects", json={**EFFECT, "texts": texts})  # auto: becomes a job
    assert r.status_code == 202, r.text
    assert r.headers["location"] == f"/v1/jobs/{r.json()['id']}"
    job = wait_job(client, r.json()["id"])
    assert job["status"] == "succeeded", job
    assert job["counts"]["done"] == 12 and job["progress"] == 1.0
    page1 = client.get(f"/v1/jobs/{job['id']}/rows", params={"limit": 5}).json()
    page2 = client.get(
        f"/v1/jobs/{job['id']}/rows", params={"offset": page1["next_offset"], "limit": 100}
    ).json()
    rows = page1["rows"] + page2["rows"]
    assert [x["index"] for x in rows] == list(range(12)) and page2["next_offset"] is None
    lines = [json.loads(x) for x in client.get(f"/v1/jobs/{job['id']}/rows.jsonl").text.splitlines()]
    assert lines == rows
    # The same texts split into inline requests give the same per-text ICaCE.
    for start in (0, 5, 10):
        part = client.post("/v1/effects", json={**EFFECT, "texts": texts[start : start + 5]}).json()["rows"]
        for a, b in zip(part, rows[start : start + 5], strict=True):
            assert a["icace"] == b["icace"] and a["source"] == b["source"]


def test_effects_upload_jsonl(client: httpx.Client, dev_texts: list[str]) -> None:
    lines = [
        json.dumps(dev_texts[0]),
        json.dumps({"text": dev_texts[1], "id": "b", "labels": {"food": "Positive"}}),
    ]
    files = {"file": ("texts.jsonl", "\n".join(lines).encode(), "application/x-ndjson")}
    r = client.post("/v1/effects/upload", files=files, data={"params": json.dumps(EFFECT)})
    assert r.status_code == 200, r.text
    rows = r.json()["rows"]
    assert rows[1]["id"] == "b" and rows[1]["source"] == "Positive"
    bad = {"file": ("t.jsonl", b'"ok"\n{"nope": 1}\n', "application/x-ndjson")}
    assert_problem(
        client.post("/v1/effects/upload", files=bad, data={"params": json.dumps(EFFECT)}), 422, "file.line2"
    )
    assert_problem(
        client.post("/v1/effects/upload", files=files, data={"params": "{}"}), 422, "params.intervention"
    )


def test_a_large_upload_streams_into_a_job(client: httpx.Client, dev_texts: list[str]) -> None:
    # More lines than max_inline_texts (5 here): the file goes into the store a chunk at a time.
    lines = [
        json.dumps({"text": f"{dev_texts[i % len(dev_texts)]} ({i})", "id": f"u{i}"}) for i in range(2500)
    ]
    before = client.get("/v1/jobs", params={"limit": 1}).json()["total"]
    bad = lines[:2100] + ["{not json"] + lines[2100:]  # a bad line far past the first chunk
    r = client.post(
        "/v1/effects/upload",
        data={"params": json.dumps(EFFECT)},
        files={"file": ("big.jsonl", "\n".join(bad).encode(), "application/x-ndjson")},
    )
    assert_problem(r, 422, "file.line2101")
    assert client.get("/v1/jobs", params={"limit": 1}).json()["total"] == before  # nothing half-stored
    r = client.post(
        "/v1/effects/upload",
        data={"params": json.dumps(EFFECT)},
        files={"file": ("big.jsonl", "\n".join(lines).encode(), "application/x-ndjson")},
    )
    assert r.status_code == 202, r.text
    job_id = r.json()["id"]
    client.post(f"/v1/jobs/{job_id}/cancel")
    assert client.get(f"/v1/jobs/{job_id}").json()["total"] == 2500
    got = client.get(f"/v1/jobs/{job_id}/rows.jsonl")
    rows = [json.loads(x) for x in got.text.splitlines()]
    assert [x["index"] for x in rows] == list(range(2500))
    assert [x["id"] for x in rows[:3]] == ["u0", "u1", "u2"] and rows[-1]["id"] == "u2499"


def test_cancel_a_job(client: httpx.Client, dev_texts: list[str]) -> None:
    r = client.post("/v1/effects", json={**EFFECT, "texts": dev_texts * 5, "mode": "job"})
    job_id = r.json()["id"]
    c = client.post(f"/v1/jobs/{job_id}/cancel")
    assert c.status_code == 200 and c.json()["status"] == "cancelled"
    time.sleep(1.0)
    job = client.get(f"/v1/jobs/{job_id}").json()
    assert job["status"] == "cancelled" and job["counts"]["done"] < 200
    assert_problem(client.post(f"/v1/jobs/{job_id}/cancel"), 409)
    listed = client.get("/v1/jobs", params={"status": "cancelled"}).json()
    assert job_id in [j["id"] for j in listed["jobs"]]


# ---- domains ---------------------------------------------------------------------------------


def test_build_a_domain_from_an_uploaded_corpus_and_use_it(client: httpx.Client) -> None:
    reviews = [r for r in load_split("train_inclusive")][:300]
    corpus = "\n".join(
        json.dumps({"text": r.text, "labels": r.clean_labels(), "origin": r.original_id}) for r in reviews
    )
    files = {"file": ("corpus.jsonl", corpus.encode(), "application/x-ndjson")}
    domain_id = f"tiny-{uuid.uuid4().hex[:8]}"  # domains live in the shared test data dir
    r = client.post("/v1/domains", files=files, data={"params": json.dumps({"id": domain_id})})
    assert r.status_code == 202, r.text
    job = wait_job(client, r.json()["id"], timeout=600)
    assert job["status"] == "succeeded", job
    distinct = len({r.text for r in reviews})  # CEBaB repeats a few texts; a domain keeps each once
    assert job["result"]["stats"]["texts"] == distinct and sum(job["result"]["stats"]["pairs"].values()) > 0
    got = client.get(f"/v1/domains/{domain_id}").json()
    assert got["stats"]["texts"] == distinct and got["default"] is False
    assert got["schema"]["concepts"][0]["name"] == "food"
    assert domain_id in [d["id"] for d in client.get("/v1/domains").json()["domains"]]
    e = explain(client, method="match", domain=domain_id, top_k=2)
    assert e.status_code == 200 and e.json()["domain"] == domain_id and e.json()["pool"]["texts"] == distinct
    assert client.delete(f"/v1/domains/{domain_id}").status_code == 204
    assert_problem(client.get(f"/v1/domains/{domain_id}"), 404)
    assert_problem(client.delete("/v1/domains/cebab"), 409)
    bad = client.post("/v1/domains", files=files, data={"params": json.dumps({"id": "Bad Id"})})
    assert_problem(bad, 422, "body.params.id")


def test_domain_generate_options_are_checked_before_a_job_starts(client: httpx.Client) -> None:
    corpus = "\n".join(json.dumps({"text": f"text {i}", "labels": {"food": "Positive"}}) for i in range(3))
    files = {"file": ("c.jsonl", corpus.encode(), "application/x-ndjson")}

    def post(generate: object) -> httpx.Response:
        return client.post(
            "/v1/domains", files=files, data={"params": json.dumps({"id": "gen-check", "generate": generate})}
        )

    assert_problem(client.post("/v1/domains", files=files, data={"params": "{not json"}), 422, "body.params")
    assert_problem(post({"sources": 0}), 422, "body.params.generate.sources")
    assert_problem(post({"typo": 1}), 422, "body.params.generate.typo")
    assert (
        "not registered" in assert_problem(post({"llm": "nobody"}), 422, "body.params.generate.llm")["detail"]
    )
    # This server has no default LLM configured: say so instead of queuing a job that must fail.
    assert "no default LLM" in assert_problem(post({}), 422, "body.params.generate.llm")["detail"]
    assert_problem(client.get("/v1/domains/gen-check"), 404)


def test_domain_corpus_and_schema_are_validated_naming_the_line(client: httpx.Client) -> None:
    schema = {"concepts": [{"name": "food", "values": ["Positive", "Negative"]}]}

    def post(lines: list[object], params: dict) -> httpx.Response:
        body = "\n".join(x if isinstance(x, str) else json.dumps(x) for x in lines).encode()
        return client.post(
            "/v1/domains",
            files={"file": ("c.jsonl", body, "application/x-ndjson")},
            data={"params": json.dumps({"id": "bad-corpus", **params})},
        )

    good = {"text": "fine food", "labels": {"food": "Positive"}}
    assert_problem(
        post([good, {"text": "x", "labels": {"food": "Meh"}}], {"schema": schema}),
        422,
        "body.file.line2.labels.food",
    )
    assert_problem(post([good, "{broken"], {}), 422, "body.file.line2")
    assert_problem(
        post([good, {"text": "x", "labels": {"price": "high"}}], {"schema": schema}),
        422,
        "body.file.line2.labels.price",
    )
    assert_problem(post([good], {}), 422, "body.file")
    assert_problem(
        post([good, good], {"schema": {"concepts": [{"name": "food", "values": ["a"]}]}}),
        422,
        "body.params.schema.concepts.0.values",
    )
    assert_problem(post([good, {"text": "\ud800", "labels": {}}], {}), 422, "body.file.line2")
    assert_problem(client.get("/v1/domains/bad-corpus"), 404)


# ---- a bare server (no embedded defaults, no workers) on both stores --------------------------


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_queue_bound_and_registry_persist_across_restarts(
    backend: str, tmp_path: Path, tfidf_lr_dir: Path
) -> None:
    from benchmarks.harness.service import drop_pg_prefix

    env = {
        **store_env(backend, tmp_path),
        "CACE_DEFAULT_CLASSIFIER": "",
        "CACE_DEFAULT_POOL": "",
        "CACE_DEFAULT_TAGGERS": "false",
        "CACE_DEFAULT_SPACE": "false",
        "CACE_JOB_WORKERS": "0",
        "CACE_JOB_QUEUE_LIMIT": "1",
        "CACE_MODELS_DIR": str(tfidf_lr_dir.parent),
    }
    spec = {"protocol": "sklearn", "path": str(tfidf_lr_dir)}  # in-process: only from CACE_MODELS_DIR
    body = {
        "texts": ["Great pasta.", "Cold soup."],
        "intervention": {"concept": "food", "target": "Negative", "source": "Positive"},
        "classifier": "local-tfidf",
        "method": "zero",
        "mode": "job",
    }
    try:
        with service(env) as srv, httpx.Client(base_url=srv.base_url, timeout=60) as c:
            assert c.post("/v1/classifiers", json={"name": "local-tfidf", "spec": spec}).status_code == 201
            first = c.post("/v1/effects", json=body)
            assert first.status_code == 202, first.text
            full = assert_problem(c.post("/v1/effects", json=body), 429)
            assert "1 jobs" in full["detail"]
            assert int(c.post("/v1/effects", json=body).headers["retry-after"]) > 0
            assert c.get(f"/v1/jobs/{first.json()['id']}").json()["status"] == "queued"  # no workers here
        with service(env) as srv, httpx.Client(base_url=srv.base_url, timeout=60) as c:
            assert c.get("/v1/classifiers/local-tfidf").json()["spec"] == spec
            assert c.get(f"/v1/jobs/{first.json()['id']}").json()["status"] == "queued"
            assert c.post(f"/v1/jobs/{first.json()['id']}/cancel").status_code == 200
            r = c.post("/v1/effects", json={**body, "mode": "inline"})
            assert r.status_code == 200 and r.json()["result"]["cace"] == {lab: 0.0 for lab in LABELS}
            assert c.post("/v1/effects", json=body).status_code == 202  # room again after the cancel
    finally:
        if backend == "postgresql":
            drop_pg_prefix(env["CACE_TABLE_PREFIX"])
