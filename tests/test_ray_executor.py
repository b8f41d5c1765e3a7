"""Effects jobs on a real local Ray cluster (a head and one more worker node started here), with an
actor SIGKILLed mid-job: the job still succeeds, nothing finished is redone, and its rows equal
the same request run inline in the service process; and the bounds on what callers can make Ray
run (one pool for inline specs, a pool cap, idle actors stopped, no secret where Ray shows things).
The service runs on the tiny movie domain (tests/tiny_domain.py) with a registered HTTP classifier
(the misbehaving test server, behaving). Needs the `ray` extra.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

ray = pytest.importorskip("ray")

from tests.servers import free_port  # noqa: E402
from tests.service_server import service, store_env  # noqa: E402
from tests.test_service_e2e import all_rows, wait_job  # noqa: E402
from tests.tiny_domain import TINY_IV, tiny_env, tiny_texts  # noqa: E402

REQUEST = {"intervention": TINY_IV, "method": "match", "top_k": 5, "seed": 11, "classifier": "reg"}
LABELS = ["neg", "neu", "pos"]


@pytest.fixture(scope="module")
def upstream() -> Iterator[Any]:
    from tests.model_servers.launch import misbehaving_server

    with misbehaving_server() as srv:
        yield srv


def register(c: httpx.Client, upstream: Any) -> None:
    spec = {"protocol": "hf", "url": f"{upstream.base_url}/ok/reg", "labels": LABELS}
    r = c.post("/v1/classifiers", json={"name": "reg", "spec": spec})
    assert r.status_code == 201, r.text


def _ray_bin() -> str:
    found = shutil.which("ray", path=str(Path(sys.executable).parent))
    if not found:
        pytest.skip("the ray CLI is not installed")
    return found


CLUSTER_DIRS: dict[str, Path] = {}  # address -> the cluster's temp dir (its session logs)


@pytest.fixture(scope="module")
def ray_cluster() -> Iterator[str]:
    """`ray start --head` on 127.0.0.1 plus a second node joining it; both stopped by process group."""
    ray_bin = _ray_bin()
    port = free_port()
    temp = tempfile.mkdtemp(prefix="ray", dir="/tmp")
    env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0", "OMP_NUM_THREADS": "1"}
    common = ["--block", "--node-ip-address", "127.0.0.1", "--num-cpus", "1"]
    procs = [
        subprocess.Popen(
            [
                ray_bin,
                "start",
                "--head",
                "--port",
                str(port),
                "--include-dashboard=false",
                "--temp-dir",
                temp,
                *common,
            ],
            env=env,
            start_new_session=True,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
    ]
    address = f"127.0.0.1:{port}"
    CLUSTER_DIRS[address] = Path(temp)
    try:
        deadline = time.monotonic() + 120
        while True:
            ok = subprocess.run([ray_bin, "status", "--address", address], env=env, capture_output=True)
            if ok.returncode == 0:
                break
            if time.monotonic() > deadline:
                raise RuntimeError(f"ray head did not come up: {ok.stderr.decode()[-2000:]}")
            time.sleep(1)
        procs.append(
            subprocess.Popen(
                [ray_bin, "start", "--address", address, *common],
                env=env,
                start_new_session=True,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
        )
        ray.init(address=address, namespace="cace", logging_level="WARNING")
        while len([n for n in ray.nodes() if n["Alive"]]) < 2:
            if time.monotonic() > deadline:
                raise RuntimeError("the second Ray node did not join")
            time.sleep(1)
        yield address
    finally:
        if ray.is_initialized():
            ray.shutdown()
        for p in reversed(procs):
            try:
                os.killpg(p.pid, signal.SIGTERM)
                p.wait(30)
            except (ProcessLookupError, subprocess.TimeoutExpired):
                os.killpg(p.pid, signal.SIGKILL)
        shutil.rmtree(temp, ignore_errors=True)


def restarted_pid(actor, timeout: float = 300) -> int:
    """The actor's pid once Ray has restarted it (calls fail while it is coming back)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return ray.get(actor.pid.remote(), timeout=60)
        except (ray.exceptions.ActorUnavailableError, ray.exceptions.RayActorError):
            if time.monotonic() > deadline:
                raise
            time.sleep(1)


