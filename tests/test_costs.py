"""Bounded costs a caller can cause (issue 20): the calibration budget and backoff that replicas share
through the store, an effects job that must not call mostly-failed texts a success, and cancel.

Store tests run against real SQLite and real PostgreSQL, two `Store` objects standing for two
replicas; the service tests run a real server (uvicorn) and a real misbehaving classifier server.
"""

from __future__ import annotations

import json
import shutil
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from app.jobs.handlers import summarize
from app.schemas import EffectsParams
from app.store import Store
from explainers.artifacts import META
from tests.tiny_domain import TINY_ID, TINY_IV, tiny_domain, tiny_env, tiny_texts

PG_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/test"


@pytest.fixture(params=["sqlite", "postgresql"])
def replicas(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[Store, Store]]:
    """Two stores on one database: what two replicas of the service share."""
    if request.param == "sqlite":
        url, prefix = f"sqlite:///{tmp_path / 'jobs.sqlite'}", "t_"
    else:
        url, prefix = PG_URL, f"t{uuid.uuid4().hex[:10]}_"
    a, b = Store(url, prefix), Store(url, prefix)
    yield a, b
    b.close()
    a.drop_all()


def test_calibration_budget_is_shared_all_or_nothing_and_exact_under_races(
    replicas: tuple[Store, Store],
) -> None:
    a, b = replicas
    assert a.charge_calibration("clf", 60, budget=100, window_s=3600)[0]
    assert not b.charge_calibration("clf", 50, budget=100, window_s=3600)[0]  # 110 > 100: nothing taken
    assert b.calibration_budget_left("clf", 100, 3600)[0] == 40
    assert a.charge_calibration("other", 100, budget=100, window_s=3600)[0]  # per classifier
    # 40 threads on two replicas race for 40 texts, 3 at a time: exactly 13 win, never more.
    wins: list[bool] = []
    lock = threading.Lock()

    def take(s: Store) -> None:
        ok = s.charge_calibration("clf", 3, budget=100, window_s=3600)[0]
        with lock:
            wins.append(ok)

    threads = [threading.Thread(target=take, args=(s,)) for s in (a, b) * 20]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sum(wins) == 13
    assert a.calibration_budget_left("clf", 100, 3600)[0] == 1


def test_calibration_budget_window_rolls_over(replicas: tuple[Store, Store]) -> None:
    a, b = replicas
    assert a.charge_calibration("clf", 100, budget=100, window_s=0.5)[0]
    assert not b.charge_calibration("clf", 1, budget=100, window_s=0.5)[0]
    time.sleep(0.6)
    assert b.charge_calibration("clf", 100, budget=100, window_s=0.5)[0]


def test_one_replica_claims_an_auto_calibration_and_failures_back_off_for_all(
    replicas: tuple[Store, Store],
) -> None:
    a, b = replicas
    assert a.claim_calibration("d", "clf")
    assert not b.claim_calibration("d", "clf")  # held while its job is being created
    job = a.create_job("calibration", {"domain_id": "d", "classifier": "clf"}, [{}])
    a.set_calibration_job("d", "clf", job)
    assert not b.claim_calibration("d", "clf", hold_s=0)  # its job is queued
    retry_at = b.calibration_outcome("d", "clf", error="boom", backoff_s=30, backoff_max_s=100)
    a.finalize_job(job, error="boom")
    assert retry_at is not None and retry_at > time.time() + 25
    assert not a.claim_calibration("d", "clf", hold_s=0)  # backing off, on every replica
    assert not b.claim_calibration("d", "clf", hold_s=0)
    # Doubling, capped.
    second = a.calibration_outcome("d", "clf", error="boom", backoff_s=30, backoff_max_s=100)
    third = a.calibration_outcome("d", "clf", error="boom", backoff_s=30, backoff_max_s=100)
    assert second is not None and third is not None
    assert 55 < second - time.time() <= 60 and 95 < third - time.time() <= 100
    # A budget deferral is never shortened by a shorter backoff.
    later = time.time() + 5000
    b.calibration_defer("d", "clf", later)
    assert a.calibration_outcome("d", "clf", error="x", backoff_s=1, backoff_max_s=1) == later
    # Success clears the backoff.
    assert a.calibration_outcome("d", "clf", error=None) is None
    assert b.claim_calibration("d", "clf", hold_s=0)
    assert a.calibration_state_of("d", "clf")["failures"] == 0


