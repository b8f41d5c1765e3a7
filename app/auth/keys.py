"""API keys: 256-bit random tokens stored as SHA-256 hashes, with scopes and optional rate limits.

Keys live in the service's SQL store (shared by replicas), plus read-only keys from a file
(`CACE_API_KEYS_FILE`, a mounted Secret of hashes) and one bootstrap admin key from the
environment (`CACE_ADMIN_KEY`). A token has 256 bits of entropy, so its SHA-256 is enough:
there is nothing to brute-force, and a lookup is one indexed query.
"""

from __future__ import annotations

import hashlib
import json
import math
import secrets
import threading
import time
import uuid
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import sqlalchemy as sa

SCOPES = ("explain", "admin")
KEY_PREFIX = "cace_"


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode("utf-8", errors="surrogatepass")).hexdigest()


def check_rate(rate: object, where: str) -> None:
    """A key's own rate must be a positive number (None: the default); 0 would read as unlimited."""
    if rate is None:
        return
    if isinstance(rate, bool) or not isinstance(rate, int | float) or not 0 < rate <= 100000:
        raise ValueError(f"{where}: rate_per_s must be a number in (0, 100000], got {rate!r}")


@dataclass
class KeyRecord:
    id: str
    name: str
    scopes: list[str]
    rate_per_s: float | None
    created_at: float
    revoked_at: float | None = None
    source: str = "store"

    def allows(self, scope: str) -> bool:
        return scope in self.scopes or "admin" in self.scopes

    def public(self) -> dict[str, Any]:
        return asdict(self)


