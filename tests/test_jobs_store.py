"""The durable job store and workers, against real SQLite and real PostgreSQL.

What must hold for restarts and replicas: an item is leased by one owner at a time,
a dead owner's leases expire and are taken over, finished items are never redone, and
the queue bound is enforced in the same transaction that creates a job.
"""

from __future__ import annotations

import threading
import time
import uuid
from pathlib import Path
from typing import Any

import pytest

from app.jobs.worker import RetryableError, Workers, wait_for
from app.store import ItemOutcome, Store

PG_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/test"


@pytest.fixture(
    params=["sqlite", pytest.param("postgresql", marks=pytest.mark.server)]
)  # PostgreSQL: a server
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Store:
    if request.param == "sqlite":
        s = Store(f"sqlite:///{tmp_path / 'jobs.sqlite'}", prefix="t_")
    else:
        s = Store(PG_URL, prefix=f"t{uuid.uuid4().hex[:10]}_")
    yield s
    s.drop_all()


class SquareHandler:
    """A real job kind for these tests: squares numbers and sums them, recording what it ran."""

    def __init__(self, fail_on: set[int] | None = None, flaky_on: set[int] | None = None) -> None:
        self.calls: list[tuple[str, int]] = []
        self.fail_on = fail_on or set()
        self.flaky_on = set(flaky_on or ())
        self.lock = threading.Lock()

    def process(self, job_id: str, request: dict[str, Any], payload: Any, index: int) -> Any:
        with self.lock:
            self.calls.append((job_id, index))
        if index in self.fail_on:
            raise ValueError(f"bad item {index}")
        if index in self.flaky_on:
            self.flaky_on.discard(index)
            raise RetryableError("upstream blinked")
        return {"sq": payload["x"] ** 2}

    def finalize(self, job_id: str, request: dict[str, Any], rows: list[dict[str, Any]]) -> Any:
        return {
            "sum": sum(r["result"]["sq"] for r in rows if r["status"] == "done"),
            "failed": [r["index"] for r in rows if r["status"] == "failed"],
        }