@pytest.mark.slow
def test_job_on_ray_survives_a_killed_actor(ray_cluster: str, upstream: Any, tmp_path: Path) -> None:
    env = {
        **tiny_env(tmp_path),
        **store_env("sqlite", tmp_path),
        "CACE_RAY_ADDRESS": ray_cluster,
        "CACE_INSTANCE_ID": "svc",
        "CACE_JOB_WORKERS": "2",
        "CACE_JOB_CLAIM_BATCH": "4",
        "CACE_JOB_LEASE_S": "20",
        "CACE_RAY_ACTORS_PER_CLASSIFIER": "2",
        "OMP_NUM_THREADS": "1",
    }
    texts = tiny_texts(48)
    with service(env) as srv, httpx.Client(base_url=srv.base_url, timeout=300) as c:
        register(c, upstream)
        r = c.post("/v1/effects", json={**REQUEST, "mode": "job", "texts": texts})
        assert r.status_code == 202, r.text
        job_id = r.json()["id"]
        deadline = time.monotonic() + 600
        while (job := c.get(f"/v1/jobs/{job_id}").json())["counts"]["done"] < 8:
            assert job["status"] in ("queued", "running") and not job["item_errors"], job
            assert time.monotonic() < deadline, "the Ray actors never finished a batch"
            time.sleep(0.05)
        actors = []
        for i in range(2):  # actors start on demand: the second with the second concurrent batch
            while True:
                try:
                    actors.append(ray.get_actor(f"effects-svc-reg-{i}", namespace="cace"))
                    break
                except ValueError:
                    assert time.monotonic() < deadline, f"actor {i} never started"
                    time.sleep(0.5)
        pids = [ray.get(a.pid.remote(), timeout=120) for a in actors]
        done_before = {x["index"]: x for x in all_rows(c, job_id) if x["status"] in ("done", "unchanged")}
        os.kill(pids[0], signal.SIGKILL)  # a Ray worker lost mid-job
        job = wait_job(c, job_id)
        assert job["status"] == "succeeded", job
        assert job["result"]["summary"]["n_failed"] == 0
        rows = all_rows(c, job_id)
        for i, before in done_before.items():  # finished items are never redone
            assert (
                rows[i]["finished_at"] == before["finished_at"] and rows[i]["attempts"] == before["attempts"]
            )
        assert restarted_pid(actors[0]) != pids[0]  # Ray restarted the actor
        inline = c.post("/v1/effects", json={**REQUEST, "mode": "inline", "texts": texts})
        assert inline.status_code == 200, inline.text
        body = inline.json()
        assert body["result"]["cace"] == job["result"]["cace"]
        assert [(x["icace"], x["source"], x["status"]) for x in body["rows"]] == [
            (x["icace"], x["source"], x["status"]) for x in rows
        ]


def test_actors_never_receive_the_admin_key_or_the_rate_limit_store_url() -> None:
    from app.jobs.ray_executor import actor_env, runtime_env_vars

    environ = {
        "CACE_ADMIN_KEY": "cace_secret",
        "CACE_RATE_LIMIT_REDIS_URL": "redis://:pw@r:6379/0",
        "CACE_DATABASE_URL": "postgresql+psycopg://svc:pw@db/cace",
        "CACE_RAY_ADDRESS": "auto",
        "HF_HUB_OFFLINE": "1",
        "HOME": "/root",
        "AWS_SECRET_ACCESS_KEY": "x",
        "OPENAI_API_KEY": "sk-allowed",
        "OMP_NUM_THREADS": "1",
    }
    env = actor_env(environ, ["OPENAI_API_KEY@api.openai.com"])
    assert env == {
        "CACE_DATABASE_URL": "postgresql+psycopg://svc:pw@db/cace",
        "HF_HUB_OFFLINE": "1",
        "OPENAI_API_KEY": "sk-allowed",
        "OMP_NUM_THREADS": "1",
    }
    # Ray's runtime env (shown on its dashboard and in its logs) gets no setting at all.
    assert runtime_env_vars(environ, "/src") == {"OMP_NUM_THREADS": "1", "PYTHONPATH": "/src"}


DB_PASSWORD = "pw-MARKER-7f3a"
LLM_KEY = "llm-key-MARKER-91c2"


def ray_exposed(address: str) -> bytes:
    """Everything Ray keeps about jobs and actors where its dashboard and state API read it (the GCS job
    and actor tables, raw), plus every log file of the cluster's session."""
    from ray._private.state import state

    accessor = state._connect_and_get_accessor()
    raw = b"".join(
        accessor.get_job_table(skip_submission_job_info_field=False, skip_is_running_tasks_field=False)
    )
    raw += b"".join(accessor.get_actor_table(None, None))
    for f in CLUSTER_DIRS[address].rglob("*"):
        if f.is_file() and not f.is_socket():
            try:
                raw += f.read_bytes()
            except OSError:
                pass
    return raw


def effects_actors(prefix: str) -> list[dict]:
    """Every actor the service started (alive or dead), from the GCS actor table."""
    from ray._private.state import actors

    return [a for a in actors().values() if a["Name"].startswith(prefix)]


