"""Job workers: threads that lease items from the store, run them, and finalize jobs.

Each job kind has a handler with two steps: `process` one item (one text of an effects
job, the single training step of a space job) and `finalize` the job from all item
results (CaCE with its bootstrap CI, say). A handler that also has `process_batch` gets
each claim's items of one job at once (effects: one encoder call, one search, one
classifier call for the batch); a failing batch is split in halves until the items that fail
are alone, and one attempt at a claim has a wall-clock bound (`item_timeout_s`).
Items are leased, so a crash (SIGKILL, OOM, a lost replica) costs at most the items in flight: their leases expire and any worker,
here or in another replica, picks them up. Finished items are never redone because
`finish_item` only counts while the lease is held, and `claim` never hands out done items.
"""

from __future__ import annotations

import logging
import threading
import time
import traceback
from collections.abc import Iterable, Mapping
from typing import Any, Protocol

from app.store import Claimed, ItemOutcome, Store
from explainers import outbound

log = logging.getLogger("cace.jobs")


class RetryableError(RuntimeError):
    """An item failed for a reason worth another attempt (an upstream outage)."""


class JobHandler(Protocol):
    """What a job kind must provide."""

    def process(self, job_id: str, request: dict[str, Any], payload: Any, index: int) -> Any:
        """Do one item; return a JSON-able result. Raise RetryableError to try it again later."""
        ...

    def finalize(self, job_id: str, request: dict[str, Any], rows: Iterable[dict[str, Any]]) -> Any:
        """Combine all item rows (ordered by index) into the job's result."""
        ...


class BatchJobHandler(JobHandler, Protocol):
    """A job kind that can run many items at once (each stage once per batch)."""

    def process_batch(self, job_id: str, request: dict[str, Any], items: list[tuple[Any, int]]) -> list[Any]:
        """Results for (payload, index) items, in order; raise RetryableError to retry the whole batch,
        any other error to have the worker run the items one by one through `process`."""
        ...


