"""The durable store: registered classifiers/LLMs, jobs, and one row per job item.

Why per-item rows: an effects job over thousands of texts must survive a restart
without redoing or losing finished texts, and several replicas sharing PostgreSQL must
not process the same text twice. Each item is claimed with a lease (owner + expiry)
by a conditional UPDATE that only succeeds if the item is still free (or its lease ran
out), which is atomic on both SQLite and PostgreSQL. A worker that dies simply lets its
leases expire; another worker (or the restarted server) takes the items over.

SQLAlchemy Core keeps one code path for SQLite (the embedded default) and PostgreSQL.
Every table name carries a prefix so test runs and deployments can share a database.
"""

from __future__ import annotations

import hashlib
import json
import time
import uuid
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine

ACTIVE = ("queued", "running")


class _QueueFull(Exception):
    """Rolls back a job whose admission would exceed the queue limit."""


FINAL = ("succeeded", "failed", "cancelled")


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


class Store:
    """All persistence for the service; thread-safe (one engine, short transactions)."""

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
        self.metadata = md
        md.create_all(self.engine)
        self._migrate()

    def _migrate(self) -> None:
        """Add columns newer code expects to tables an older version created."""
        cols = {c["name"] for c in sa.inspect(self.engine).get_columns(self.jobs.name)}
        if "owner" not in cols:
            with self.engine.begin() as c:
                c.execute(sa.text(f'ALTER TABLE "{self.jobs.name}" ADD COLUMN owner VARCHAR(64)'))

    def close(self) -> None:
        self.engine.dispose()

    def drop_all(self) -> None:
        """Remove this prefix's tables (tests clean up a shared PostgreSQL with it)."""
        self.metadata.drop_all(self.engine)
        self.engine.dispose()

    def ping(self) -> None:
        with self.engine.connect() as c:
            c.execute(sa.text("SELECT 1"))

    # ---- registry -------------------------------------------------------------------------
    def registry_add(
        self, kind: str, name: str, spec: dict[str, Any], description: str | None = None
    ) -> bool:
        """Insert; False if the name is taken."""
        try:
            with self.engine.begin() as c:
                c.execute(
                    self.registry.insert().values(
                        kind=kind,
                        name=name,
                        spec=_dump(spec),
                        description=description,
                        created_at=time.time(),
                    )
                )
            return True
        except sa.exc.IntegrityError:
            return False

    def registry_get(self, kind: str, name: str) -> dict[str, Any] | None:
        with self.engine.connect() as c:
            row = (
                c.execute(
                    self.registry.select().where(self.registry.c.kind == kind, self.registry.c.name == name)
                )
                .mappings()
                .first()
            )
        return _registry_row(row) if row else None

    def registry_list(self, kind: str) -> list[dict[str, Any]]:
        with self.engine.connect() as c:
            rows = (
                c.execute(
                    self.registry.select().where(self.registry.c.kind == kind).order_by(self.registry.c.name)
                )
                .mappings()
                .all()
            )
        return [_registry_row(r) for r in rows]

    def registry_delete(self, kind: str, name: str) -> bool:
        with self.engine.begin() as c:
            res = c.execute(
                self.registry.delete().where(self.registry.c.kind == kind, self.registry.c.name == name)
            )
        return res.rowcount > 0

    # ---- jobs -----------------------------------------------------------------------------
    def create_job(
        self,
        kind: str,
        request: dict[str, Any],
        payloads: Iterable[Any],
        *,
        limit: int | None = None,
        owner: str | None = None,
        chunk: int = 1000,
    ) -> str | None:
        """Create a job and its items in one transaction; None if `limit` active jobs already exist.

        `payloads` may be an iterator (a streamed upload): items are inserted `chunk` at a time, so
        memory stays bounded; if the iterator raises (a bad line deep in an upload), nothing is kept
        and the error propagates. The limit is exact under concurrent submits: PostgreSQL serialises
        admissions with a transaction-scoped advisory lock; on SQLite the job row is inserted first,
        which takes the database's write lock before the count, and a transaction over the limit
        rolls back.
        """
        job_id = uuid.uuid4().hex
        try:
            with self.engine.begin() as c:
                if limit is not None and self.engine.dialect.name == "postgresql":
                    c.execute(sa.text("SELECT pg_advisory_xact_lock(:k)"), {"k": self._admission_lock_key()})
                c.execute(
                    self.jobs.insert().values(
                        id=job_id,
                        kind=kind,
                        status="queued",
                        request=_dump(request),
                        total=0,
                        created_at=time.time(),
                        owner=owner,
                    )
                )
                if limit is not None:
                    active = c.execute(
                        sa.select(sa.func.count())
                        .select_from(self.jobs)
                        .where(self.jobs.c.status.in_(ACTIVE))
                    ).scalar_one()
                    if active > limit:  # counts this job too
                        raise _QueueFull
                total = 0
                rows: list[dict[str, Any]] = []
                for p in payloads:
                    rows.append(
                        {
                            "job_id": job_id,
                            "idx": total,
                            "payload": _dump(p),
                            "status": "pending",
                            "attempts": 0,
                        }
                    )
                    total += 1
                    if len(rows) == chunk:
                        c.execute(self.items.insert(), rows)
                        rows = []
                if rows:
                    c.execute(self.items.insert(), rows)
                c.execute(self.jobs.update().where(self.jobs.c.id == job_id).values(total=total))
        except _QueueFull:
            return None
        return job_id

    def _admission_lock_key(self) -> int:
        """A stable 63-bit key per table prefix, so deployments sharing a database do not contend."""
        return (
            int.from_bytes(hashlib.sha256(f"{self.prefix}jobs-admission".encode()).digest()[:8], "big") >> 1
        )

    def iter_item_rows(
        self, job_id: str, *, page: int = 1000, with_payload: bool = True
    ) -> Iterator[dict[str, Any]]:
        """Every item row in index order, read a page at a time by index (keyset, not OFFSET: a
        million rows stream in linear time and bounded memory)."""
        it = self.items
        cols = [
            it.c.idx,
            it.c.status,
            it.c.attempts,
            it.c.result,
            it.c.error,
            it.c.finished_at,
            it.c.lease_owner,
        ]
        if with_payload:
            cols.append(it.c.payload)
        last = -1
        while True:
            with self.engine.connect() as c:
                rows = (
                    c.execute(
                        sa.select(*cols)
                        .where(it.c.job_id == job_id, it.c.idx > last)
                        .order_by(it.c.idx)
                        .limit(page)
                    )
                    .mappings()
                    .all()
                )
            for r in rows:
                yield {
                    "index": r["idx"],
                    "status": r["status"],
                    "attempts": r["attempts"],
                    "payload": _load(r["payload"]) if with_payload else None,
                    "result": _load(r["result"]),
                    "error": r["error"],
                    "finished_at": r["finished_at"],
                    "lease_owner": r["lease_owner"],
                }
            if len(rows) < page:
                return
            last = rows[-1]["idx"]

    def active_jobs(self) -> int:
        with self.engine.connect() as c:
            return c.execute(
                sa.select(sa.func.count()).select_from(self.jobs).where(self.jobs.c.status.in_(ACTIVE))
            ).scalar_one()

    def get_job(self, job_id: str, *, with_request: bool = True) -> dict[str, Any] | None:
        with self.engine.connect() as c:
            row = c.execute(self.jobs.select().where(self.jobs.c.id == job_id)).mappings().first()
            if row is None:
                return None
            counts: dict[str, int] = {
                str(k): int(v)
                for k, v in c.execute(
                    sa.select(self.items.c.status, sa.func.count())
                    .where(self.items.c.job_id == job_id)
                    .group_by(self.items.c.status)
                ).all()
            }
            errors = c.execute(
                sa.select(self.items.c.idx, self.items.c.error)
                .where(self.items.c.job_id == job_id, self.items.c.error.is_not(None))
                .order_by(self.items.c.idx)
                .limit(20)
            ).all()
        job = _job_row(row, with_request)
        job["counts"] = {k: int(counts.get(k, 0)) for k in ("pending", "running", "done", "failed")}
        job["item_errors"] = [{"index": i, "error": e} for i, e in errors]
        return job

    def list_jobs(
        self,
        *,
        status: str | None = None,
        kind: str | None = None,
        limit: int = 50,
        offset: int = 0,
        owner: str | None = None,
        only_owner: bool = False,
    ) -> tuple[list[dict[str, Any]], int]:
        """Jobs newest first; with `only_owner`, just those `owner` created (None: created without a key)."""
        q = self.jobs.select()
        cq = sa.select(sa.func.count()).select_from(self.jobs)
        if only_owner:
            cond = self.jobs.c.owner.is_(None) if owner is None else self.jobs.c.owner == owner
            q, cq = q.where(cond), cq.where(cond)
        for col, val in ((self.jobs.c.status, status), (self.jobs.c.kind, kind)):
            if val is not None:
                q, cq = q.where(col == val), cq.where(col == val)
        with self.engine.connect() as c:
            rows = (
                c.execute(q.order_by(self.jobs.c.created_at.desc()).limit(limit).offset(offset))
                .mappings()
                .all()
            )
            total = c.execute(cq).scalar_one()
        return [_job_row(r, False) for r in rows], int(total)

    def cancel_job(self, job_id: str) -> bool:
        """Cancel a queued/running job; False if it already finished (or does not exist)."""
        with self.engine.begin() as c:
            res = c.execute(
                self.jobs.update()
                .where(self.jobs.c.id == job_id, self.jobs.c.status.in_(ACTIVE))
                .values(status="cancelled", finished_at=time.time())
            )
        return res.rowcount > 0

    def job_status(self, job_id: str) -> str | None:
        with self.engine.connect() as c:
            return c.execute(
                sa.select(self.jobs.c.status).where(self.jobs.c.id == job_id)
            ).scalar_one_or_none()

    # ---- items ----------------------------------------------------------------------------
    def claim(self, owner: str, lease_s: float, limit: int) -> list[Claimed]:
        """Lease up to `limit` free items of active jobs (oldest job first) for `owner`.

        Candidates are read first, then taken with one UPDATE per job guarded by the same
        "still free" condition, stamping them with this claim's expiry; the rows that carry
        our owner and that exact expiry afterwards are ours. PostgreSQL re-checks the guard
        on rows another replica changed meanwhile, SQLite serializes writers, so two
        replicas racing for an item never both get it.
        """
        now = time.time()
        until = now + lease_s
        it, jb = self.items, self.jobs
        free = sa.or_(it.c.status == "pending", sa.and_(it.c.status == "running", it.c.lease_until < now))
        with self.engine.connect() as c:
            cands = c.execute(
                sa.select(it.c.job_id, it.c.idx)
                .join(jb, jb.c.id == it.c.job_id)
                .where(jb.c.status.in_(ACTIVE), free)
                .order_by(jb.c.created_at, it.c.idx)
                .limit(limit)
            ).all()
        if not cands:
            return []
        by_job: dict[str, list[int]] = {}
        for job_id, idx in cands:
            by_job.setdefault(job_id, []).append(idx)
        claimed: list[Claimed] = []
        with self.engine.begin() as c:
            for job_id, idxs in by_job.items():
                c.execute(
                    it.update()
                    .where(it.c.job_id == job_id, it.c.idx.in_(idxs), free)
                    .values(
                        status="running", lease_owner=owner, lease_until=until, attempts=it.c.attempts + 1
                    )
                )
                rows = c.execute(
                    sa.select(it.c.idx, it.c.payload, it.c.attempts)
                    .where(
                        it.c.job_id == job_id,
                        it.c.idx.in_(idxs),
                        it.c.status == "running",
                        it.c.lease_owner == owner,
                        it.c.lease_until == until,
                    )
                    .order_by(it.c.idx)
                ).all()
                if rows:
                    c.execute(
                        jb.update()
                        .where(jb.c.id == job_id, jb.c.status == "queued")
                        .values(status="running", started_at=now)
                    )
                claimed += [Claimed(job_id, int(i), _load(p), int(a)) for i, p, a in rows]
        return claimed

    def renew(self, owner: str, keys: Iterable[tuple[str, int]], lease_s: float) -> set[tuple[str, int]]:
        """Extend leases this owner still holds (long items, e.g. training a space).

        Returns the keys still held: a key missing from it was re-claimed by another worker
        after its lease lapsed (a stalled replica), so this owner must not process it.
        """
        until = time.time() + lease_s
        held: set[tuple[str, int]] = set()
        by_job: dict[str, list[int]] = {}
        for job_id, idx in keys:
            by_job.setdefault(job_id, []).append(idx)
        it = self.items
        with self.engine.begin() as c:
            # Two statements per job, not one per item: a batch of 32 renews in one round trip each way.
            for job_id, idxs in by_job.items():
                mine = sa.and_(
                    it.c.job_id == job_id,
                    it.c.idx.in_(idxs),
                    it.c.lease_owner == owner,
                    it.c.status == "running",
                )
                c.execute(it.update().where(mine).values(lease_until=until))
                held.update((job_id, int(i)) for i in c.execute(sa.select(it.c.idx).where(mine)).scalars())
        return held

    def finish_item(
        self,
        owner: str,
        job_id: str,
        idx: int,
        *,
        result: Any = None,
        error: str | None = None,
        retry: bool = False,
    ) -> bool:
        """Record an item's outcome if `owner` still holds it; False if the lease was lost."""
        values: dict[str, Any] = {"lease_owner": owner if not retry else None, "lease_until": None}
        if retry:
            values.update(status="pending", error=error)
        elif error is not None:
            values.update(status="failed", error=error, finished_at=time.time())
        else:
            values.update(status="done", result=_dump(result), error=None, finished_at=time.time())
        with self.engine.begin() as c:
            res = c.execute(
                self.items.update()
                .where(
                    self.items.c.job_id == job_id,
                    self.items.c.idx == idx,
                    self.items.c.lease_owner == owner,
                    self.items.c.status == "running",
                )
                .values(**values)
            )
        return res.rowcount == 1

    def finish_items(self, owner: str, job_id: str, outcomes: Sequence[ItemOutcome]) -> set[int]:
        """Record a batch's outcomes in one transaction (one commit for the batch, not one per item).

        Same rule as `finish_item` per row: only rows `owner` still holds are written.
        Returns the indices written.
        """
        now = time.time()
        written: set[int] = set()
        it = self.items
        with self.engine.begin() as c:
            for o in outcomes:
                values: dict[str, Any] = {"lease_owner": owner if not o.retry else None, "lease_until": None}
                if o.retry:
                    values.update(status="pending", error=o.error)
                elif o.error is not None:
                    values.update(status="failed", error=o.error, finished_at=now)
                else:
                    values.update(status="done", result=_dump(o.result), error=None, finished_at=now)
                res = c.execute(
                    it.update()
                    .where(
                        it.c.job_id == job_id,
                        it.c.idx == o.idx,
                        it.c.lease_owner == owner,
                        it.c.status == "running",
                    )
                    .values(**values)
                )
                if res.rowcount == 1:
                    written.add(o.idx)
        return written

    def open_items(self, job_id: str) -> int:
        with self.engine.connect() as c:
            return c.execute(
                sa.select(sa.func.count())
                .select_from(self.items)
                .where(self.items.c.job_id == job_id, self.items.c.status.in_(("pending", "running")))
            ).scalar_one()

    def jobs_to_finalize(self) -> list[str]:
        """Running jobs whose items are all done or failed (a worker died before finalizing, say)."""
        it, jb = self.items, self.jobs
        open_q = sa.select(it.c.job_id).where(it.c.job_id == jb.c.id, it.c.status.in_(("pending", "running")))
        with self.engine.connect() as c:
            return [
                r[0] for r in c.execute(sa.select(jb.c.id).where(jb.c.status.in_(ACTIVE), ~sa.exists(open_q)))
            ]

    def item_rows(self, job_id: str, *, offset: int = 0, limit: int | None = None) -> list[dict[str, Any]]:
        q = self.items.select().where(self.items.c.job_id == job_id).order_by(self.items.c.idx).offset(offset)
        if limit is not None:
            q = q.limit(limit)
        with self.engine.connect() as c:
            rows = c.execute(q).mappings().all()
        return [
            {
                "index": r["idx"],
                "status": r["status"],
                "attempts": r["attempts"],
                "payload": _load(r["payload"]),
                "result": _load(r["result"]),
                "error": r["error"],
                "finished_at": r["finished_at"],
                "lease_owner": r["lease_owner"],
            }
            for r in rows
        ]

    def finalize_job(self, job_id: str, *, result: Any = None, error: str | None = None) -> bool:
        """Mark an active job succeeded (or failed); False if it was cancelled or already final."""
        status = "failed" if error is not None else "succeeded"
        with self.engine.begin() as c:
            res = c.execute(
                self.jobs.update()
                .where(self.jobs.c.id == job_id, self.jobs.c.status.in_(ACTIVE))
                .values(status=status, result=_dump(result), error=error, finished_at=time.time())
            )
        return res.rowcount == 1


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
        )
    }
    job["result"] = _load(row["result"])
    if with_request:
        job["request"] = _load(row["request"])
    return job
