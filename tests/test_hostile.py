"""Hostile input against a live service (issue #12): every hole a probe found, as a regression test.

Each test talks HTTP to a real uvicorn process (`tests.service_server.service`) with the
minimal embedded defaults (the tfidf-lr classifier; no pool, taggers or space, which these
checks do not need). Upstreams are a real HTTP server in this process (`Upstream`) whose
routes fail the way real model servers do: 503s, slow bodies, long error pages. Where the
job store matters, tests run on SQLite and PostgreSQL.
"""

from __future__ import annotations

import http.server
import json
import os
import shutil
import subprocess
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.servers import ROOT, Server, free_port, python, running
from tests.service_server import drop_pg_prefix, service, store_env

MINIMAL = {
    "CACE_DEFAULT_POOL": "",
    "CACE_DEFAULT_TAGGERS": "false",
    "CACE_DEFAULT_SPACE": "false",
    "CACE_LOG_FORMAT": "json",
}
SECRET = "s3cr3t-llm-key-value"
IV = {"concept": "service", "target": "Positive", "source": "Negative"}
LEAK = "LEAKED-UPSTREAM-SECRET"


class Upstream:
    """A real HTTP server standing in for classifier and LLM endpoints, recording what it receives."""

    def __init__(self) -> None:
        self.seen: list[dict[str, Any]] = []
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:
                pass

            def do_POST(self) -> None:  # noqa: N802 (http.server's naming)
                body = self.rfile.read(int(self.headers.get("content-length") or 0))
                outer.seen.append(
                    {"path": self.path, "auth": self.headers.get("authorization"), "body": body}
                )
                if self.path.startswith("/llm503/"):
                    self._send(503, b'{"error": "overloaded"}')
                elif self.path.startswith("/llm-ok/"):
                    self._send(
                        200,
                        json.dumps(
                            {
                                "choices": [
                                    {
                                        "message": {"content": "The service was great."},
                                        "finish_reason": "stop",
                                    }
                                ]
                            }
                        ).encode(),
                    )
                elif self.path.startswith("/echo500"):
                    self._send(500, ("x" * 130 + LEAK + "\x1b[31m\r\n").encode())
                elif self.path.startswith("/drip"):
                    # Headers at once, then one byte every 0.5 s: each read is quick, the whole body is not.
                    self.send_response(200)
                    self.send_header("content-type", "application/json")
                    self.send_header("content-length", "24")
                    self.end_headers()
                    for _ in range(24):
                        time.sleep(0.5)
                        try:
                            self.wfile.write(b" ")
                            self.wfile.flush()
                        except OSError:
                            return
                else:
                    self._send(404, b"{}")

            def _send(self, status: int, body: bytes) -> None:
                self.send_response(status)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.httpd.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.httpd.shutdown()


@pytest.fixture(scope="module")
def upstream() -> Iterator[Upstream]:
    up = Upstream()
    yield up
    up.close()


@pytest.fixture(scope="module")
def models_dir(tmp_path_factory: pytest.TempPathFactory, tfidf_lr_dir: Path) -> Path:
    root = tmp_path_factory.mktemp("models")
    shutil.copytree(tfidf_lr_dir, root / "tfidf-lr")
    return root


@pytest.fixture(scope="module")
def svc(tmp_path_factory: pytest.TempPathFactory, upstream: Upstream, models_dir: Path) -> Iterator[Server]:
    """Auth off (a local tool), loopback allow-listed for the upstream's port only."""
    tmp = tmp_path_factory.mktemp("hostile")
    env = {
        **MINIMAL,
        **store_env("sqlite", tmp),
        "CACE_OUTBOUND_ALLOW": f"127.0.0.1/32:{upstream.port}",
        "CACE_MODELS_DIR": str(models_dir),
        "CACE_LLM_SECRET_ENVS": "CACE_TEST_LLM_SECRET@127.0.0.1",
        "CACE_TEST_LLM_SECRET": SECRET,
        "CACE_TEST_OTHER_SECRET": "postgresql://admin:pw@db/prod",
    }
    with service(env) as srv:
        yield srv


