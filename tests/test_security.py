"""API keys, scopes and per-key rate limits against the real service (uvicorn subprocess, HTTP).

The service starts with no key, so auth is off (the embedded default) and `/v1/keys` refuses
to mint one anonymously; the first admin key comes from the CLI (`python -m app.security
create-key`), which turns auth on. Keys must be stored hashed: the test reads the
SQLite store and checks the plaintext is nowhere in it.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from benchmarks.harness.servers import ROOT, Server, free_port, python, running


@contextlib.contextmanager
def service(tmp: Path, test_data_dir: Path, **env: str) -> Iterator[Server]:
    """The real service on a free port: reference tfidf-lr classifier only (no pool, taggers or space)."""
    port = free_port()
    base = {
        "CACE_DATA_DIR": str(test_data_dir),
        "CACE_DATABASE_URL": f"sqlite:///{tmp / 'store.sqlite'}",
        "CACE_DEFAULT_POOL": "",
        "CACE_DEFAULT_TAGGERS": "false",
        "CACE_DEFAULT_SPACE": "false",
        "CACE_LOG_FORMAT": "json",
    }
    cmd = [python(), "-m", "app.cli", "serve", "--port", str(port)]
    with running(
        cmd, port=port, health_path="/healthz", env={**base, **env}, log_dir=tmp, timeout=120
    ) as srv:
        deadline = time.monotonic() + 180
        while httpx.get(srv.base_url + "/readyz", timeout=5).status_code != 200:
            if time.monotonic() > deadline:
                raise TimeoutError(f"service not ready:\n{srv.log_text()[-3000:]}")
            time.sleep(0.3)
        yield srv


@pytest.fixture(scope="module")
def svc(
    tmp_path_factory: pytest.TempPathFactory, tfidf_lr_dir: Path, test_data_dir: Path
) -> Iterator[Server]:
    tmp = tmp_path_factory.mktemp("security")
    with service(tmp, test_data_dir, CACE_RATE_LIMIT_PER_S="5", CACE_RATE_LIMIT_BURST="5") as srv:
        srv.tmp = tmp  # type: ignore[attr-defined]
        yield srv


def cli_key(svc: Server, name: str, scopes: str, rate: float | None = None) -> str:
    """Bootstrap a key the documented way: `python -m app.security create-key` on the server's store."""
    import subprocess

    cmd = [python(), "-m", "app.security", "create-key", "--name", name, "--scopes", scopes]
    if rate is not None:
        cmd += ["--rate", str(rate)]
    env = {**os.environ, "CACE_DATABASE_URL": f"sqlite:///{svc.tmp / 'store.sqlite'}"}  # type: ignore[attr-defined]
    out = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=120, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])["key"]


