"""Jobs: admission (exact queue limit), reads, listing by owner, cancellation."""

from __future__ import annotations

import hashlib
import time
import uuid
from collections.abc import Iterable, Iterator
from typing import Any

import sqlalchemy as sa

from app.store.tables import (
    ACTIVE,
    ITEM_STATES,
    Tables,
    _dump,
    _job_row,
    _load,
    _QueueFull,
)


class JobStore(Tables):
    def create_job(
        self,
        kind: str,
        request: dict[str, Any],
        payloads: Iterable[Any],
        *,
        limit: int | None = None,
        owner: str | None = None,
        chunk: int = 1000,
        queued_by: str | None = None,
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
                        queued_by=queued_by,
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
            counts = self._counts(c, [job_id])[job_id]
            errors = c.execute(
                sa.select(self.items.c.idx, self.items.c.error)
                .where(self.items.c.job_id == job_id, self.items.c.error.is_not(None))
                .order_by(self.items.c.idx)
                .limit(20)
            ).all()
        job = _job_row(row, with_request)
        job["counts"] = counts
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
            counts = self._counts(c, [r["id"] for r in rows])
        jobs = [_job_row(r, False) for r in rows]
        for job in jobs:
            job["counts"] = counts.get(job["id"], dict.fromkeys(ITEM_STATES, 0))
        return jobs, int(total)

    def _counts(self, c: sa.Connection, job_ids: list[str]) -> dict[str, dict[str, int]]:
        """Item counts per status of each job, in one grouped query (a listing's progress, as GET gives it)."""
        if not job_ids:
            return {}
        out = {j: dict.fromkeys(ITEM_STATES, 0) for j in job_ids}
        for job_id, status, n in c.execute(
            sa.select(self.items.c.job_id, self.items.c.status, sa.func.count())
            .where(self.items.c.job_id.in_(job_ids))
            .group_by(self.items.c.job_id, self.items.c.status)
        ).all():
            if status in out[job_id]:
                out[job_id][status] = int(n)
        return out

    def set_job_stages(self, job_id: str, snapshot: dict[str, Any] | None) -> None:
        """Record where a running job's item is (a Stages snapshot), for readers in any replica."""
        with self.engine.begin() as c:
            c.execute(self.jobs.update().where(self.jobs.c.id == job_id).values(stages=_dump(snapshot)))

    def cancel_job(self, job_id: str) -> bool:
        """Cancel a queued/running job; False if it already finished (or does not exist)."""
        with self.engine.begin() as c:
            res = c.execute(
                self.jobs.update()
                .where(self.jobs.c.id == job_id, self.jobs.c.status.in_(ACTIVE))
                .values(status="cancelled", finished_at=time.time())
            )
        return res.rowcount > 0

    def active_jobs_on(self, kind: str, domain_id: str) -> list[str]:
        """Ids of queued/running jobs of `kind` whose request names `domain_id` (e.g. a domain's
        calibrations, cancelled when the domain is deleted)."""
        with self.engine.connect() as c:
            rows = c.execute(
                sa.select(self.jobs.c.id, self.jobs.c.request).where(
                    self.jobs.c.kind == kind, self.jobs.c.status.in_(ACTIVE)
                )
            ).all()
        return [job_id for job_id, request in rows if (_load(request) or {}).get("domain_id") == domain_id]

    def job_status(self, job_id: str) -> str | None:
        with self.engine.connect() as c:
            return c.execute(
                sa.select(self.jobs.c.status).where(self.jobs.c.id == job_id)
            ).scalar_one_or_none()