def _rows(done: int, failed: int) -> list[dict[str, Any]]:
    rows = []
    for i in range(done):
        icace = [0.1 + 0.001 * i, -0.1 - 0.001 * i]
        result = {"source": "Positive", "status": "done", "labels": ["neg", "pos"], "icace": icace}
        rows.append({"index": i, "status": "done", "result": result})
    rows += [{"index": done + i, "status": "failed", "result": None} for i in range(failed)]
    return rows


PARAMS = EffectsParams.model_validate({"intervention": {"concept": "food", "target": "Negative"}})


def test_an_effects_result_over_mostly_failed_texts_is_refused() -> None:
    with pytest.raises(ValueError, match="192 of 200 texts failed"):
        summarize(PARAMS, _rows(8, 192), max_failed_fraction=0.1)
    ok = summarize(PARAMS, _rows(198, 2), max_failed_fraction=0.1)
    assert ok["summary"]["n_used"] == 198 and ok["summary"]["n_failed"] == 2
    assert ok["warnings"] and "2 of 200 texts failed" in ok["warnings"][0]
    clean = summarize(PARAMS, _rows(200, 0), max_failed_fraction=0.1)
    assert clean["summary"]["n_used"] == 200 and clean["warnings"] == []


def calls(srv_url: str, key: str) -> dict[str, Any]:
    return httpx.get(f"{srv_url}/calls/{key}", timeout=10).json()


# ---- against live servers ---------------------------------------------------------------------
LABELS = ["neg", "neu", "pos"]
BUDGET = 250  # the tiny domain's pool (160 texts) fits in it once, not twice


@pytest.fixture(scope="module")
def upstream() -> Iterator[Any]:
    from benchmarks.harness.model_servers.launch import misbehaving_server

    with misbehaving_server() as srv:
        yield srv


@pytest.fixture(scope="module")
def two_replicas(upstream: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Any, Any]]:
    """Two service replicas sharing one PostgreSQL store (a private table prefix) and one domain
    folder (the tiny movie domain), auto-calibration on."""
    from benchmarks.harness.service import PG_URL as SERVICE_PG_URL
    from benchmarks.harness.service import drop_pg_prefix, service

    prefix = f"t{uuid.uuid4().hex[:10]}_"
    env = {
        **tiny_env(tmp_path_factory.mktemp("costs")),
        "CACE_DATABASE_URL": SERVICE_PG_URL,
        "CACE_TABLE_PREFIX": prefix,
        "CACE_AUTO_CALIBRATE": "true",
        "CACE_CALIBRATION_BUDGET_TEXTS": str(BUDGET),
        "CACE_CALIBRATION_BACKOFF_S": "3600",
        "CACE_JOB_CLAIM_BATCH": "4",
        "OMP_NUM_THREADS": "1",
    }
    try:
        with service({**env, "CACE_INSTANCE_ID": "a"}) as a, service({**env, "CACE_INSTANCE_ID": "b"}) as b:
            yield a, b
    finally:
        drop_pg_prefix(prefix)


def register(c: httpx.Client, name: str, url: str, **options: Any) -> None:
    spec = {"protocol": "hf", "url": url, "labels": LABELS, **options}
    r = c.post("/v1/classifiers", json={"name": name, "spec": spec})
    assert r.status_code in (200, 201), r.text


def calibration_jobs(c: httpx.Client) -> list[dict[str, Any]]:
    return c.get("/v1/jobs", params={"kind": "calibration", "limit": 100}).json()["jobs"]


def explain(
    c: httpx.Client, classifier: str, text: str = "The acting is wooden. The story is gripping."
) -> httpx.Response:
    body = {"text": text, "intervention": TINY_IV, "classifier": classifier, "method": "match", "top_k": 5}
    return c.post("/v1/explanations", json=body)


def sent(upstream: Any, key: str) -> int:
    """Texts the classifier server received under `key` (every HTTP attempt counted)."""
    return sum(calls(upstream.base_url, key)["batch_sizes"])


def wait_job_http(c: httpx.Client, job_id: str, timeout: float = 300) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = c.get(f"/v1/jobs/{job_id}").json()
        if job["status"] in ("succeeded", "failed", "cancelled"):
            return job
        time.sleep(0.3)
    raise TimeoutError(job)


