"""The store's tables and connection: what the registry, jobs and items parts share."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine

ACTIVE = ("queued", "running")


class _QueueFull(Exception):
    """Rolls back a job whose admission would exceed the queue limit."""


FINAL = ("succeeded", "failed", "cancelled")
ITEM_STATES = ("pending", "running", "done", "failed")


def _dump(value: Any) -> str | None:
    return None if value is None else json.dumps(value, separators=(",", ":"))


def _load(value: str | None) -> Any:
    return None if value is None else json.loads(value)


@dataclass
class Claimed:
    """An item a worker holds a lease on."""

    job_id: str
    idx: int
    payload: Any
    attempts: int


@dataclass
class ItemOutcome:
    """What became of one item of a batch: a result, an error, or (retry) back to pending."""

    idx: int
    result: Any = None
    error: str | None = None
    retry: bool = False


class Tables:
    """The engine and the prefixed tables (one code path for SQLite and PostgreSQL)."""

    def __init__(self, url: str, prefix: str = "cace_") -> None:
        self.url = url
        self.prefix = prefix
        kwargs: dict[str, Any] = {"future": True, "pool_pre_ping": True}
        if url.startswith("sqlite"):
            kwargs["connect_args"] = {"check_same_thread": False, "timeout": 30}
        self.engine: Engine = sa.create_engine(url, **kwargs)
        if url.startswith("sqlite"):
            sa.event.listen(self.engine, "connect", _sqlite_pragmas)
        md = sa.MetaData()
        self.registry = sa.Table(
            f"{prefix}registry",
            md,
            sa.Column("kind", sa.String(32), primary_key=True),
            sa.Column("name", sa.String(128), primary_key=True),
            sa.Column("spec", sa.Text, nullable=False),
            sa.Column("description", sa.Text, nullable=True),
            sa.Column("created_at", sa.Float, nullable=False),
        )
        self.jobs = sa.Table(
            f"{prefix}jobs",
            md,
            sa.Column("id", sa.String(40), primary_key=True),
            sa.Column("kind", sa.String(32), nullable=False),
            sa.Column("status", sa.String(16), nullable=False, index=True),
            sa.Column("request", sa.Text, nullable=False),
            sa.Column("result", sa.Text, nullable=True),
            sa.Column("error", sa.Text, nullable=True),
            sa.Column("total", sa.Integer, nullable=False),
            sa.Column("created_at", sa.Float, nullable=False),
            sa.Column("started_at", sa.Float, nullable=True),
            sa.Column("finished_at", sa.Float, nullable=True),
            # The API key that created the job (None: auth was off); only it, and admins, may see it.
            sa.Column("owner", sa.String(64), nullable=True, index=True),
            # What queued a job the service started by itself (e.g. a first explanation's calibration).
            sa.Column("queued_by", sa.String(200), nullable=True),
            # The running item's stages (JSON, explainers.progress.Stages.snapshot): single-item jobs
            # (domain builds, calibrations) report progress inside their one item.
            sa.Column("stages", sa.Text, nullable=True),
        )
        self.items = sa.Table(
            f"{prefix}job_items",
            md,
            sa.Column("job_id", sa.String(40), primary_key=True),
            sa.Column("idx", sa.Integer, primary_key=True),
            sa.Column("payload", sa.Text, nullable=False),
            sa.Column("status", sa.String(16), nullable=False),
            sa.Column("lease_owner", sa.String(128), nullable=True),
            sa.Column("lease_until", sa.Float, nullable=True),
            sa.Column("attempts", sa.Integer, nullable=False, default=0),
            sa.Column("result", sa.Text, nullable=True),
            sa.Column("error", sa.Text, nullable=True),
            sa.Column("finished_at", sa.Float, nullable=True),
            sa.Index(f"{prefix}ix_items_status", "status", "job_id"),
        )
        # What calibrations sent each classifier in the current window (the budget every replica shares).
        self.calibration_budget = sa.Table(
            f"{prefix}calibration_budget",
            md,
            sa.Column("classifier", sa.String(256), primary_key=True),
            sa.Column("window_start", sa.Float, nullable=False),
            sa.Column("texts", sa.BigInteger, nullable=False),
        )
        # Auto-calibration per (domain, classifier): the job queued, and the backoff after failures.
        self.calibration_state = sa.Table(
            f"{prefix}calibration_state",
            md,
            sa.Column("domain_id", sa.String(128), primary_key=True),
            sa.Column("classifier", sa.String(256), primary_key=True),
            sa.Column("job_id", sa.String(40), nullable=True),
            sa.Column("claimed_at", sa.Float, nullable=True),
            sa.Column("failures", sa.Integer, nullable=False),
            sa.Column("retry_at", sa.Float, nullable=True),
            sa.Column("last_error", sa.Text, nullable=True),
            sa.Column("updated_at", sa.Float, nullable=False),
        )
        self.metadata = md
        md.create_all(self.engine)
        self._migrate()

    def _migrate(self) -> None:
        """Add columns newer code expects to tables an older version created."""
        cols = {c["name"] for c in sa.inspect(self.engine).get_columns(self.jobs.name)}
        for name, ddl in (("owner", "VARCHAR(64)"), ("queued_by", "VARCHAR(200)"), ("stages", "TEXT")):
            if name not in cols:
                with self.engine.begin() as c:
                    c.execute(sa.text(f'ALTER TABLE "{self.jobs.name}" ADD COLUMN {name} {ddl}'))

    def close(self) -> None:
        self.engine.dispose()

    def drop_all(self) -> None:
        """Remove this prefix's tables (tests clean up a shared PostgreSQL with it)."""
        self.metadata.drop_all(self.engine)
        self.engine.dispose()

    def ping(self) -> None:
        with self.engine.connect() as c:
            c.execute(sa.text("SELECT 1"))


def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA busy_timeout=30000")
    cur.execute("PRAGMA synchronous=NORMAL")
    cur.close()


def _registry_row(row: Any) -> dict[str, Any]:
    return {
        "name": row["name"],
        "kind": row["kind"],
        "spec": _load(row["spec"]),
        "description": row["description"],
        "created_at": row["created_at"],
    }


def _job_row(row: Any, with_request: bool) -> dict[str, Any]:
    job = {
        k: row[k]
        for k in (
            "id",
            "kind",
            "status",
            "error",
            "total",
            "created_at",
            "started_at",
            "finished_at",
            "owner",
            "queued_by",
        )
    }
    job["stages"] = _load(row["stages"])
    job["result"] = _load(row["result"])
    if with_request:
        job["request"] = _load(row["request"])
    return job