def _bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def test_keys_scopes_revocation_and_rate_limits(svc: Server) -> None:
    url = svc.base_url
    with httpx.Client(base_url=url, timeout=30) as c:
        # Embedded default: no key exists, so the API is open, but keys are never minted anonymously.
        assert c.get("/v1/jobs").status_code == 200
        r = c.post("/v1/keys", json={"name": "root", "scopes": ["admin"], "rate_limit_per_s": 1000})
        assert r.status_code == 403 and "create-key" in r.json()["detail"], r.text
        admin = cli_key(svc, "root", "admin", 1000)
        # Now auth is on (replicas see a new key within KeyStore.CACHE_S, 2 s): no key, a wrong key
        # -> 401 problem+json with WWW-Authenticate.
        deadline = time.monotonic() + 5
        while (r := c.get("/v1/jobs")).status_code == 200 and time.monotonic() < deadline:
            time.sleep(0.2)
        assert r.status_code == 401
        assert r.headers["content-type"].startswith("application/problem+json")
        assert r.headers["www-authenticate"] == "Bearer"
        assert c.get("/v1/jobs", headers=_bearer("cace_not-a-key")).status_code == 401
        # Probes and metrics stay public.
        assert c.get("/healthz").status_code == 200
        assert c.get("/metrics").status_code == 200

        r = c.post("/v1/keys", json={"name": "reader", "scopes": ["explain"]}, headers=_bearer(admin))
        assert r.status_code == 201
        reader, reader_id = r.json()["key"], r.json()["id"]
        assert (
            c.post("/v1/keys", json={"name": "x", "scopes": ["root"]}, headers=_bearer(admin)).status_code
            == 422
        )

        # Scopes: explain can predict and read, but cannot register classifiers or manage keys.
        r = c.post(
            "/v1/models/tfidf-lr:predict", json={"instances": ["great food"]}, headers={"X-API-Key": reader}
        )
        assert r.status_code == 200, r.text
        assert set(r.json()["predictions"][0]) == {"1", "2", "3", "4", "5"}
        r = c.post("/v1/classifiers", json={"name": "x", "spec": {}}, headers=_bearer(reader))
        assert r.status_code == 403
        assert "admin" in r.json()["detail"]
        assert c.get("/v1/keys", headers=_bearer(reader)).status_code == 403
        listed = c.get("/v1/keys", headers=_bearer(admin)).json()
        assert {k["name"] for k in listed} >= {"root", "reader"}
        assert all("key" not in k for k in listed)

        # Per-key token bucket: 5/s with burst 5, so a quick burst of 12 gets 429s with Retry-After.
        codes = [c.get("/v1/jobs", headers=_bearer(reader)) for _ in range(12)]
        limited = [r for r in codes if r.status_code == 429]
        assert limited and all(r.status_code in (200, 429) for r in codes)
        assert int(limited[0].headers["retry-after"]) >= 1
        assert limited[0].json()["type"].endswith("/rate-limited")
        # The admin key has its own bucket (1000/s) and is not affected.
        assert c.get("/v1/jobs", headers=_bearer(admin)).status_code == 200
        time.sleep(1.2)
        assert c.get("/v1/jobs", headers=_bearer(reader)).status_code == 200

        # Revocation takes effect at once on this replica.
        assert c.delete(f"/v1/keys/{reader_id}", headers=_bearer(admin)).status_code == 204
        assert c.get("/v1/jobs", headers=_bearer(reader)).status_code == 401
        assert c.delete(f"/v1/keys/{reader_id}", headers=_bearer(admin)).status_code == 404

    # Stored hashed: the plaintext is nowhere in the database, its sha256 is.
    db = sqlite3.connect(svc.tmp / "store.sqlite")  # type: ignore[attr-defined]
    rows = db.execute("SELECT hash, name FROM cace_api_keys").fetchall()
    db.close()
    dump = json.dumps(rows)
    assert admin not in dump and reader not in dump
    assert hashlib.sha256(admin.encode()).hexdigest() in dump


def test_keys_file_turns_auth_on(tmp_path: Path, tfidf_lr_dir: Path, test_data_dir: Path) -> None:
    """A mounted keys file (hashes only) enables auth from the first request."""
    key = "cace_from-a-secret-0123456789abcdef"
    keys_file = tmp_path / "keys.json"
    keys_file.write_text(
        json.dumps(
            [{"name": "ci", "sha256": hashlib.sha256(key.encode()).hexdigest(), "scopes": ["explain"]}]
        )
    )
    with service(tmp_path, test_data_dir, CACE_API_KEYS_FILE=str(keys_file)) as srv:
        with httpx.Client(base_url=srv.base_url, timeout=30) as c:
            assert c.get("/v1/jobs").status_code == 401
            assert c.get("/v1/jobs", headers=_bearer(key)).status_code == 200
            assert c.post("/v1/keys", json={"name": "y"}, headers=_bearer(key)).status_code == 403
    assert ROOT.exists()


def test_keys_are_shared_and_revoked_across_replicas_on_postgresql() -> None:
    """Two replicas (two KeyStores) on one PostgreSQL: a key made on one works on the other, and a
    revocation on one reaches the other within the lookup cache's lifetime."""
    import uuid

    import sqlalchemy as sa

    from app.security import KeyStore

    url = os.environ.get("CACE_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")
    engine = sa.create_engine(url)
    try:
        with engine.connect():
            pass
    except Exception as e:  # the service's PostgreSQL is part of the test setup; say so if absent
        pytest.skip(f"PostgreSQL not reachable at {url}: {e}")
    prefix = f"t{uuid.uuid4().hex[:8]}_"
    md = sa.MetaData()
    a, b = KeyStore(engine, prefix, metadata=md), KeyStore(engine, prefix, metadata=md)
    try:
        rec, key = a.create("shared", ["explain"], rate_per_s=3.0)
        got = b.lookup(key)
        assert got is not None and got.id == rec.id and got.rate_per_s == 3.0 and got.scopes == ["explain"]
        assert b.lookup(key + "x") is None
        assert a.revoke(rec.id)
        assert a.lookup(key) is None  # at once on the replica that revoked it
        time.sleep(KeyStore.CACHE_S + 0.1)
        assert b.lookup(key) is None  # within the cache lifetime on the other
    finally:
        md.drop_all(engine)
        engine.dispose()