class KeyStore:
    """Hashed API keys in the service's SQL store (shared by replicas), plus read-only keys from a file.

    The file (`CACE_API_KEYS_FILE`, e.g. a mounted Kubernetes Secret) is a JSON list of
    ``{"name", "sha256", "scopes", "rate_per_s"?}``; it never holds plaintext keys.
    """

    CACHE_S = 2.0

    def __init__(
        self,
        engine: sa.Engine,
        prefix: str = "cace_",
        keys_file: Path | None = None,
        metadata: sa.MetaData | None = None,
        admin_key: str | None = None,
    ) -> None:
        self.engine = engine
        # On the service store's own MetaData when given, so `Store.drop_all()` removes this table too.
        md = metadata if metadata is not None else sa.MetaData()
        self.table = sa.Table(
            f"{prefix}api_keys",
            md,
            sa.Column("id", sa.String(32), primary_key=True),
            sa.Column("hash", sa.String(64), nullable=False, unique=True),
            sa.Column("name", sa.String(128), nullable=False),
            sa.Column("scopes", sa.String(128), nullable=False),
            sa.Column("rate_per_s", sa.Float, nullable=True),
            sa.Column("created_at", sa.Float, nullable=False),
            sa.Column("revoked_at", sa.Float, nullable=True),
            extend_existing=True,
        )
        self.table.create(engine, checkfirst=True)
        self.file_keys: dict[str, KeyRecord] = self._read_file(keys_file) if keys_file else {}
        if admin_key:  # the bootstrap admin key from the environment: kept as its hash only
            digest = hash_key(admin_key)
            self.file_keys[digest] = KeyRecord(
                id="env-admin",
                name="CACE_ADMIN_KEY",
                scopes=["admin"],
                rate_per_s=None,
                created_at=0.0,
                source="env",
            )
        self._lock = threading.Lock()
        self._cache: dict[str, tuple[float, KeyRecord | None]] = {}
        self._active: tuple[float, int] = (-math.inf, 0)

    @staticmethod
    def _read_file(path: Path) -> dict[str, KeyRecord]:
        out: dict[str, KeyRecord] = {}
        for i, e in enumerate(json.loads(Path(path).read_text())):
            digest = str(e["sha256"]).lower()
            if len(digest) != 64:
                raise ValueError(f"{path}: entry {i} needs a 64-hex-digit sha256 of the key")
            scopes = [s for s in e.get("scopes", ["explain"]) if s in SCOPES]
            rate = e.get("rate_per_s")
            check_rate(rate, f"{path}: entry {i}")
            out[digest] = KeyRecord(
                id=e.get("id") or f"file-{digest[:12]}",
                name=e.get("name", f"file-{i}"),
                scopes=scopes,
                rate_per_s=rate,
                created_at=0.0,
                source="file",
            )
        return out

    def _row(self, r: Any) -> KeyRecord:
        return KeyRecord(
            id=r.id,
            name=r.name,
            scopes=r.scopes.split(","),
            rate_per_s=r.rate_per_s,
            created_at=r.created_at,
            revoked_at=r.revoked_at,
        )

    def create(self, name: str, scopes: list[str], rate_per_s: float | None = None) -> tuple[KeyRecord, str]:
        """Make a key; the plaintext is returned once and never stored."""
        bad = [s for s in scopes if s not in SCOPES]
        if bad or not scopes:
            raise ValueError(f"scopes must be a non-empty subset of {SCOPES}, got {scopes}")
        check_rate(rate_per_s, "rate_per_s")
        plain = KEY_PREFIX + secrets.token_urlsafe(32)
        rec = KeyRecord(
            id=uuid.uuid4().hex[:16],
            name=name,
            scopes=sorted(set(scopes)),
            rate_per_s=rate_per_s,
            created_at=time.time(),
        )
        with self.engine.begin() as c:
            c.execute(
                self.table.insert().values(
                    id=rec.id,
                    hash=hash_key(plain),
                    name=name,
                    scopes=",".join(rec.scopes),
                    rate_per_s=rate_per_s,
                    created_at=rec.created_at,
                )
            )
        self._invalidate()
        return rec, plain

    def revoke(self, key_id: str) -> bool:
        with self.engine.begin() as c:
            n = c.execute(
                self.table.update()
                .where(self.table.c.id == key_id, self.table.c.revoked_at.is_(None))
                .values(revoked_at=time.time())
            ).rowcount
        self._invalidate()
        return bool(n)

    def list(self) -> list[KeyRecord]:
        with self.engine.connect() as c:
            rows = c.execute(self.table.select().order_by(self.table.c.created_at)).fetchall()
        return list(self.file_keys.values()) + [self._row(r) for r in rows]

    def lookup(self, plain: str) -> KeyRecord | None:
        """The active key for a presented token, or None. Cached briefly so a request costs no query."""
        digest = hash_key(plain)
        if digest in self.file_keys:
            return self.file_keys[digest]
        now = time.monotonic()
        with self._lock:
            hit = self._cache.get(digest)
        if hit and now - hit[0] < self.CACHE_S:
            return hit[1]
        with self.engine.connect() as c:
            r = c.execute(
                self.table.select().where(self.table.c.hash == digest, self.table.c.revoked_at.is_(None))
            ).first()
        rec = self._row(r) if r is not None else None
        with self._lock:
            if len(self._cache) > 10000:
                self._cache.clear()
            self._cache[digest] = (now, rec)
        return rec

    def active_count(self) -> int:
        now = time.monotonic()
        if now - self._active[0] < self.CACHE_S:
            return self._active[1]
        with self.engine.connect() as c:
            n = c.execute(
                sa.select(sa.func.count()).select_from(self.table).where(self.table.c.revoked_at.is_(None))
            ).scalar_one()
        self._active = (now, int(n) + len(self.file_keys))
        return self._active[1]

    def _invalidate(self) -> None:
        with self._lock:
            self._cache.clear()
        self._active = (-math.inf, 0)


def key_store(engine: sa.Engine, settings: Any, metadata: sa.MetaData | None = None) -> KeyStore:
    """The key store for these settings (stored keys, the keys file, the bootstrap admin key)."""
    return KeyStore(
        engine,
        settings.table_prefix,
        settings.auth.api_keys_file,
        metadata,
        admin_key=settings.auth.admin_key,
    )
