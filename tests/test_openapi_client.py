"""A Python client generated from the live OpenAPI spec drives every kind of operation.

An explanation, an effects job, a domain built from an uploaded file, an effects upload, and
4xx problems parsed into the Problem model. This is what platform teams do with the service, so the spec must generate cleanly
(stable operationIds become the client's function names) and the client's models must
parse real responses, 202 job answers included.
"""

from __future__ import annotations

import importlib
import io
import json
import subprocess
import sys
import time
import uuid
from pathlib import Path

import httpx
import pytest

from benchmarks.harness.service import service, store_env
from explainers.data.movies import movie_corpus

GENERATOR = Path(sys.executable).parent / "openapi-python-client"


@pytest.mark.slow
def test_generated_client_explains_and_runs_an_effects_job(tmp_path: Path) -> None:
    if not GENERATOR.exists():
        pytest.fail("openapi-python-client is not installed (it is in the test extra)")
    with service(store_env("sqlite", tmp_path)) as srv:
        out = tmp_path / "gen" / "cace_generated_client"
        env = {"PATH": f"{GENERATOR.parent}:/usr/bin:/bin"}
        proc = subprocess.run(
            [
                str(GENERATOR),
                "generate",
                "--url",
                srv.base_url + "/openapi.json",
                "--output-path",
                str(out),
                "--meta",
                "none",
            ],
            capture_output=True,
            text=True,
            env=env,
            timeout=300,
        )
        assert proc.returncode == 0, proc.stdout + proc.stderr
        assert "Warning" not in proc.stdout + proc.stderr, proc.stdout + proc.stderr
        sys.path.insert(0, str(out.parent))
        try:
            pkg = importlib.import_module("cace_generated_client")
            explanations = importlib.import_module(
                "cace_generated_client.api.explanations.create_explanation"
            )
            effects = importlib.import_module("cace_generated_client.api.effects.estimate_effects")
            get_job = importlib.import_module("cace_generated_client.api.jobs.get_job")
            job_rows = importlib.import_module("cace_generated_client.api.jobs.list_job_rows")
            models = importlib.import_module("cace_generated_client.models")

            client = pkg.Client(base_url=srv.base_url, timeout=httpx.Timeout(120.0))
            req = models.ExplanationRequest.from_dict(
                {
                    "text": "Great food, but the waiter forgot our order twice.",
                    "intervention": {"concept": "service", "target": "Positive", "source": "Negative"},
                    "method": "match",
                    "top_k": 3,
                }
            )
            exp = explanations.sync(client=client, body=req)
            assert isinstance(exp, models.ExplanationResponse), exp
            assert exp.labels == ["1", "2", "3", "4", "5"] and exp.space_id
            assert abs(sum(exp.icace.additional_properties.values())) < 1e-6
            assert len(exp.counterfactuals) == 3 and exp.counterfactuals[0].text

            texts = [
                "Great food, rude staff.",
                "Quiet room, lovely pasta, slow service.",
                "The steak was overcooked and the waiter shrugged.",
                "Best sushi in town, friendly chef.",
            ]
            ereq = models.EffectsRequest.from_dict(
                {
                    "texts": texts,
                    "intervention": {"concept": "food", "target": "Negative"},
                    "method": "pt_match",
                    "top_k": 3,
                    "mode": "job",
                }
            )
            job = effects.sync(client=client, body=ereq)
            assert isinstance(job, models.JobOut), job
            deadline = time.monotonic() + 300
            while str(job.status.value) not in ("succeeded", "failed", "cancelled"):
                assert time.monotonic() < deadline
                time.sleep(0.2)
                job = get_job.sync(job_id=job.id, client=client)
            assert job.status.value == "succeeded", job
            result = job.result.additional_properties
            assert set(result["cace"]) == {"1", "2", "3", "4", "5"}
            page = job_rows.sync(job_id=job.id, client=client, limit=2)
            assert isinstance(page, models.RowsPage) and page.total == 4 and page.next_offset == 2
            assert [r.index for r in page.rows] == [0, 1]

            # Multipart operations take a real file, and problems parse into the Problem model.
            create_domain = importlib.import_module("cace_generated_client.api.domains.create_domain")
            upload_effects = importlib.import_module("cace_generated_client.api.effects.upload_effects")
            gen_types = importlib.import_module("cace_generated_client.types")

            def jsonl(rows: list) -> object:
                return gen_types.File(
                    payload=io.BytesIO("\n".join(json.dumps(r) for r in rows).encode()),
                    file_name="data.jsonl",
                    mime_type="application/x-ndjson",
                )

            corpus = [{k: v for k, v in r.items() if k != "rating"} for r in movie_corpus(8, seed=5)]
            domain_id = f"client-{uuid.uuid4().hex[:8]}"
            job = create_domain.sync(
                client=client,
                body=models.BodyCreateDomain(file=jsonl(corpus), params=json.dumps({"id": domain_id})),
            )
            assert isinstance(job, models.JobOut), job
            while str(job.status.value) not in ("succeeded", "failed", "cancelled"):
                assert time.monotonic() < deadline + 300
                time.sleep(0.5)
                job = get_job.sync(job_id=job.id, client=client)
            assert job.status.value == "succeeded", job
            bad = create_domain.sync(
                client=client,
                body=models.BodyCreateDomain(file=jsonl(corpus), params=json.dumps({"id": "Bad Id"})),
            )
            assert isinstance(bad, models.Problem) and bad.status == 422, bad
            assert bad.errors[0].field == "body.params.id"
            params = {
                "domain": domain_id,
                "intervention": {"concept": "plot", "target": "bad"},
                "method": "pt_match",
                "top_k": 2,
                "mode": "inline",
            }
            texts = [r["text"] for r in movie_corpus(4, edits=False, seed=6)]
            done = upload_effects.sync(
                client=client, body=models.BodyUploadEffects(file=jsonl(texts), params=json.dumps(params))
            )
            assert isinstance(done, models.EffectsInlineResponse), done
            assert done.result.labels == ["1", "2", "3", "4", "5"] and len(done.rows) == 4
            bad = upload_effects.sync(
                client=client,
                body=models.BodyUploadEffects(
                    file=jsonl(texts),
                    params=json.dumps({**params, "intervention": {"concept": "food", "target": "x"}}),
                ),
            )
            assert isinstance(bad, models.Problem) and bad.errors[0].field == "body.intervention.concept", bad
        finally:
            sys.path.remove(str(out.parent))
            for name in [m for m in sys.modules if m.startswith("cace_generated_client")]:
                del sys.modules[name]