def explain(srv: Server, **fields: Any) -> httpx.Response:
    body = {
        "text": "The food was fine but the waiter ignored us.",
        "intervention": IV,
        "classifier": "tfidf-lr",
        "method": "zero",
        "top_k": 2,
        **fields,
    }
    return httpx.post(srv.base_url + "/v1/explanations", json=body, timeout=60)


def llm_spec(upstream: Upstream, path: str, **extra: Any) -> dict[str, Any]:
    return {"kind": "openai", "base_url": f"{upstream.url}/{path}/v1", "model": "m", **extra}


def problem(r: httpx.Response, status: int, field: str | None = None) -> dict[str, Any]:
    assert r.status_code == status, r.text
    assert r.headers["content-type"].startswith("application/problem+json"), r.headers
    body = r.json()
    if field is not None:
        assert (
            any(e["field"].startswith(field) for e in body.get("errors") or []) or field in body["detail"]
        ), body
    return body


# ---- High 1: environment exfiltration ------------------------------------------------------
def test_inline_llm_spec_cannot_send_a_server_secret(svc: Server, upstream: Upstream) -> None:
    for env in ("CACE_TEST_LLM_SECRET", "CACE_TEST_OTHER_SECRET"):
        before = len(upstream.seen)
        r = explain(svc, method="generate", llm=llm_spec(upstream, "llm-ok", api_key_env=env))
        problem(r, 422, "body.llm")
        assert "secret" in r.json()["detail"]
        assert all(
            SECRET not in str(s["auth"]) and "prod" not in str(s["auth"]) for s in upstream.seen[before:]
        )


def test_registered_llm_secrets_come_from_the_allow_list_and_go_to_their_host(
    svc: Server, upstream: Upstream
) -> None:
    c = httpx.Client(base_url=svc.base_url, timeout=30)
    r = c.post(
        "/v1/llms",
        json={"name": "leaky", "spec": llm_spec(upstream, "llm-ok", api_key_env="CACE_TEST_OTHER_SECRET")},
    )
    problem(r, 422, "body.spec.api_key_env")
    # Allow-listed, but bound to 127.0.0.1: a registration for another host may not use it.
    r = c.post(
        "/v1/llms",
        json={
            "name": "elsewhere",
            "spec": {
                "kind": "openai",
                "base_url": "https://example.com/v1",
                "model": "m",
                "api_key_env": "CACE_TEST_LLM_SECRET",
            },
        },
    )
    problem(r, 422, "body.spec.api_key_env")
    r = c.post(
        "/v1/llms",
        json={"name": "ok-llm", "spec": llm_spec(upstream, "llm-ok", api_key_env="CACE_TEST_LLM_SECRET")},
    )
    assert r.status_code == 201, r.text
    assert SECRET not in r.text
    before = len(upstream.seen)
    r = explain(svc, method="generate", llm="ok-llm", top_k=1)
    assert r.status_code == 200, r.text
    assert upstream.seen[before:] and all(s["auth"] == f"Bearer {SECRET}" for s in upstream.seen[before:])


# ---- High 2: bounded retries, no retry on denial, deadlines, slots -------------------------
@pytest.mark.parametrize("retries", [-1, 6, 1000, True])
def test_llm_max_retries_is_bounded(svc: Server, upstream: Upstream, retries: Any) -> None:
    r = explain(svc, method="generate", llm=llm_spec(upstream, "llm-ok", max_retries=retries))
    problem(r, 422, "body.llm")
    r = httpx.post(
        svc.base_url + "/v1/llms",
        json={"name": "r", "spec": llm_spec(upstream, "llm-ok", max_retries=retries)},
    )
    problem(r, 422, "body.spec")


def test_denied_llm_url_is_403_at_once_not_retried(svc: Server) -> None:
    started = time.monotonic()
    r = explain(
        svc,
        method="generate",
        llm={"kind": "openai", "base_url": "http://10.1.2.3/v1", "model": "m", "max_retries": 5},
    )
    body = problem(r, 403)
    assert body["type"].endswith("/outbound-denied") and time.monotonic() - started < 5