@pytest.mark.slow
def test_auto_calibration_only_after_success_with_backoff_and_budget_shared_by_replicas(
    upstream: Any, two_replicas: tuple[Any, Any]
) -> None:
    """Today: a failed explanation queues a calibration, a failed calibration is queued again by the
    next explanation on any replica, and nothing bounds what calibrations send a classifier."""
    a, b = two_replicas
    with (
        httpx.Client(base_url=a.base_url, timeout=120) as ca,
        httpx.Client(base_url=b.base_url, timeout=120) as cb,
    ):
        register(ca, "broken", f"{upstream.base_url}/reject/broken")
        # Explanations send at most 6 texts per request (the text and K=5 counterfactuals); a calibration
        # classifies the 160-text pool in 20 steps of 8 texts and scores in larger batches: those fail.
        register(ca, "smallonly", f"{upstream.base_url}/bigfail/smallonly?max=6", retries=0)
        register(ca, "budgeted", f"{upstream.base_url}/ok/budgeted")

        # 1. A failed explanation queues nothing.
        assert explain(ca, "broken").status_code >= 400
        time.sleep(1)
        assert calibration_jobs(ca) == []

        # 2. A successful one queues one calibration; it fails; the next explanations, on this replica
        #    and on the other, queue none (the backoff is in the store).
        r = explain(ca, "smallonly")
        assert r.status_code == 200, r.text
        deadline = time.monotonic() + 120
        while not (jobs := calibration_jobs(ca)):
            assert time.monotonic() < deadline, "no calibration was queued"
            time.sleep(0.5)
        assert len(jobs) == 1
        first = wait_job_http(ca, jobs[0]["id"])
        assert first["status"] == "failed", first
        for client in (ca, cb, ca, cb):
            time.sleep(5.5)  # past each replica's local check interval
            assert (
                explain(client, "smallonly", "The music is dull. The story is gripping.").status_code == 200
            )
        time.sleep(2)
        assert len(calibration_jobs(ca)) == 1, "a failed calibration was queued again"

        # 3. The budget: what calibrations send one classifier, per window, over every replica. Each
        #    runs within what is left; they end with one refused before it sends anything.
        refused = None
        for client in (ca, cb, ca):
            r = client.post(f"/v1/domains/{TINY_ID}/calibrations", json={"classifier": "budgeted"})
            assert r.status_code == 202, r.text
            before = sent(upstream, "budgeted")
            job = wait_job_http(client, r.json()["id"], timeout=900)
            assert sent(upstream, "budgeted") <= BUDGET, job
            if job["status"] == "failed" and "CACE_CALIBRATION_BUDGET_TEXTS" in (job["error"] or ""):
                refused = job
                break
        assert refused is not None, "the budget never ran out"
        assert sent(upstream, "budgeted") == before  # refused before anything was sent


@pytest.mark.slow
def test_cancel_stops_a_calibration_and_an_effects_job_within_seconds(
    upstream: Any, two_replicas: tuple[Any, Any]
) -> None:
    """Today a cancelled calibration runs to its end (every classifier call it planned)."""
    a, _ = two_replicas
    one_at_a_time = {"batch_size": 8, "max_concurrency": 1}
    with httpx.Client(base_url=a.base_url, timeout=120) as c:
        register(c, "slowcal", f"{upstream.base_url}/slow/slowcal?s=0.25", **one_at_a_time)
        register(c, "sloweff", f"{upstream.base_url}/slow/sloweff?s=0.25", **one_at_a_time)
        cal = c.post(f"/v1/domains/{TINY_ID}/calibrations", json={"classifier": "slowcal"}).json()["id"]
        body = {"texts": tiny_texts(120), "intervention": TINY_IV, "classifier": "sloweff", "mode": "job"}
        eff = c.post("/v1/effects", json={**body, "method": "match"}).json()["id"]
        deadline = time.monotonic() + 300
        while (
            calls(upstream.base_url, "slowcal")["count"] < 3
            or calls(upstream.base_url, "sloweff")["count"] < 3
        ):
            assert time.monotonic() < deadline, "the jobs never reached the classifier"
            time.sleep(0.2)
        for job_id in (cal, eff):
            r = c.post(f"/v1/jobs/{job_id}/cancel")
            assert r.status_code == 200 and r.json()["status"] == "cancelled", r.text
        time.sleep(8)  # what was in flight finishes: a calibration's chunk (128 texts: 16 requests here)
        counts = {k: calls(upstream.base_url, k)["count"] for k in ("slowcal", "sloweff")}
        time.sleep(6)
        assert {k: calls(upstream.base_url, k)["count"] for k in counts} == counts, (
            "still calling after cancel"
        )
        assert counts["slowcal"] <= 16  # 160 pool texts in batches of 8 (20 requests): stopped, not finished
        for job_id in (cal, eff):
            assert c.get(f"/v1/jobs/{job_id}").json()["status"] == "cancelled"


