"""End to end: a real uvicorn service explains (match, a baseline, and generate when a
llama.cpp server can be started), runs an effects job, is SIGKILLed mid-job, restarts,
and the job finishes with exactly the results of an uninterrupted run, without redoing
the items finished before the kill. Runs against PostgreSQL and SQLite.
"""

from __future__ import annotations

import json
import time
import uuid
from pathlib import Path

import httpx
import pytest

from benchmarks.harness.servers import free_port
from benchmarks.harness.service import drop_pg_prefix, service, store_env
from explainers.concepts import CEBAB_SCHEMA
from explainers.data.cebab import load_split
from tests.llama_setup import llama_server

TEXT = "The food was cold and bland, but our waiter was friendly and quick."
IV = {"concept": "food", "target": "Positive", "source": "Negative"}
REQUEST = {
    "intervention": {"concept": "service", "target": "Negative"},
    "method": "pt_match",
    "top_k": 5,
    "mode": "job",
    "seed": 7,
}


def dev_texts(n: int) -> list[str]:
    seen: list[str] = []
    for r in load_split("dev"):
        if r.text not in seen:
            seen.append(r.text)
        if len(seen) == n:
            break
    return seen


def wait_job(c: httpx.Client, job_id: str, timeout: float = 600) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = c.get(f"/v1/jobs/{job_id}").json()
        if job["status"] in ("succeeded", "failed", "cancelled"):
            return job
        time.sleep(0.2)
    raise TimeoutError(job)


def all_rows(c: httpx.Client, job_id: str) -> list[dict]:
    rows, offset = [], 0
    while offset is not None:
        page = c.get(f"/v1/jobs/{job_id}/rows", params={"offset": offset, "limit": 500}).json()
        rows += page["rows"]
        offset = page["next_offset"]
    return rows


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["postgresql", "sqlite"])
def test_job_survives_sigkill_and_equals_an_uninterrupted_run(backend: str, tmp_path: Path) -> None:
    env = {
        **store_env(backend, tmp_path),
        "CACE_JOB_WORKERS": "1",
        "CACE_JOB_CLAIM_BATCH": "2",
        "CACE_JOB_LEASE_S": "3",
    }
    texts = dev_texts(200)
    try:
        with service(env) as first, httpx.Client(base_url=first.base_url, timeout=120) as c:
            for method in ("match", "pt_match"):
                r = c.post("/v1/explanations", json={"text": TEXT, "intervention": IV, "method": method})
                assert r.status_code == 200, r.text
                assert r.json()["uncertainty"]["n_counterfactuals"] >= 1
            r = c.post("/v1/effects", json={**REQUEST, "texts": texts})
            assert r.status_code == 202, r.text
            job_id = r.json()["id"]
            while True:
                job = c.get(f"/v1/jobs/{job_id}").json()
                if job["counts"]["done"] >= 8:
                    break
                assert job["status"] in ("queued", "running"), job
                time.sleep(0.05)
            first.kill()  # SIGKILL mid-job: leases of in-flight items are left behind
        # Read what survived straight from a restarted server.
        with service(env) as second, httpx.Client(base_url=second.base_url, timeout=120) as c:
            rows_now = all_rows(c, job_id)
            done_before = {x["index"]: x for x in rows_now if x["status"] in ("done", "unchanged")}
            assert 8 <= len(done_before) < len(texts), "the kill must land mid-job"
            job = wait_job(c, job_id)
            assert job["status"] == "succeeded", job
            resumed = all_rows(c, job_id)
            for i, before in done_before.items():  # finished items were neither lost nor redone
                assert resumed[i]["finished_at"] == before["finished_at"]
                # Not redone after the restart. (On an idle machine an item can show 2 attempts from
                # before the kill: the test's 3 s lease may lapse during the first, slow item.)
                assert resumed[i]["attempts"] == before["attempts"]
            # An uninterrupted run of the same request gives the same result.
            r = c.post("/v1/effects", json={**REQUEST, "texts": texts})
            clean = wait_job(c, r.json()["id"])
            assert clean["status"] == "succeeded"
            assert clean["result"] == job["result"]
            clean_rows = all_rows(c, clean["id"])
            assert [(x["icace"], x["source"], x["status"]) for x in clean_rows] == [
                (x["icace"], x["source"], x["status"]) for x in resumed
            ]
    finally:
        if backend == "postgresql":
            drop_pg_prefix(env["CACE_TABLE_PREFIX"])


@pytest.mark.slow
@pytest.mark.llm
def test_generate_through_a_registered_llm(tmp_path: Path) -> None:
    """The generate method against llama.cpp's OpenAI-compatible server (SmolLM2-135M), when set up."""
    with (
        llama_server(free_port(), n_threads=2) as llm_url,
        service({**store_env("sqlite", tmp_path), "CACE_REQUEST_TIMEOUT_S": "300"}) as svc,
        httpx.Client(base_url=svc.base_url, timeout=300) as c,
    ):
        spec = {"kind": "openai", "base_url": llm_url, "model": "smollm2", "timeout_s": 120}
        assert c.post("/v1/llms", json={"name": "smollm2", "spec": spec}).status_code == 201
        r = c.post(
            "/v1/explanations",
            json={"text": TEXT, "intervention": IV, "method": "generate", "top_k": 2, "llm": "smollm2"},
        )
        assert r.status_code == 200, r.text
        e = r.json()
        assert e["method"] == "generate" and e["llm"] == "smollm2"
        assert e["cost"]["llm_calls"] >= 1 and e["cost"]["completion_tokens"] > 0
        for cf in e["counterfactuals"]:
            assert cf["text"] and cf["prediction"] is not None
        # A corpus without edits (one text per origin) gets its groups from the same LLM before training.
        corpus = [{"text": t, "labels": {"food": "Negative", "service": "Positive", "ambiance": "unknown",
                                         "noise": "unknown"}} for t in dev_texts(3)]  # fmt: skip
        files = {
            "file": ("c.jsonl", "\n".join(json.dumps(x) for x in corpus).encode(), "application/x-ndjson")
        }
        gen = {"llm": "smollm2", "concepts_per_source": 2, "verify_with_taggers": False, "max_tokens": 60}
        domain_id = f"generated-{uuid.uuid4().hex[:8]}"  # domains live in the shared test data dir
        params = {"id": domain_id, "generate": gen, "schema": CEBAB_SCHEMA.to_dict()}
        r = c.post("/v1/domains", files=files, data={"params": json.dumps(params)})
        assert r.status_code == 202, r.text
        job = wait_job(c, r.json()["id"])
        assert job["status"] == "succeeded", job
        aug = c.get(f"/v1/domains/{domain_id}").json()["generation"]
        assert c.delete(f"/v1/domains/{domain_id}").status_code == 204
        assert aug["planned_edits"] == 6 and aug["llm_name"] == "smollm2" and aug["llm_calls"] == 6
        assert aug["kept_edits"] + sum(aug["rejections"].values()) == 6
        assert sum(job["result"]["stats"]["pairs"].values()) == aug["kept_edits"]
        assert job["result"]["stats"]["texts"] == 3 + aug["kept_edits"] - aug["duplicates_of_pool"]
        bad = c.post(
            "/v1/domains",
            files=files,
            data={"params": json.dumps({"id": "g2", "generate": {"llm": "nobody"}})},
        )
        assert bad.status_code == 422 and bad.json()["errors"][0]["field"] == "body.params.generate.llm"
