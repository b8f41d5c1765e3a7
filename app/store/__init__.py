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

from app.store.calibrations import CalibrationStore
from app.store.items import ItemStore
from app.store.jobs import JobStore
from app.store.registry import RegistryStore
from app.store.tables import ACTIVE, FINAL, Claimed, ItemOutcome


class Store(RegistryStore, JobStore, ItemStore, CalibrationStore):
    """All persistence for the service; thread-safe (one engine, short transactions)."""


__all__ = ["ACTIVE", "FINAL", "Claimed", "ItemOutcome", "Store"]