@pytest.mark.slow
def test_an_effects_job_whose_texts_mostly_failed_is_failed_not_succeeded(
    upstream: Any, two_replicas: tuple[Any, Any]
) -> None:
    """Today: 192 of 200 rows failed and the job `succeeded` with a CaCE and a tight CI from 8 texts."""
    a, _ = two_replicas
    texts = tiny_texts(200)
    body = {"intervention": TINY_IV, "classifier": "marked", "method": "match", "mode": "job"}
    with httpx.Client(base_url=a.base_url, timeout=120) as c:
        register(c, "marked", f"{upstream.base_url}/rejectmarked/marked?mark=FAIL")
        mostly_failed = [t if i < 8 else t + " FAIL" for i, t in enumerate(texts)]
        job = wait_job_http(c, c.post("/v1/effects", json={**body, "texts": mostly_failed}).json()["id"], 600)
        assert job["status"] == "failed", job
        assert "192 of 200 texts failed" in job["error"] and job["result"] is None
        rows = c.get(f"/v1/jobs/{job['id']}/rows", params={"limit": 500}).json()["rows"]
        assert sum(r["status"] == "failed" for r in rows) == 192  # the rows stay readable
        few_failed = [t + " FAIL" if i < 2 else t for i, t in enumerate(texts[:40])]
        job = wait_job_http(c, c.post("/v1/effects", json={**body, "texts": few_failed}).json()["id"], 600)
        assert job["status"] == "succeeded", job
        summary = job["result"]["summary"]
        assert summary["n_failed"] == 2 and summary["n_used"] == 38
        assert "2 of 40 texts failed" in job["result"]["warnings"][0]


# ---- deleting a domain while it calibrates ---------------------------------------------------
def doomed_domain(data_dir: Path, tmp: Path, domain_id: str = "doomed") -> Path:
    """A copy of the tiny domain under data_dir/domains, as a deletable (not default) domain."""
    folder = data_dir / "domains" / domain_id
    shutil.copytree(tiny_domain(tmp), folder)
    meta = json.loads((folder / META).read_text())
    (folder / META).write_text(json.dumps({**meta, "id": domain_id}))
    return folder


class _WritesLikeACalibration:
    """What `Calibration.save` does to the file system (creates the folder and its parents)."""

    def save(self, directory: Path) -> Path:
        directory.mkdir(parents=True)
        (directory / "calibration.json").write_text("{}")
        return directory


def test_a_calibration_finishing_after_its_domain_was_deleted_saves_nothing(tmp_path: Path) -> None:
    """The race past the calibration's last cancel checkpoint: the delete wins, no folder reappears."""
    from app.domains import DomainCatalog
    from explainers.embeddings import Encoder

    folder = doomed_domain(tmp_path / "data", tmp_path)
    catalog = DomainCatalog(tmp_path / "data" / "domains", Encoder)
    domain = catalog.get("doomed")
    assert catalog.save_calibration(domain, "clf", _WritesLikeACalibration())
    assert (folder / "calibrations" / "clf" / "calibration.json").exists()
    assert catalog.delete("doomed")
    assert not catalog.save_calibration(domain, "clf", _WritesLikeACalibration())
    assert not folder.exists()


@pytest.mark.slow
def test_deleting_a_domain_while_it_calibrates_cancels_it_and_leaves_no_folder(
    upstream: Any, tmp_path: Path
) -> None:
    """Today the calibration ran on and saved into `<domain>/calibrations/`, recreating a stray folder."""
    from benchmarks.harness.service import service

    data = tmp_path / "data"
    folder = doomed_domain(data, tmp_path)
    env = {**tiny_env(tmp_path), "CACE_DATA_DIR": str(data), "OMP_NUM_THREADS": "1"}
    with service(env) as srv, httpx.Client(base_url=srv.base_url, timeout=120) as c:
        register(c, "slowdel", f"{upstream.base_url}/slow/slowdel?s=0.25", batch_size=8, max_concurrency=1)
        r = c.post("/v1/domains/doomed/calibrations", json={"classifier": "slowdel"})
        assert r.status_code == 202, r.text
        job_id = r.json()["id"]
        deadline = time.monotonic() + 300
        while calls(upstream.base_url, "slowdel")["count"] < 3:
            assert time.monotonic() < deadline, "the calibration never reached the classifier"
            time.sleep(0.2)
        assert c.delete("/v1/domains/doomed").status_code == 204
        assert c.get(f"/v1/jobs/{job_id}").json()["status"] == "cancelled"
        time.sleep(8)  # what was in flight finishes (a chunk of 128 texts: 16 requests here)
        assert not folder.exists(), sorted(str(p.relative_to(data)) for p in folder.rglob("*"))
        assert c.get("/v1/domains/doomed").status_code == 404
        assert c.get(f"/v1/jobs/{job_id}").json()["status"] == "cancelled"
