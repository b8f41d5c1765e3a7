"""Start the explanation service as a real uvicorn subprocess for the service tests.

The artifacts (tfidf-lr, taggers, the CEBaB concept space) live in the shared test data
directory, so they are trained once per machine; the job store is per test (a SQLite
file in a tmp dir, or a unique table prefix in PostgreSQL).
"""

from __future__ import annotations

import contextlib
import os
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import sqlalchemy as sa

from benchmarks.harness.servers import Server, free_port, python, running

ROOT = Path(__file__).resolve().parents[2]
TEST_DATA_DIR = Path(os.environ.get("CACE_TEST_DATA_DIR", ROOT / "var" / "test"))
PG_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/test"
# A fresh machine trains the taggers and the CEBaB space on the first start.
READY_TIMEOUT = float(os.environ.get("CACE_TEST_READY_TIMEOUT", 1200))


def wait_ready(base_url: str, timeout: float = READY_TIMEOUT, server: Server | None = None) -> dict:
    deadline = time.monotonic() + timeout
    body: dict = {}
    while time.monotonic() < deadline:
        if server is not None and server.proc.poll() is not None:
            raise RuntimeError(f"service exited:\n{server.log_text()[-3000:]}")
        r = httpx.get(base_url + "/readyz", timeout=10)
        body = r.json()
        if r.status_code == 200:
            return body
        if body.get("status") == "degraded":
            raise RuntimeError(f"service came up degraded: {body}")
        time.sleep(0.5)
    raise TimeoutError(f"service not ready after {timeout}s: {body}")


def store_env(backend: str, tmp: Path) -> dict[str, str]:
    """Settings for a fresh job store: a SQLite file, or a unique table prefix in PostgreSQL."""
    if backend == "sqlite":
        return {"CACE_DATABASE_URL": f"sqlite:///{tmp / 'jobs.sqlite'}"}
    return {"CACE_DATABASE_URL": PG_URL, "CACE_TABLE_PREFIX": f"t{uuid.uuid4().hex[:10]}_"}


def drop_pg_prefix(prefix: str) -> None:
    """Drop every table a test server made under its prefix (jobs, registry, and other layers' tables)."""
    eng = sa.create_engine(PG_URL)
    with eng.begin() as c:
        names = (
            c.execute(
                sa.text(
                    "SELECT tablename FROM pg_tables WHERE schemaname = current_schema() "
                    "AND tablename LIKE :p"
                ),
                {"p": prefix.replace("_", "\\_") + "%"},
            )
            .scalars()
            .all()
        )
        for t in names:
            c.execute(sa.text(f'DROP TABLE IF EXISTS "{t}" CASCADE'))
    eng.dispose()


@contextlib.contextmanager
def service(
    env: dict[str, str] | None = None, *, port: int | None = None, ready: bool = True
) -> Iterator[Server]:
    """A running service; waits for /readyz unless ready=False."""
    port = port or free_port()
    full = {
        "CACE_DATA_DIR": str(TEST_DATA_DIR),
        "CACE_HOST": "127.0.0.1",
        "CACE_PORT": str(port),
        "CACE_OUTBOUND_ALLOW": "127.0.0.1/32",
        "CACE_AUTO_CALIBRATE": "false",
        # Prebuilding splice and auto costs each start ~20 CPU s that most tests never use
        # (tests/test_startup.py checks the prebuilt first request).
        "CACE_PREWARM_METHODS": "match",
        "OMP_NUM_THREADS": "2",
        "HF_HUB_OFFLINE": "1",
        "TOKENIZERS_PARALLELISM": "false",
        **(env or {}),
    }
    with running(
        [python(), "-m", "app.server", "--log-level", "warning"],
        port=port,
        health_path="/healthz",
        env=full,
        timeout=120,
    ) as srv:
        if ready:
            wait_ready(srv.base_url, server=srv)
        yield srv