def test_two_owners_never_share_an_item(store: Store) -> None:
    job = store.create_job("square", {}, [{"x": i} for i in range(60)])
    seen: dict[int, str] = {}
    dupes: list[int] = []
    lock = threading.Lock()

    def owner(name: str) -> None:
        while True:
            got = store.claim(name, 30.0, 4)
            if not got:
                return
            for c in got:
                with lock:
                    if c.idx in seen:
                        dupes.append(c.idx)
                    seen[c.idx] = name
                assert store.finish_item(name, job, c.idx, result={"sq": c.payload["x"] ** 2})

    threads = [threading.Thread(target=owner, args=(f"replica-{i}",)) for i in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert dupes == []
    assert sorted(seen) == list(range(60))
    assert store.get_job(job)["counts"] == {"pending": 0, "running": 0, "done": 60, "failed": 0}
    assert store.jobs_to_finalize() == [job]


def test_expired_lease_is_taken_over_and_the_old_owner_loses_it(store: Store) -> None:
    job = store.create_job("square", {}, [{"x": 1}, {"x": 2}])
    first = store.claim("dead", 2.0, 10)
    assert [c.idx for c in first] == [0, 1]
    assert store.claim("alive", 30.0, 10) == []  # leases still valid
    time.sleep(2.1)
    second = store.claim("alive", 30.0, 10)
    assert [(c.idx, c.attempts) for c in second] == [(0, 2), (1, 2)]
    assert store.renew("dead", [(job, 0), (job, 1)], 30.0) == set()  # the old owner learns it lost both
    assert store.renew("alive", [(job, 0), (job, 1)], 30.0) == {(job, 0), (job, 1)}
    assert not store.finish_item("dead", job, 0, result={"sq": 1})  # too late
    assert store.finish_item("alive", job, 0, result={"sq": 1})


def test_a_stalled_worker_does_not_run_an_item_another_worker_took_over(store: Store) -> None:
    calls: list[int] = []

    class Square:
        def process(self, job_id, request, payload, idx):
            calls.append(idx)
            return {"sq": payload["x"] ** 2}

        def finalize(self, job_id, request, rows):
            return {}

    job = store.create_job("square", {}, [{"x": 1}, {"x": 2}])
    stalled = Workers(store, {"square": Square()}, owner="stalled", threads=0, lease_s=1.0)
    batch = store.claim("stalled", 1.0, 10)
    time.sleep(1.1)  # its lease lapses while item 1 waits behind a slow item 0
    taken = store.claim("other", 30.0, 1)
    assert [c.idx for c in taken] == [0]
    stalled._run(batch[0])  # item 0 now belongs to "other": not run here
    stalled._run(batch[1])  # item 1 lapsed but nobody took it: still ours to run
    assert calls == [1]
    rows = store.item_rows(job)
    assert rows[0]["status"] == "running" and rows[0]["lease_owner"] == "other"
    assert rows[1]["status"] == "done" and rows[1]["lease_owner"] == "stalled"


def test_queue_bound_and_cancel(store: Store) -> None:
    a = store.create_job("square", {}, [{"x": 1}], limit=2)
    b = store.create_job("square", {}, [{"x": 2}], limit=2)
    assert a and b
    assert store.create_job("square", {}, [{"x": 3}], limit=2) is None
    assert store.cancel_job(a)
    assert not store.cancel_job(a)  # already final
    assert store.create_job("square", {}, [{"x": 3}], limit=2) is not None
    claimed = store.claim("w", 30.0, 10)
    assert a not in {c.job_id for c in claimed}  # a cancelled job's items are never handed out


def test_workers_resume_without_redoing_finished_items(store: Store) -> None:
    job = store.create_job("square", {}, [{"x": i} for i in range(20)])
    # A replica that died: it finished items 0-4 and held leases on 5-7 when it was killed.
    for c in store.claim("dead", 0.5, 8):
        if c.idx < 5:
            store.finish_item("dead", job, c.idx, result={"sq": c.payload["x"] ** 2})
    handler = SquareHandler()
    workers = Workers(
        store, {"square": handler}, owner="restarted", threads=2, lease_s=5, batch=3, poll_s=0.05
    )
    workers.start()
    try:
        final = wait_for(store, job, timeout=30)
    finally:
        workers.stop()
    assert final["status"] == "succeeded"
    assert final["result"] == {"sum": sum(i * i for i in range(20)), "failed": []}
    assert sorted(i for _, i in handler.calls) == list(range(5, 20))  # 0-4 were not redone
    rows = store.item_rows(job)
    assert all(r["lease_owner"] == "dead" for r in rows[:5])
    assert [r["attempts"] for r in rows[5:8]] == [2, 2, 2]


def test_failures_are_recorded_and_retryable_errors_retried(store: Store) -> None:
    job = store.create_job("square", {}, [{"x": i} for i in range(6)])
    handler = SquareHandler(fail_on={2}, flaky_on={4})
    workers = Workers(store, {"square": handler}, owner="w", threads=1, lease_s=5, batch=2, poll_s=0.05)
    workers.start()
    try:
        final = wait_for(store, job, timeout=30)
    finally:
        workers.stop()
    assert final["status"] == "succeeded"
    assert final["result"] == {"sum": 0 + 1 + 9 + 16 + 25, "failed": [2]}
    assert final["counts"]["failed"] == 1
    assert final["item_errors"][0]["index"] == 2 and "bad item 2" in final["item_errors"][0]["error"]
    assert handler.calls.count((job, 4)) == 2  # retried once after RetryableError


class BatchSquareHandler(SquareHandler):
    """SquareHandler with `process_batch`: records each batch; a bad item fails any batch holding it,
    a flaky item makes the batch holding it fail once with a retryable error."""

    def __init__(self, fail_on: set[int] | None = None, flaky_on: set[int] | None = None) -> None:
        super().__init__(fail_on, flaky_on)
        self.batches: list[list[int]] = []

    def process_batch(self, job_id: str, request: dict[str, Any], items: list[tuple[Any, int]]) -> list[Any]:
        idxs = [i for _, i in items]
        with self.lock:
            self.batches.append(idxs)
        if self.fail_on & set(idxs):
            raise ValueError(f"bad items in {idxs}")
        flaky = self.flaky_on & set(idxs)
        if flaky:
            self.flaky_on -= flaky
            raise RetryableError("upstream blinked")
        return [{"sq": p["x"] ** 2} for p, _ in items]


def test_a_failed_batch_is_split_until_the_bad_item_fails_alone(store: Store) -> None:
    job = store.create_job("square", {}, [{"x": i} for i in range(24)])
    handler = BatchSquareHandler(fail_on={5}, flaky_on={13})
    workers = Workers(store, {"square": handler}, owner="w", threads=1, lease_s=5, batch=8, poll_s=0.05)
    workers.start()
    try:
        final = wait_for(store, job, timeout=30)
    finally:
        workers.stop()
    assert final["status"] == "succeeded"
    assert final["result"] == {"sum": sum(i * i for i in range(24) if i != 5), "failed": [5]}
    # The claim's items went to the handler together; the failing batch was halved, and halved
    # again, until item 5 failed alone: its batch mates finished in the same attempt.
    assert handler.batches[:7] == [
        list(range(8)),
        [0, 1, 2, 3],
        [4, 5, 6, 7],
        [4, 5],
        [4],
        [5],
        [6, 7],
    ]
    # A batch that blinked (a retryable error) is split too, and its halves finish at once.
    assert [b for b in handler.batches if 13 in b] == [list(range(8, 16)), [12, 13, 14, 15]]
    assert handler.calls == []  # never one call per item
    rows = store.item_rows(job)
    assert [r["attempts"] for r in rows] == [1] * 24
    assert final["item_errors"] == [{"index": 5, "error": "ValueError: bad items in [5]"}]


def test_batch_skips_items_whose_lease_was_taken_over(store: Store) -> None:
    job = store.create_job("square", {}, [{"x": i} for i in range(4)])
    handler = BatchSquareHandler()
    stalled = Workers(store, {"square": handler}, owner="stalled", threads=0, lease_s=1.0)
    batch = store.claim("stalled", 1.0, 10)
    time.sleep(1.1)
    assert [c.idx for c in store.claim("other", 30.0, 2)] == [0, 1]
    stalled._run_batch(job, batch, True)
    assert handler.batches == [[2, 3]]  # 0 and 1 belong to "other" now
    rows = store.item_rows(job)
    assert [(r["status"], r["lease_owner"]) for r in rows] == [
        ("running", "other"),
        ("running", "other"),
        ("done", "stalled"),
        ("done", "stalled"),
    ]
    assert not store.finish_items("stalled", job, [ItemOutcome(0, result={"sq": 0})])  # not its item any more


def test_a_cancelled_job_hands_its_batch_back_unprocessed(store: Store) -> None:
    job = store.create_job("square", {}, [{"x": i} for i in range(4)])
    handler = BatchSquareHandler()
    workers = Workers(store, {"square": handler}, owner="w", threads=0, lease_s=30)
    batch = store.claim("w", 30.0, 10)
    assert store.cancel_job(job)
    workers._run_batch(job, batch, False)
    assert handler.batches == [] and handler.calls == []
    assert {r["status"] for r in store.item_rows(job)} == {"pending"}


def test_a_streamed_job_is_inserted_in_chunks_and_all_or_nothing(store: Store) -> None:
    job = store.create_job("square", {}, ({"x": i} for i in range(2500)), chunk=1000)
    assert store.get_job(job)["total"] == 2500
    rows = list(store.iter_item_rows(job, page=700))
    assert [r["index"] for r in rows] == list(range(2500))
    assert rows[1234]["payload"] == {"x": 1234}
    assert next(store.iter_item_rows(job, with_payload=False))["payload"] is None

    def bad_upload():
        for i in range(1500):
            yield {"x": i}
        raise ValueError("line 1501 is not JSON")

    before, _ = store.list_jobs()
    with pytest.raises(ValueError, match="1501"):
        store.create_job("square", {}, bad_upload(), chunk=1000)
    after, _ = store.list_jobs()
    assert [j["id"] for j in after] == [j["id"] for j in before]  # nothing of the failed upload was kept
    assert store.create_job("square", {}, iter([{"x": 1}]), limit=1) is None  # the queue bound holds


@pytest.mark.slow  # a large bootstrap
def test_blockwise_bootstrap_equals_one_index_matrix() -> None:
    import numpy as np

    from explainers.estimate import cace

    arr = np.random.default_rng(3).normal(size=(50_001, 3))
    got = cace(arr, seed=9, n_boot=200)
    rng = np.random.default_rng(9)
    boots = arr[rng.integers(0, len(arr), size=(200, len(arr)))].mean(axis=1)
    low, high = np.quantile(boots, [0.025, 0.975], axis=0)
    assert np.allclose(got.ci_low, low, rtol=0, atol=1e-12) and np.allclose(
        got.ci_high, high, rtol=0, atol=1e-12
    )


def test_rows_of_a_report_job_stream_without_icace() -> None:
    """A report's items carry labels but no per-text ICaCE: the rows endpoints must not break on them
    (the schema fuzzer found rows.jsonl cut mid-stream by a KeyError)."""
    from app.jobs.handlers import row_out

    row = {"index": 0, "status": "done", "attempts": 1, "result": {"labels": ["neg", "pos"]}, "payload": {}}
    out = row_out(row)
    assert out["icace"] is None and out["base_prediction"] is None and out["status"] == "done"