def test_llm_upstream_failure_is_502_without_traceback_and_keeps_the_connection(
    svc: Server, upstream: Upstream
) -> None:
    with httpx.Client(base_url=svc.base_url, timeout=60) as c:
        body = {
            "text": "Rude waiter, great soup.",
            "intervention": IV,
            "method": "generate",
            "top_k": 1,
            "llm": llm_spec(upstream, "llm503", max_retries=0),
        }
        r = c.post("/v1/explanations", json=body)
        p = problem(r, 502)
        assert p["type"].endswith("/llm-unavailable") and "Traceback" not in r.text
        # The same keep-alive connection serves the next request (a catch-all 500 path closed it).
        assert c.get("/v1/jobs").status_code == 200
        metrics = c.get("/metrics").text
    assert 'route="/v1/explanations",status="502"' in metrics
    assert "Traceback" not in svc.log_text()


def test_timed_out_request_frees_its_slot_and_its_dripping_read_ends_at_the_deadline(
    tmp_path: Path, upstream: Upstream
) -> None:
    env = {
        **MINIMAL,
        **store_env("sqlite", tmp_path),
        "CACE_OUTBOUND_ALLOW": f"127.0.0.1/32:{upstream.port}",
        "CACE_REQUEST_TIMEOUT_S": "3",
        "CACE_MAX_INFLIGHT": "1",
    }
    with service(env) as srv:
        spec = {
            "protocol": "hf",
            "url": f"{upstream.url}/drip",
            "labels": ["1", "2", "3", "4", "5"],
            "retries": 0,
        }
        deadline = time.monotonic() + 120
        while explain(srv).status_code != 200:  # warm the method registry inside the 3 s budget
            assert time.monotonic() < deadline
            time.sleep(1)
        r = explain(srv, classifier=spec)
        problem(r, 504)
        # The client has its 504 and its slot is free; the drip (12 s) is no longer read past the
        # request's deadline (issue #20: it used to run on and keep /readyz at 503).
        assert httpx.get(srv.base_url + "/v1/jobs", timeout=10).status_code == 200
        time.sleep(6)  # past the deadline plus the 5 s grace
        ready = httpx.get(srv.base_url + "/readyz", timeout=10)
        assert ready.status_code == 200, ready.json()
        assert ready.json()["components"]["requests"]["detail"] == "0 in flight"


# ---- High 3/4: in-process models are operator-only, from the models directory -------------
@pytest.mark.parametrize(
    "spec",
    [
        {"kind": "transformers", "model": "gpt2"},
        {"kind": "llamacpp", "model": "m", "model_path": "/etc/passwd"},
    ],
)
def test_inline_in_process_llms_are_refused(svc: Server, spec: dict[str, Any]) -> None:
    problem(explain(svc, method="generate", llm=spec), 422, "body.llm")


@pytest.mark.parametrize(
    "spec, field",
    [
        ({"protocol": "sklearn", "path": "/etc/passwd"}, "body.spec.path"),
        ({"protocol": "sklearn", "path": "../../../../etc/passwd"}, "body.spec.path"),
        ({"protocol": "transformers", "path": "bert-base-uncased"}, "body.spec.path"),
        ({"protocol": "sklearn", "path": "tfidf-lr/meta.json"}, "body.spec.path"),  # inside, but not a model
    ],
)
def test_in_process_classifiers_only_from_the_models_dir(
    svc: Server, spec: dict[str, Any], field: str
) -> None:
    problem(
        httpx.post(svc.base_url + "/v1/classifiers", json={"name": "evil", "spec": spec}, timeout=60),
        422,
        field,
    )


def test_registered_in_process_models_load_from_the_models_dir(svc: Server) -> None:
    r = httpx.post(
        svc.base_url + "/v1/classifiers",
        json={"name": "local-lr", "spec": {"protocol": "sklearn", "path": "tfidf-lr"}},
        timeout=60,
    )
    assert r.status_code == 201, r.text
    assert explain(svc, classifier="local-lr").status_code == 200
    problem(
        httpx.post(
            svc.base_url + "/v1/llms", json={"name": "x", "spec": {"kind": "transformers", "model": "/etc"}}
        ),
        422,
        "body.spec",
    )