class Workers:
    """A small pool of threads sharing one lease owner name (this replica)."""

    def __init__(
        self,
        store: Store,
        handlers: Mapping[str, JobHandler],
        *,
        owner: str,
        threads: int = 2,
        lease_s: float = 30.0,
        batch: int = 8,
        poll_s: float = 0.25,
        max_attempts: int = 3,
        item_timeout_s: float | None = None,
    ) -> None:
        self.store = store
        self.handlers = dict(handlers)
        self.owner = owner
        self.n_threads = max(0, threads)
        self.lease_s = lease_s
        self.batch = batch
        self.poll_s = poll_s
        self.max_attempts = max_attempts
        # Wall-clock bound of one attempt at a claim's items (None: only the outbound clients' own).
        self.item_timeout_s = item_timeout_s
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._held: set[tuple[str, int]] = set()
        self._held_lock = threading.Lock()
        self._requests: dict[str, tuple[str, dict[str, Any]]] = {}
        self.processed = 0

    def start(self) -> None:
        for i in range(self.n_threads):
            t = threading.Thread(target=self._loop, name=f"cace-worker-{i}", daemon=True)
            t.start()
            self._threads.append(t)
        if self.n_threads:
            hb = threading.Thread(target=self._heartbeat, name="cace-lease-heartbeat", daemon=True)
            hb.start()
            self._threads.append(hb)

    def stop(self, timeout: float = 10.0) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(timeout)
        self._threads.clear()

    # ---- internals ------------------------------------------------------------------------
    def _job(self, job_id: str) -> tuple[str, dict[str, Any]] | None:
        if job_id not in self._requests:
            job = self.store.get_job(job_id)
            if job is None:
                return None
            self._requests[job_id] = (job["kind"], job["request"])
        return self._requests[job_id]

    def _heartbeat(self) -> None:
        while not self._stop.wait(max(0.25, self.lease_s / 4)):
            with self._held_lock:
                keys = list(self._held)
            if keys:
                try:
                    self.store.renew(self.owner, keys, self.lease_s)
                except Exception:  # the store may blink; the next beat retries
                    log.exception("lease renewal failed")

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                claimed = self.store.claim(self.owner, self.lease_s, self.batch)
                if not claimed:
                    for job_id in self.store.jobs_to_finalize():
                        self._finalize(job_id)
                    self._stop.wait(self.poll_s)
                    continue
                with self._held_lock:  # leases of queued items are renewed too
                    self._held.update((c.job_id, c.idx) for c in claimed)
                touched: set[str] = set()
                by_job: dict[str, list[Claimed]] = {}
                for c in claimed:
                    by_job.setdefault(c.job_id, []).append(c)
                for job_id, items in by_job.items():
                    if self._stop.is_set():
                        break  # leave the rest to expire and be re-claimed
                    self._run_batch(job_id, items, self.store.job_status(job_id) in ("queued", "running"))
                    touched.add(job_id)
                # Counting a job's open items costs a scan of them: only worth it when the claim came back
                # short (the queue is draining). A full claim means more work; an idle loop's
                # jobs_to_finalize() catches a job whose last items were claimed in full.
                if len(claimed) < self.batch:
                    for job_id in touched:
                        if self.store.open_items(job_id) == 0:
                            self._finalize(job_id)
            except Exception:
                log.exception("job worker loop error")
                self._stop.wait(1.0)

    def _run_batch(self, job_id: str, items: list[Claimed], active: bool) -> None:
        """Run one job's claimed items as one batch when its handler can (`process_batch`).

        A batch that fails is split in halves and each half tried on its own (`_bisect`), so a
        text the upstream chokes on, or a flapping upstream, fails only the items it fails on
        and the others finish now. The whole attempt, splits and every outbound retry included,
        ends by `item_timeout_s` (the outbound deadline); items it did not reach go back to
        pending. Outcomes are written in one transaction, each only if its lease is still held.
        """
        job = self._job(job_id)
        handler = self.handlers.get(job[0]) if job else None
        process_batch = getattr(handler, "process_batch", None)
        if job is None or not active or process_batch is None or len(items) == 1:
            for item in items:
                if self._stop.is_set():
                    break
                self._run(item, active)
            return
        keys = [(i.job_id, i.idx) for i in items]
        held = self.store.renew(self.owner, keys, self.lease_s)
        if len(held) < len(keys):
            # As in _run: items whose lease lapsed and were taken over belong to their new holder.
            log.warning(
                "job %s: %d items lost their lease before the batch started; left to their new holder",
                job_id,
                len(keys) - len(held),
            )
        run = [i for i in items if (i.job_id, i.idx) in held]
        try:
            if not run:
                return
            with outbound.deadline(self.item_timeout_s):
                outcomes = self._bisect(job_id, job[1], process_batch, run)
            written = self.store.finish_items(self.owner, job_id, outcomes)
            self.processed += sum(1 for o in outcomes if o.idx in written and o.error is None)
        finally:
            with self._held_lock:
                self._held.difference_update(keys)

    def _bisect(
        self, job_id: str, request: dict[str, Any], process_batch: Any, run: list[Claimed]
    ) -> list[ItemOutcome]:
        """Outcomes of `run` as one batch; on failure, of its two halves, each split again if it fails.

        A single item's RetryableError sends it back to pending (until max_attempts), any other
        error fails it. Once the attempt's deadline has passed (or the worker stops) the items
        not yet run go back to pending untried.
        """
        left = outbound.remaining()
        if self._stop.is_set() or (left is not None and left <= 0):
            why = (
                "worker stopping"
                if self._stop.is_set()
                else f"item deadline ({self.item_timeout_s:g} s) passed"
            )
            return [ItemOutcome(i.idx, error=why, retry=i.attempts < self.max_attempts) for i in run]
        try:
            results = process_batch(job_id, request, [(i.payload, i.idx) for i in run])
            if len(results) != len(run):
                raise RuntimeError(f"process_batch returned {len(results)} results for {len(run)} items")
            return [ItemOutcome(i.idx, result=r) for i, r in zip(run, results, strict=True)]
        except Exception as e:
            if len(run) == 1:
                item = run[0]
                if isinstance(e, RetryableError):
                    return [ItemOutcome(item.idx, error=str(e), retry=item.attempts < self.max_attempts)]
                log.warning("job %s item %s failed: %s", job_id, item.idx, e)
                return [ItemOutcome(item.idx, error=f"{type(e).__name__}: {e}")]
            log.warning(
                "job %s: batch of %d failed (%s: %s); splitting it",
                job_id,
                len(run),
                type(e).__name__,
                e,
            )
            mid = len(run) // 2
            return self._bisect(job_id, request, process_batch, run[:mid]) + self._bisect(
                job_id, request, process_batch, run[mid:]
            )

    def _run(self, item: Claimed, active: bool = True) -> None:
        key = (item.job_id, item.idx)
        job = self._job(item.job_id)
        if job is None or not active:
            # Cancelled meanwhile: hand the item back unprocessed (items of final jobs are never claimed).
            self.store.finish_item(self.owner, item.job_id, item.idx, retry=True)
            with self._held_lock:
                self._held.discard(key)
            return
        kind, request = job
        handler = self.handlers.get(kind)
        if not self.store.renew(self.owner, [key], self.lease_s):
            # The lease lapsed while the item waited in this batch (a slow item before it, a
            # stalled store) and another worker took it: running it here would duplicate work.
            log.warning("job %s item %s: lease lost before it started; left to its new holder", *key)
            with self._held_lock:
                self._held.discard(key)
            return
        try:
            if handler is None:
                raise ValueError(f"no handler for job kind {kind!r} in this server")
            # Items of batch kinds are small units with a wall-clock bound; a build is one long item.
            bounded = getattr(handler, "process_batch", None) is not None
            with outbound.deadline(self.item_timeout_s if bounded else None):
                result = handler.process(item.job_id, request, item.payload, item.idx)
            self.store.finish_item(self.owner, item.job_id, item.idx, result=result)
            self.processed += 1
        except RetryableError as e:
            retry = item.attempts < self.max_attempts
            self.store.finish_item(self.owner, item.job_id, item.idx, error=str(e), retry=retry)
        except Exception as e:
            log.warning("job %s item %s failed: %s", item.job_id, item.idx, e)
            msg = f"{type(e).__name__}: {e}"
            if not str(e):
                msg += " " + traceback.format_exc(limit=2)
            self.store.finish_item(self.owner, item.job_id, item.idx, error=msg)
        finally:
            with self._held_lock:
                self._held.discard(key)

    def _finalize(self, job_id: str) -> None:
        job = self._job(job_id)
        if job is None:
            return
        kind, request = job
        handler = self.handlers.get(kind)
        if handler is None:
            return
        # A handler that reads its rows once gets them streamed (a million-text job stays in bounded memory).
        streams = getattr(handler, "finalize_streams", False)
        rows = (
            self.store.iter_item_rows(job_id, with_payload=False) if streams else self.store.item_rows(job_id)
        )
        try:
            result = handler.finalize(job_id, request, rows)
        except Exception as e:
            log.exception("finalizing job %s failed", job_id)
            self.store.finalize_job(job_id, error=f"{type(e).__name__}: {e}")
            return
        self.store.finalize_job(job_id, result=result)
        self._requests.pop(job_id, None)


def wait_for(store: Store, job_id: str, timeout: float = 60.0, poll: float = 0.05) -> dict[str, Any]:
    """Block until a job is final (used by in-process callers and tests)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = store.get_job(job_id)
        if job and job["status"] in ("succeeded", "failed", "cancelled"):
            return job
        time.sleep(poll)
    raise TimeoutError(f"job {job_id} not final after {timeout}s")
