"""A Python client generated from the live OpenAPI spec drives EVERY operation of the service.

Platform teams generate clients (openapi-python-client here) and expect each operation's
answers, errors included, to parse into the generated models: the spec must declare every
response a route can give (problem+json for 401, 403, 404, 409, 413, 422, 429, 503, 504),
`rows.jsonl` only as JSON Lines, and job results as typed models. The test collects the
operationIds it called and compares them with the spec's, so a route added without a call
here fails it. The service runs with auth on (an admin key), on a small default domain (the
movie corpus, built in place on its first start) and the reference tfidf-lr classifier.
"""

from __future__ import annotations

import importlib
import io
import json
import pkgutil
import subprocess
import sys
import time
import uuid
from pathlib import Path
from types import ModuleType
from typing import Any

import httpx
import pytest

from benchmarks.harness.service import service, store_env
from explainers.data.movies import movie_corpus

GENERATOR = Path(sys.executable).parent / "openapi-python-client"
PORT = 9790  # from this engineer's range (9700-9799)
ADMIN_KEY = "admin-" + uuid.uuid4().hex
# JSON Lines are bytes to a generated client (the generator has no JSON Lines type of its own).
GENERATOR_CONFIG = {"content_type_overrides": {"application/x-ndjson": "application/octet-stream"}}


class Operations:
    """The generated client's operation modules by operationId, recording which were called."""

    def __init__(self, pkg: ModuleType) -> None:
        self.modules: dict[str, str] = {}
        api = importlib.import_module(pkg.__name__ + ".api")
        for info in pkgutil.walk_packages(api.__path__, api.__name__ + "."):
            if not info.ispkg:
                self.modules[info.name.rsplit(".", 1)[1]] = info.name
        self.called: set[str] = set()

    def __call__(self, operation_id: str, **kwargs: Any) -> Any:
        """The parsed-and-detailed answer (`sync_detailed`) of one operation."""
        self.called.add(operation_id)
        return importlib.import_module(self.modules[operation_id]).sync_detailed(**kwargs)


def wait_job(ops: Operations, client: Any, job: Any, timeout: float = 600) -> Any:
    deadline = time.monotonic() + timeout
    while str(job.status.value) not in ("succeeded", "failed", "cancelled"):
        assert time.monotonic() < deadline, job
        time.sleep(0.3)
        job = ops("get_job", job_id=job.id, client=client).parsed
    return job


def problem(resp: Any, models: ModuleType, status: int) -> Any:
    assert resp.status_code == status, (resp.status_code, resp.content[:300])
    assert isinstance(resp.parsed, models.Problem), resp.parsed
    assert resp.parsed.status == status
    return resp.parsed


@pytest.mark.slow
def test_generated_client_runs_every_operation(tmp_path: Path) -> None:
    if not GENERATOR.exists():
        pytest.fail("openapi-python-client is not installed (it is in the test extra)")
    folder = tmp_path / "movies"
    folder.mkdir()
    rows = [{k: v for k, v in r.items() if k != "rating"} for r in movie_corpus(40, seed=4)]
    (folder / "corpus.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    env = {
        **store_env("sqlite", tmp_path),
        "CACE_DEFAULT_DOMAIN": str(folder),
        "CACE_DEFAULT_CLASSIFIER": "tfidf-lr",
        "CACE_ADMIN_KEY": ADMIN_KEY,
    }
    with service(env, port=PORT) as srv:
        out = tmp_path / "gen" / "cace_generated_client"
        config = tmp_path / "generator.json"
        config.write_text(json.dumps(GENERATOR_CONFIG))
        proc = subprocess.run(
            [str(GENERATOR), "generate", "--url", srv.base_url + "/openapi.json", "--output-path", str(out)]
            + ["--meta", "none", "--config", str(config)],
            capture_output=True,
            text=True,
            env={"PATH": f"{GENERATOR.parent}:/usr/bin:/bin"},
            timeout=300,
        )
        assert proc.returncode == 0, proc.stdout + proc.stderr
        assert "Warning" not in proc.stdout + proc.stderr, proc.stdout + proc.stderr
        spec_ops = {
            op["operationId"]
            for item in httpx.get(srv.base_url + "/openapi.json").json()["paths"].values()
            for op in item.values()
        }
        sys.path.insert(0, str(out.parent))
        try:
            run_every_operation(importlib.import_module("cace_generated_client"), srv.base_url, spec_ops)
        finally:
            sys.path.remove(str(out.parent))
            for name in [m for m in sys.modules if m.startswith("cace_generated_client")]:
                del sys.modules[name]