def test_keys_are_never_minted_anonymously(svc: Server) -> None:
    r = httpx.post(svc.base_url + "/v1/keys", json={"name": "me", "scopes": ["admin"]})
    assert problem(r, 403) and "create-key" in r.json()["detail"]


def test_open_bind_without_keys_refuses_to_start(tmp_path: Path) -> None:
    env = {**os.environ, **MINIMAL, **store_env("sqlite", tmp_path), "CACE_DATA_DIR": str(tmp_path)}
    env.pop("CACE_ALLOW_OPEN", None)
    out = subprocess.run(
        [python(), "-m", "app.server", "--host", "0.0.0.0", "--port", str(free_port())],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 2 and "CACE_ALLOW_OPEN" in out.stderr
    port = free_port()
    with running(
        [python(), "-m", "app.server", "--host", "0.0.0.0", "--port", str(port)],
        port=port,
        health_path="/healthz",
        env={**env, "CACE_ADMIN_KEY": "cace_bootstrap-key-0123456789"},
        timeout=120,
    ) as srv:
        assert httpx.get(srv.base_url + "/v1/jobs").status_code == 401
        assert (
            httpx.get(
                srv.base_url + "/v1/jobs", headers={"Authorization": "Bearer cace_bootstrap-key-0123456789"}
            ).status_code
            == 200
        )


def test_key_rate_zero_is_invalid(tmp_path: Path) -> None:
    env = {**os.environ, **store_env("sqlite", tmp_path), "CACE_DATA_DIR": str(tmp_path)}
    out = subprocess.run(
        [python(), "-m", "app.security", "create-key", "--name", "z", "--rate", "0"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode != 0 and "rate_per_s" in out.stderr


# ---- Medium 7, 9: metric labels, allow-list ports, no reflected bodies ---------------------
def test_outbound_metrics_are_labelled_by_name_not_by_caller_host(svc: Server) -> None:
    for i in range(5):
        spec = {"protocol": "hf", "url": f"http://10.9.8.{i}:81/predict", "labels": ["1", "2", "3", "4", "5"]}
        problem(explain(svc, classifier=spec), 403)
    metrics = httpx.get(svc.base_url + "/metrics").text
    assert "10.9.8." not in metrics
    assert 'target="inline"' in metrics


def test_allow_list_entry_with_a_port_opens_only_that_port(svc: Server, upstream: Upstream) -> None:
    spec = {"protocol": "hf", "url": f"{svc.base_url}/v1/keys", "labels": ["a", "b"], "retries": 0}
    body = problem(explain(svc, classifier=spec), 403)
    assert "/v1/keys" not in json.dumps(body.get("errors")) and "scopes" not in body["detail"]
    spec["url"] = f"{upstream.url}/echo500"
    assert explain(svc, classifier=spec).status_code == 502  # the listed port is reachable


def test_502_details_carry_only_a_short_sanitised_excerpt(svc: Server, upstream: Upstream) -> None:
    spec = {"protocol": "hf", "url": f"{upstream.url}/echo500", "labels": ["a", "b"], "retries": 0}
    r = explain(svc, classifier=spec)
    body = problem(r, 502)
    assert LEAK not in r.text and "\x1b" not in body["detail"]


# ---- Every 500 found ------------------------------------------------------------------------
SURROGATE = '"\\ud800"'


def raw_post(srv: Server, path: str, raw: str) -> httpx.Response:
    """Send JSON text as is, with SURR standing for a lone-surrogate escape."""
    return httpx.post(
        srv.base_url + path,
        content=raw.replace("SURR", SURROGATE).encode(),
        headers={"content-type": "application/json"},
        timeout=60,
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
def test_bad_text_and_types_are_422_naming_the_field(svc: Server, path: str, raw: str, field: str) -> None:
    problem(raw_post(svc, path, raw), 422, field)


def test_lone_surrogates_anywhere_in_a_body_are_422_not_500(svc: Server, upstream: Upstream) -> None:
    # Found by the schema fuzzer: a surrogate sent to an HTTP classifier failed while encoding
    # the outbound request. Field types guard texts; every other string in a body is guarded too.
    spec = {"protocol": "kserve-v1", "url": upstream.url, "model": "m", "labels": ["neg", "pos"]}
    inline = json.dumps({**spec, "model": "SURR"})
    for path, raw, field in [
        ("/v1/models/tfidf-lr:predict", '{"instances": ["ok", SURR]}', "body.instances.1"),
        (
            "/v1/explanations",
            '{"text": "ok", "method": "zero", "intervention": {"concept": "food", "target": "Negative"}, '
            f'"classifier": {inline}}}',
            "body.classifier.model",
        ),
        (
            "/v1/models/tfidf-lr:explain",
            '{"instances": ["ok"], "parameters": {"method": "zero", "SURR": 1}}',
            "body.parameters",
        ),
    ]:
        problem(raw_post(svc, path, raw.replace('"SURR"', "SURR")), 422, field)


@pytest.mark.parametrize(
    "line", [SURROGATE, '{"text": "ok", "id": SURR}'.replace("SURR", SURROGATE), '"   "']
)
def test_bad_upload_lines_are_422(svc: Server, line: str) -> None:
    params = json.dumps({"intervention": {"concept": "food", "target": "Negative"}, "method": "zero"})
    r = httpx.post(
        svc.base_url + "/v1/effects/upload",
        files={"file": ("t.jsonl", f'"fine text"\n{line}\n')},
        data={"params": params},
        timeout=60,
    )
    problem(r, 422, "file")


BAD_BASE_URLS = [
    "http://0177.0.0.1:8301/v1",
    "http://\uff11\uff12\uff17.0.0.1/v1",
    "http://\u2460\u2461.com/v1",
    "http://a.com\r\nX-Evil: 1/v1",
    "file:///etc/passwd",
    "gopher://x/",
    "http:///v1",
    "",
]


@pytest.mark.parametrize("base_url", BAD_BASE_URLS)
def test_unusable_llm_base_urls_are_refused_inline_and_at_registration(svc: Server, base_url: str) -> None:
    spec = {"kind": "openai", "base_url": base_url, "model": "m"}
    r = explain(svc, method="generate", llm=spec)
    assert r.status_code in (403, 422), r.text
    r = httpx.post(svc.base_url + "/v1/llms", json={"name": "bad-url", "spec": spec}, timeout=30)
    assert r.status_code in (403, 422), r.text


def test_inline_llm_api_key_must_be_header_safe(svc: Server, upstream: Upstream) -> None:
    problem(
        explain(svc, method="generate", llm=llm_spec(upstream, "llm-ok", api_key="\u2603")), 422, "body.llm"
    )


# ---- Jobs: ownership, queue limit, rows, offsets (SQLite and PostgreSQL) -------------------
ADMIN = "cace_hostile-admin-key-0123456789abcdef"


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def jobs_svc(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """Auth on (bootstrap admin key), no workers: jobs stay queued, so the queue limit is exact to count."""
    tmp = tmp_path_factory.mktemp(f"jobs-{request.param}")
    store = store_env(request.param, tmp)
    env = {
        **MINIMAL,
        **store,
        "CACE_ADMIN_KEY": ADMIN,
        "CACE_JOB_WORKERS": "0",
        "CACE_JOB_QUEUE_LIMIT": "5",
        "CACE_RATE_LIMIT_PER_S": "0",
    }
    try:
        with service(env) as srv:
            yield srv
    finally:
        if request.param == "postgresql":
            drop_pg_prefix(store["CACE_TABLE_PREFIX"])


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def job_body(text: str = "The soup was cold.") -> dict[str, Any]:
    return {
        "texts": [text],
        "intervention": {"concept": "food", "target": "Negative", "source": "Positive"},
        "method": "zero",
        "mode": "job",
    }


def test_jobs_belong_to_their_key(jobs_svc: Server) -> None:
    with httpx.Client(base_url=jobs_svc.base_url, timeout=60) as c:
        keys = [
            c.post("/v1/keys", json={"name": n, "scopes": ["explain"]}, headers=bearer(ADMIN)).json()["key"]
            for n in ("alice", "bob")
        ]
        alice, bob = bearer(keys[0]), bearer(keys[1])
        r = c.post("/v1/effects", json=job_body(), headers=alice)
        assert r.status_code == 202, r.text
        job = r.json()["id"]
        for path in (f"/v1/jobs/{job}", f"/v1/jobs/{job}/rows", f"/v1/jobs/{job}/rows.jsonl"):
            problem(c.get(path, headers=bob), 404)
            assert c.get(path, headers=alice).status_code == 200
            assert c.get(path, headers=bearer(ADMIN)).status_code == 200
        problem(c.post(f"/v1/jobs/{job}/cancel", headers=bob), 404)
        assert job not in c.get("/v1/jobs", headers=bob).text
        assert (
            job in c.get("/v1/jobs", headers=alice).text
            and job in c.get("/v1/jobs", headers=bearer(ADMIN)).text
        )
        assert c.post(f"/v1/jobs/{job}/cancel", headers=alice).status_code == 200


def test_queue_limit_is_exact_under_concurrent_submits(jobs_svc: Server) -> None:
    with httpx.Client(base_url=jobs_svc.base_url, timeout=60, headers=bearer(ADMIN)) as c:
        for j in c.get("/v1/jobs", params={"status": "queued"}).json()["jobs"]:
            c.post(f"/v1/jobs/{j['id']}/cancel")

        def submit(i: int) -> int:
            return c.post("/v1/effects", json=job_body(f"Text number {i} about soup.")).status_code

        with ThreadPoolExecutor(12) as pool:
            codes = list(pool.map(submit, range(12)))
        assert codes.count(202) == 5 and codes.count(429) == 7, codes
        for j in c.get("/v1/jobs", params={"status": "queued"}).json()["jobs"]:
            c.post(f"/v1/jobs/{j['id']}/cancel")


def test_huge_offsets_and_surrogate_ids_never_500(jobs_svc: Server) -> None:
    with httpx.Client(base_url=jobs_svc.base_url, timeout=60, headers=bearer(ADMIN)) as c:
        problem(c.get("/v1/jobs", params={"offset": "99999999999999999999"}), 422, "query.offset")
        r = c.post(
            "/v1/effects",
            content=(
                '{"texts": [{"text": "ok", "id": SURR}], "intervention": {"concept": '
                '"food", "target": "Negative"}, "mode": "job"}'
            )
            .replace("SURR", SURROGATE)
            .encode(),
            headers={"content-type": "application/json"},
        )
        problem(r, 422, "body.texts")
        r = c.post("/v1/effects", json=job_body())
        assert r.status_code == 202, r.text
        job = r.json()["id"]
        problem(c.get(f"/v1/jobs/{job}/rows", params={"offset": "99999999999999999999"}), 422, "query.offset")
        assert "SELECT" not in c.get(f"/v1/jobs/{job}/rows", params={"offset": str(2**31 - 1)}).text
        c.post(f"/v1/jobs/{job}/cancel")
        r = c.post(
            "/v1/classifiers",
            json={
                "name": "nul",
                "description": "a\u0000b",
                "spec": {"protocol": "hf", "url": "http://example.com", "labels": ["a"]},
            },
        )
        problem(r, 422, "body.description")


# ---- Registry cold start, X-Forwarded-For --------------------------------------------------
def test_cold_start_concurrent_first_requests_all_see_every_method(tmp_path: Path) -> None:
    env = {
        **MINIMAL,
        **store_env("sqlite", tmp_path),
        "CACE_MAX_INFLIGHT": "64",
        "CACE_RATE_LIMIT_ANONYMOUS_PER_S": "0.01",
        "CACE_RATE_LIMIT_BURST": "24",
    }
    with service(env) as srv:
        with ThreadPoolExecutor(20) as pool:
            codes = list(pool.map(lambda _: explain(srv).status_code, range(20)))
        assert codes == [200] * 20, codes
        # 24-request burst per client address, 4 left: a client cannot mint new identities with X-Forwarded-For.
        codes = [
            httpx.get(srv.base_url + "/v1/jobs", headers={"X-Forwarded-For": f"203.0.113.{i}"}).status_code
            for i in range(8)
        ]
        assert 429 in codes, codes
