"""Bounded costs a caller can cause (issue 20): the calibration budget and backoff that replicas share
through the store, an effects job that must not call mostly-failed texts a success, and cancel.

Store tests run against real SQLite and real PostgreSQL, two `Store` objects standing for two
replicas; the service tests run a real server (uvicorn) and a real misbehaving classifier server.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from app.jobs.handlers import summarize
from app.schemas import EffectsParams
from app.store import Store

PG_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/test"


@pytest.fixture(params=["sqlite", "postgresql"])
def replicas(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[Store, Store]]:
    """Two stores on one database: what two replicas of the service share."""
    if request.param == "sqlite":
        url, prefix = f"sqlite:///{tmp_path / 'jobs.sqlite'}", "t_"
    else:
        url, prefix = PG_URL, f"t{uuid.uuid4().hex[:10]}_"
    a, b = Store(url, prefix), Store(url, prefix)
    yield a, b
    b.close()
    a.drop_all()


def test_calibration_budget_is_shared_all_or_nothing_and_exact_under_races(
    replicas: tuple[Store, Store],
) -> None:
    a, b = replicas
    assert a.charge_calibration("clf", 60, budget=100, window_s=3600)[0]
    assert not b.charge_calibration("clf", 50, budget=100, window_s=3600)[0]  # 110 > 100: nothing taken
    assert b.calibration_budget_left("clf", 100, 3600)[0] == 40
    assert a.charge_calibration("other", 100, budget=100, window_s=3600)[0]  # per classifier
    # 40 threads on two replicas race for 40 texts, 3 at a time: exactly 13 win, never more.
    wins: list[bool] = []
    lock = threading.Lock()

    def take(s: Store) -> None:
        ok = s.charge_calibration("clf", 3, budget=100, window_s=3600)[0]
        with lock:
            wins.append(ok)

    threads = [threading.Thread(target=take, args=(s,)) for s in (a, b) * 20]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sum(wins) == 13
    assert a.calibration_budget_left("clf", 100, 3600)[0] == 1


def test_calibration_budget_window_rolls_over(replicas: tuple[Store, Store]) -> None:
    a, b = replicas
    assert a.charge_calibration("clf", 100, budget=100, window_s=0.5)[0]
    assert not b.charge_calibration("clf", 1, budget=100, window_s=0.5)[0]
    time.sleep(0.6)
    assert b.charge_calibration("clf", 100, budget=100, window_s=0.5)[0]


def test_one_replica_claims_an_auto_calibration_and_failures_back_off_for_all(
    replicas: tuple[Store, Store],
) -> None:
    a, b = replicas
    assert a.claim_calibration("d", "clf")
    assert not b.claim_calibration("d", "clf")  # held while its job is being created
    job = a.create_job("calibration", {"domain_id": "d", "classifier": "clf"}, [{}])
    a.set_calibration_job("d", "clf", job)
    assert not b.claim_calibration("d", "clf", hold_s=0)  # its job is queued
    retry_at = b.calibration_outcome("d", "clf", error="boom", backoff_s=30, backoff_max_s=100)
    a.finalize_job(job, error="boom")
    assert retry_at is not None and retry_at > time.time() + 25
    assert not a.claim_calibration("d", "clf", hold_s=0)  # backing off, on every replica
    assert not b.claim_calibration("d", "clf", hold_s=0)
    # Doubling, capped.
    second = a.calibration_outcome("d", "clf", error="boom", backoff_s=30, backoff_max_s=100)
    third = a.calibration_outcome("d", "clf", error="boom", backoff_s=30, backoff_max_s=100)
    assert second is not None and third is not None
    assert 55 < second - time.time() <= 60 and 95 < third - time.time() <= 100
    # A budget deferral is never shortened by a shorter backoff.
    later = time.time() + 5000
    b.calibration_defer("d", "clf", later)
    assert a.calibration_outcome("d", "clf", error="x", backoff_s=1, backoff_max_s=1) == later
    # Success clears the backoff.
    assert a.calibration_outcome("d", "clf", error=None) is None
    assert b.claim_calibration("d", "clf", hold_s=0)
    assert a.calibration_state_of("d", "clf")["failures"] == 0


def _rows(done: int, failed: int) -> list[dict[str, Any]]:
    rows = []
    for i in range(done):
        icace = [0.1 + 0.001 * i, -0.1 - 0.001 * i]
        result = {"source": "Positive", "status": "done", "labels": ["neg", "pos"], "icace": icace}
        rows.append({"index": i, "status": "done", "result": result})
    rows += [{"index": done + i, "status": "failed", "result": None} for i in range(failed)]
    return rows


PARAMS = EffectsParams.model_validate({"intervention": {"concept": "food", "target": "Negative"}})


def test_an_effects_result_over_mostly_failed_texts_is_refused() -> None:
    with pytest.raises(ValueError, match="192 of 200 texts failed"):
        summarize(PARAMS, _rows(8, 192), max_failed_fraction=0.1)
    ok = summarize(PARAMS, _rows(198, 2), max_failed_fraction=0.1)
    assert ok["summary"]["n_used"] == 198 and ok["summary"]["n_failed"] == 2
    assert ok["warnings"] and "2 of 200 texts failed" in ok["warnings"][0]
    clean = summarize(PARAMS, _rows(200, 0), max_failed_fraction=0.1)
    assert clean["summary"]["n_used"] == 200 and clean["warnings"] == []


def calls(srv_url: str, key: str) -> dict[str, Any]:
    return httpx.get(f"{srv_url}/calls/{key}", timeout=10).json()
