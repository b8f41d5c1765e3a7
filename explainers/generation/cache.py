"""On-disk cache of LLM generations, keyed by (backend, model, prompt, sampling parameters).

Generation dominates the cost of an explanation (seconds to minutes per text on CPU), so a
benchmark that is re-run, resumed after a crash, or scored against a second classifier
must not ask the LLM again. SQLite gives a single file, safe across threads (one
connection per call) and processes (WAL), with no server to run.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import sqlite3
import threading
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

from explainers.generation.backends import Completion


def cache_key(
    kind: str,
    model: str,
    messages: Sequence[Mapping[str, str]],
    *,
    n: int,
    temperature: float,
    max_tokens: int,
    seed: int | None,
) -> str:
    """A stable hash of everything that determines the samples a request can return."""
    payload = {
        "kind": kind,
        "model": model,
        "messages": [{"role": m["role"], "content": m["content"]} for m in messages],
        "n": n,
        "temperature": round(float(temperature), 6),
        "max_tokens": int(max_tokens),
        "seed": seed,
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True, ensure_ascii=False).encode()).hexdigest()


class GenerationCache:
    """get/put `Completion`s by key; the stored completion keeps its original tokens and time."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        with self._connect() as db:
            db.execute("PRAGMA journal_mode=WAL")
            db.execute(
                "CREATE TABLE IF NOT EXISTS generations (key TEXT PRIMARY KEY, model TEXT, value TEXT NOT NULL,"
                " created REAL DEFAULT (unixepoch('subsec')))"
            )

    @contextlib.contextmanager
    def _connect(self) -> Iterator[sqlite3.Connection]:
        """A short-lived connection per operation: commits on success, always closes."""
        db = sqlite3.connect(self.path, timeout=30.0)
        try:
            with db:
                yield db
        finally:
            db.close()

    def get(self, key: str) -> Completion | None:
        with self._connect() as db:
            row = db.execute("SELECT value FROM generations WHERE key = ?", (key,)).fetchone()
        if row is None:
            return None
        return Completion(**json.loads(row[0]))

    def put(self, key: str, model: str, completion: Completion) -> None:
        value = json.dumps(asdict(completion), ensure_ascii=False)
        with self._lock, self._connect() as db:
            db.execute(
                "INSERT OR REPLACE INTO generations (key, model, value) VALUES (?, ?, ?)", (key, model, value)
            )

    def get_value(self, key: str) -> Any | None:
        """A JSON value stored with `put_value` (answer-position logprobs, parsed labels), or None."""
        with self._connect() as db:
            row = db.execute("SELECT value FROM generations WHERE key = ?", ("value:" + key,)).fetchone()
        return None if row is None else json.loads(row[0])

    def put_value(self, key: str, model: str, value: Any) -> None:
        with self._lock, self._connect() as db:
            db.execute(
                "INSERT OR REPLACE INTO generations (key, model, value) VALUES (?, ?, ?)",
                ("value:" + key, model, json.dumps(value, ensure_ascii=False)),
            )

    def __len__(self) -> int:
        with self._connect() as db:
            return int(db.execute("SELECT COUNT(*) FROM generations").fetchone()[0])

    def stats(self) -> dict[str, Any]:
        with self._connect() as db:
            rows = db.execute("SELECT model, COUNT(*) FROM generations GROUP BY model").fetchall()
        return {"path": str(self.path), "entries": {m: c for m, c in rows}}