@pytest.mark.slow
def test_inline_specs_share_one_bounded_pool_idle_actors_stop_and_no_secret_reaches_ray(
    ray_cluster: str, upstream: Any, tmp_path: Path
) -> None:
    """50 effects jobs whose inline specs differ only by a query string: one pool of one actor runs them
    all (today: two actors per spec, 100 in all, and the jobs block once the cluster is full); a job of
    another classifier evicts the idle inline pool (CACE_RAY_MAX_POOLS=1); idle actors stop; the
    database password and the LLM key appear nowhere Ray keeps or logs things."""
    from tests.service_server import drop_pg_prefix

    prefix = f"t{uuid.uuid4().hex[:10]}_"
    env = {
        **tiny_env(tmp_path),
        "CACE_DATABASE_URL": f"postgresql+psycopg://postgres:{DB_PASSWORD}@127.0.0.1:5432/test",
        "CACE_TABLE_PREFIX": prefix,
        "CACE_LLM_API_KEY": LLM_KEY,
        "CACE_RAY_ADDRESS": ray_cluster,
        "CACE_INSTANCE_ID": "rc",
        "CACE_JOB_WORKERS": "2",
        "CACE_JOB_LEASE_S": "20",
        "CACE_RAY_ACTORS_PER_CLASSIFIER": "1",
        "CACE_RAY_MAX_POOLS": "1",
        "CACE_RAY_ACTOR_IDLE_S": "20",
        "CACE_RAY_ACQUIRE_TIMEOUT_S": "400",
        "OMP_NUM_THREADS": "1",
    }
    texts = tiny_texts(2)
    try:
        with service(env) as srv, httpx.Client(base_url=srv.base_url, timeout=60) as c:
            register(c, upstream)
            jobs = []
            for i in range(50):
                spec = {
                    "protocol": "hf",
                    "url": f"{upstream.base_url}/ok/ray?v={i}",
                    "labels": ["neg", "neu", "pos"],
                }
                r = c.post("/v1/effects", json={**REQUEST, "mode": "job", "texts": texts, "classifier": spec})
                assert r.status_code == 202, r.text
                jobs.append(r.json()["id"])
            deadline = time.monotonic() + 900
            for job_id in jobs:
                job = wait_job(c, job_id, timeout=max(1.0, deadline - time.monotonic()))
                assert job["status"] == "succeeded", job
            started = effects_actors("effects-rc-")
            assert [a["Name"] for a in started] == ["effects-rc-inline-0"], started
            # Another classifier's job: the idle inline pool makes room (one pool at most).
            r = c.post("/v1/effects", json={**REQUEST, "mode": "job", "texts": texts, "classifier": "reg"})
            assert r.status_code == 202, r.text
            assert wait_job(c, r.json()["id"])["status"] == "succeeded"
            by_name = {a["Name"]: a for a in effects_actors("effects-rc-")}
            assert set(by_name) == {"effects-rc-inline-0", "effects-rc-reg-1"}
            assert by_name["effects-rc-inline-0"]["State"] == "DEAD"
            # Idle for CACE_RAY_ACTOR_IDLE_S: stopped.
            deadline = time.monotonic() + 120
            while effects_actors("effects-rc-reg-1")[0]["State"] != "DEAD":
                assert time.monotonic() < deadline, "the idle actor was never stopped"
                time.sleep(2)
            exposed = ray_exposed(ray_cluster)
            assert b"CACE_TABLE_PREFIX" not in exposed  # no setting at all, secret or not
            assert DB_PASSWORD.encode() not in exposed and LLM_KEY.encode() not in exposed
    finally:
        drop_pg_prefix(prefix)


@pytest.mark.slow
def test_a_job_that_cannot_get_an_actor_fails_within_a_bound(
    ray_cluster: str, upstream: Any, tmp_path: Path
) -> None:
    """Actors the cluster can never place (8 CPUs each on a 2-CPU cluster): today the batch waits for
    one forever and the job never ends; now each attempt waits CACE_RAY_ACQUIRE_TIMEOUT_S, and after
    CACE_JOB_MAX_ATTEMPTS the job fails, saying why."""
    env = {
        **tiny_env(tmp_path),
        **store_env("sqlite", tmp_path),
        "CACE_RAY_ADDRESS": ray_cluster,
        "CACE_INSTANCE_ID": "full",
        "CACE_RAY_ACTOR_CPUS": "8",
        "CACE_RAY_ACQUIRE_TIMEOUT_S": "8",
        "CACE_JOB_MAX_ATTEMPTS": "2",
        "OMP_NUM_THREADS": "1",
    }
    with service(env) as srv, httpx.Client(base_url=srv.base_url, timeout=60) as c:
        register(c, upstream)
        started = time.monotonic()
        r = c.post("/v1/effects", json={**REQUEST, "mode": "job", "texts": tiny_texts(2)})
        assert r.status_code == 202, r.text
        job = wait_job(c, r.json()["id"], timeout=180)
        took = time.monotonic() - started
        assert job["status"] == "failed", job
        assert job["counts"]["failed"] == 2 and "CACE_RAY_ACQUIRE_TIMEOUT_S" in job["item_errors"][0]["error"]
        assert took < 120, took
        print(f"ray: a job that could get no actor failed after {took:.1f} s")
