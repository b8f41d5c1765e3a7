"""Rate limits shared by replicas through the machine's real Redis (127.0.0.1:6379).

Two `RedisTokenBuckets` are two replicas' limiters: they must share one budget per key.
Two real service replicas (uvicorn subprocesses) with `CACE_RATE_LIMIT_REDIS_URL` must
together let through no more than one key's burst. An unreachable Redis must not fail
requests: the replica falls back to its own in-memory buckets.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
import uuid
from pathlib import Path

import httpx
import pytest

from app.ratelimit import RedisTokenBuckets, TokenBuckets, build_rate_limiter
from benchmarks.harness.servers import free_port
from tests.test_security import service

REDIS_URL = os.environ.get("CACE_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")


@pytest.fixture(scope="module")
def redis_url() -> str:
    import redis

    try:
        redis.Redis.from_url(REDIS_URL, socket_connect_timeout=2).ping()
    except Exception as e:  # Redis is part of every machine here; say so loudly under CI
        if os.environ.get("CI"):
            pytest.fail(f"Redis not reachable at {REDIS_URL}: {e}")
        pytest.skip(f"Redis not reachable at {REDIS_URL}: {e}")
    return REDIS_URL


def test_two_replicas_share_one_bucket(redis_url: str) -> None:
    prefix = f"cace-test:{uuid.uuid4().hex[:8]}:"
    a = RedisTokenBuckets(redis_url, rate=2.0, burst=4, prefix=prefix)
    b = RedisTokenBuckets(redis_url, rate=2.0, burst=4, prefix=prefix)
    waits = [(a if i % 2 else b).take("key:k1") for i in range(6)]
    assert waits[:4] == [0.0] * 4  # the burst, spent across both replicas
    assert all(0 < w <= 0.5 + 0.05 for w in waits[4:])  # then one token per 0.5 s for everybody
    assert a.take("key:other") == 0.0  # other identities have their own bucket
    time.sleep(0.6)
    assert b.take("key:k1") == 0.0  # refilled by Redis' clock
    assert a.take("key:k1", rate=0) == 0.0  # rate 0 disables the limit
    assert a.client.ttl(prefix + "key:k1") > 0  # idle buckets expire instead of piling up


def test_unreachable_redis_limits_per_replica_instead_of_failing() -> None:
    down = RedisTokenBuckets(f"redis://127.0.0.1:{free_port()}/0", rate=1.0, burst=2, timeout_s=0.2)
    waits = [down.take("key:k") for _ in range(3)]
    assert waits[:2] == [0.0, 0.0] and waits[2] > 0  # still limited, by the local bucket
    assert isinstance(build_rate_limiter(1.0, 2), TokenBuckets)


def test_service_replicas_share_a_key_budget_through_redis(
    redis_url: str, tmp_path: Path, tfidf_lr_dir: Path, test_data_dir: Path
) -> None:
    key = f"cace_{uuid.uuid4().hex}{uuid.uuid4().hex}"  # a fresh key id, so no bucket is left from a past run
    keys_file = tmp_path / "keys.json"
    keys_file.write_text(json.dumps([{"name": "shared", "sha256": hashlib.sha256(key.encode()).hexdigest(),
                                      "scopes": ["explain"], "rate_per_s": 0.05}]))  # fmt: skip
    env = {"CACE_API_KEYS_FILE": str(keys_file), "CACE_RATE_LIMIT_REDIS_URL": redis_url,
           "CACE_RATE_LIMIT_BURST": "6"}  # fmt: skip
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    with (
        service(tmp_path / "a", test_data_dir, **env) as a,
        service(tmp_path / "b", test_data_dir, **env) as b,
    ):
        headers = {"Authorization": f"Bearer {key}"}
        codes = [httpx.get((a if i % 2 else b).base_url + "/v1/jobs", headers=headers, timeout=30).status_code
                 for i in range(10)]  # fmt: skip
        # 6 tokens in all, refilled at 0.05/s: per-replica buckets would have let 10 through.
        assert codes.count(200) == 6 and codes.count(429) == 4, codes