def run_every_operation(pkg: ModuleType, base_url: str, spec_ops: set[str]) -> None:
    models = importlib.import_module("cace_generated_client.models")
    gen_types = importlib.import_module("cace_generated_client.types")
    ops = Operations(pkg)
    timeout = httpx.Timeout(300.0)
    admin = pkg.AuthenticatedClient(base_url=base_url, token=ADMIN_KEY, timeout=timeout)
    anonymous = pkg.Client(base_url=base_url, timeout=timeout)

    def jsonl(rows: list[Any]) -> Any:
        return gen_types.File(
            payload=io.BytesIO("\n".join(json.dumps(r) for r in rows).encode()),
            file_name="data.jsonl",
            mime_type="application/x-ndjson",
        )

    # Probes are public; everything else needs a key: an auth failure parses into a Problem.
    health = ops("healthz", client=anonymous).parsed
    assert isinstance(health, models.Health) and health.ready
    ready = ops("readyz", client=anonymous).parsed
    assert isinstance(ready, models.Health) and ready.status == "ready"
    domain_component = ready.components.additional_properties["domain"]
    assert domain_component.status == "ready" and domain_component.progress.percent == 100.0
    assert [s.name for s in domain_component.progress.stages][-1] == "explainers"
    explanation_body = {
        "text": "I went with two friends. The acting is wooden and flat. The story is gripping from start to finish.",
        "intervention": {"concept": "plot", "target": "bad"},
        "method": "match",
        "top_k": 3,
    }
    req = models.ExplanationRequest.from_dict(explanation_body)
    assert (
        "missing API key"
        in problem(ops("create_explanation", client=anonymous, body=req), models, 401).detail
    )

    # Keys: an explain-scoped key may explain, not register (403), and is revoked at the end.
    created = ops("create_key", client=admin, body=models.KeyCreate.from_dict({"name": "client-test"})).parsed
    assert isinstance(created, models.KeyCreated) and created.scopes == ["explain"]
    assert any(k.id == created.id for k in ops("list_keys", client=admin).parsed)
    user = pkg.AuthenticatedClient(base_url=base_url, token=created.key, timeout=timeout)
    methods = ops("list_methods", client=user).parsed
    assert {"match", "splice", "auto"} <= set(methods.methods.additional_properties)

    exp = ops("create_explanation", client=user, body=req).parsed
    assert isinstance(exp, models.ExplanationResponse), exp
    assert exp.labels == ["1", "2", "3", "4", "5"] and len(exp.counterfactuals) == 3
    assert exp.timings.total_ms >= exp.timings.explain_ms and exp.timings.resolve_ms >= 0
    bad = models.ExplanationRequest.from_dict(
        {**explanation_body, "intervention": {"concept": "food", "target": "x"}}
    )
    assert problem(ops("create_explanation", client=user, body=bad), models, 422).errors[0].field == (
        "body.intervention.concept"
    )

    # Effects as a job: status, list, rows a page at a time, the JSON Lines download, cancel.
    texts = [r["text"] for r in movie_corpus(4, edits=False, seed=6)]
    ereq = models.EffectsRequest.from_dict(
        {
            "texts": texts,
            "intervention": {"concept": "plot", "target": "bad"},
            "method": "pt_match",
            "top_k": 2,
            "mode": "job",
        }
    )
    job = ops("estimate_effects", client=user, body=ereq).parsed
    assert isinstance(job, models.JobOut), job
    job = wait_job(ops, user, job)
    assert job.status.value == "succeeded" and job.progress == 1.0, job
    assert isinstance(job.result, models.EffectsJobResult) and job.result.kind == "effects"
    assert set(job.result.cace.additional_properties) == {"1", "2", "3", "4", "5"}
    listed = ops("list_jobs", client=user).parsed
    mine = next(j for j in listed.jobs if j.id == job.id)
    assert (
        mine.progress == job.progress
        and mine.counts.additional_properties == job.counts.additional_properties
    )
    page = ops("list_job_rows", job_id=job.id, client=user, limit=2).parsed
    assert isinstance(page, models.RowsPage) and page.total == 4 and [r.index for r in page.rows] == [0, 1]
    download = ops("download_job_rows", job_id=job.id, client=user)
    assert download.status_code == 200 and download.headers["content-type"].startswith("application/x-ndjson")
    lines = [json.loads(line) for line in download.content.decode().splitlines()]
    assert [r["index"] for r in lines] == [0, 1, 2, 3] and all(r["icace"] for r in lines)
    problem(ops("download_job_rows", job_id="no-such-job", client=user), models, 404)
    assert problem(ops("cancel_job", job_id=job.id, client=user), models, 409).title == "Job already finished"

    # Inline effects from an uploaded file, and its validation problem.
    params = {
        "intervention": {"concept": "plot", "target": "bad"},
        "method": "pt_match",
        "top_k": 2,
        "mode": "inline",
    }
    done = ops(
        "upload_effects",
        client=user,
        body=models.BodyUploadEffects(file=jsonl(texts), params=json.dumps(params)),
    ).parsed
    assert isinstance(done, models.EffectsInlineResponse) and len(done.rows) == 4, done
    bad_params = json.dumps({**params, "intervention": {"concept": "food", "target": "x"}})
    resp = ops(
        "upload_effects", client=user, body=models.BodyUploadEffects(file=jsonl(texts), params=bad_params)
    )
    assert problem(resp, models, 422).errors[0].field == "body.intervention.concept"

    # Registries: the explain key may not register (403); the admin registers, reads, deletes.
    clf_spec = {"protocol": "hf", "url": "http://127.0.0.1:9791/predict", "labels": ["neg", "pos"]}
    registration = models.Registration.from_dict({"name": "remote-rating", "spec": clf_spec})
    problem(ops("register_classifier", client=user, body=registration), models, 403)
    assert ops("register_classifier", client=admin, body=registration).status_code == 201
    assert any(c.name == "remote-rating" for c in ops("list_classifiers", client=user).parsed.items)
    assert (
        ops("get_classifier", name="remote-rating", client=user).parsed.spec.additional_properties["url"]
        == (clf_spec["url"])
    )
    assert ops("delete_classifier", name="remote-rating", client=admin).status_code == 204
    problem(ops("get_classifier", name="remote-rating", client=user), models, 404)
    llm = models.Registration.from_dict(
        {
            "name": "local-llm",
            "spec": {"kind": "openai", "base_url": "http://127.0.0.1:9792/v1", "model": "qwen"},
        }
    )
    assert ops("register_llm", client=admin, body=llm).status_code == 201
    assert any(x.name == "local-llm" for x in ops("list_llms", client=user).parsed.items)
    assert ops("get_llm", name="local-llm", client=user).parsed.name == "local-llm"
    assert ops("delete_llm", name="local-llm", client=admin).status_code == 204

    # KServe's V1 protocol over the built-in classifier.
    status = ops("kserve_model_status", name="tfidf-lr", client=user).parsed
    assert status.ready is True
    preds = ops(
        "kserve_predict", name="tfidf-lr", client=user, body=models.KServePredictRequest(instances=texts[:2])
    )
    assert len(preds.parsed.predictions) == 2
    kreq = models.KServeExplainRequest.from_dict(
        {
            "instances": [explanation_body["text"]],
            "parameters": {k: explanation_body[k] for k in ("intervention", "method", "top_k")},
        }
    )
    kexp = ops("kserve_explain", name="tfidf-lr", client=user, body=kreq).parsed
    assert kexp.model_name == "tfidf-lr" and len(kexp.explanations) == 1

    # Reports on the default domain (typed result), listed and downloaded; comparisons' contract.
    report_req = models.ReportRequest.from_dict({"sample": {"size": 12, "seed": 1}, "top_k": 2, "seed": 1})
    rep = ops("create_report", client=user, body=report_req)
    assert rep.status_code == 202, rep.content
    report = wait_job(ops, user, ops("get_report", report_id=rep.parsed.id, client=user).parsed)
    assert report.status.value == "succeeded", report
    assert isinstance(report.result, models.ReportJobResult) and report.result.kind == "report"
    assert report.result.classifier == "tfidf-lr" and report.result.cells
    assert any(r.id == report.id for r in ops("list_reports", client=user).parsed.jobs)
    downloaded = ops("download_report", report_id=report.id, client=user)
    assert downloaded.status_code == 200 and json.loads(downloaded.content)["kind"] == "report"
    bad_comparison = models.ComparisonRequest.from_dict({"classifiers": ["tfidf-lr", "no-such-model"]})
    problem(ops("create_comparison", client=user, body=bad_comparison), models, 422)
    assert ops("list_comparisons", client=user).status_code == 200
    problem(
        ops("get_comparison", comparison_id=report.id, client=user), models, 404
    )  # a report is no comparison
    problem(ops("download_comparison", comparison_id="no-such-job", client=user), models, 404)

    # Domains: build one from an upload (a typed build result), calibrate (cancelled), delete.
    domain_id = f"client-{uuid.uuid4().hex[:8]}"
    corpus = [{k: v for k, v in r.items() if k != "rating"} for r in movie_corpus(8, seed=5)]
    body = models.BodyCreateDomain(file=jsonl(corpus), params=json.dumps({"id": domain_id}))
    problem(ops("create_domain", client=user, body=body), models, 403)
    body = models.BodyCreateDomain(file=jsonl(corpus), params=json.dumps({"id": domain_id}))
    job = wait_job(ops, admin, ops("create_domain", client=admin, body=body).parsed)
    assert job.status.value == "succeeded", job
    assert isinstance(job.result, models.DomainBuildResult) and job.result.domain_id == domain_id
    assert [s.name for s in job.stages.stages] == ["embed", "taggers", "space", "save", "load"]
    bad = models.BodyCreateDomain(file=jsonl(corpus), params=json.dumps({"id": "Bad Id"}))
    assert (
        problem(ops("create_domain", client=admin, body=bad), models, 422).errors[0].field == "body.params.id"
    )
    assert any(d.id == domain_id for d in ops("list_domains", client=user).parsed.domains)
    assert ops("get_domain", domain_id=domain_id, client=user).parsed.id == domain_id
    cal = ops(
        "calibrate_domain",
        domain_id=domain_id,
        client=admin,
        body=models.CalibrationRequest.from_dict({"classifier": "tfidf-lr", "max_pairs": 50}),
    ).parsed
    assert isinstance(cal, models.JobOut) and cal.kind == "calibration" and cal.queued_by is None
    cancelled = ops("cancel_job", job_id=cal.id, client=admin)
    assert cancelled.status_code in (200, 409), cancelled.content  # 409 if it finished first
    wait_job(ops, admin, ops("get_job", job_id=cal.id, client=admin).parsed)
    calibrations = ops("list_calibrations", domain_id=domain_id, client=user)
    assert calibrations.status_code == 200
    assert ops("delete_domain", domain_id=domain_id, client=admin).status_code == 204
    problem(ops("get_domain", domain_id=domain_id, client=user), models, 404)

    assert ops("revoke_key", key_id=created.id, client=admin).status_code == 204
    assert "unknown or revoked" in problem(ops("list_methods", client=user), models, 401).detail
    assert ops.called == spec_ops, f"not exercised: {sorted(spec_ops - ops.called)}"
