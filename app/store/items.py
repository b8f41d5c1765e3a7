"""Job items: leased claims, renewals, outcomes, and what is left to finalize."""

from __future__ import annotations

import time
from collections.abc import Iterable, Sequence
from typing import Any

import sqlalchemy as sa

from app.store.tables import (
    ACTIVE,
    Claimed,
    ItemOutcome,
    Tables,
    _dump,
    _load,
)


class ItemStore(Tables):
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
