"""The service's domains: folders under <data_dir>/domains, loaded on demand (a few kept in memory).

A domain id is a folder name (`[a-z0-9][a-z0-9._-]*`), never a path from a request. The
operator's default domain may live elsewhere (`CACE_DEFAULT_DOMAIN` as a folder path);
it is registered here under its own id.

Builds write under `<root>/.staging` (see explainers.artifacts); folders of builds whose process
died are removed when the catalogue starts. One build per id at a time: `claim_build` creates
`<root>/.locks/<id>.lock` with O_EXCL (atomic between replicas sharing the volume), holding the
build's job id; the lock is free again once that job is final in the store.
"""

from __future__ import annotations

import logging
import shutil
import threading
import time
import uuid
from collections import OrderedDict
from collections.abc import Callable
from pathlib import Path
from typing import Any

from explainers.artifacts import (
    META,
    child_path,
    claim_exclusive,
    clean_stale_staging,
    read_meta,
    release,
    replace_token,
)
from explainers.domains import DOMAIN_ID, Domain, load_domain
from explainers.domains.domain import describe

log = logging.getLogger(__name__)
LOCKS = ".locks"
# A lock written before its job exists (the upload is being queued) is someone's for this long.
PENDING_LOCK_S = 120.0
PENDING = "pending:"


class DomainCatalog:
    def __init__(
        self,
        root: Path,
        encoder: Any,
        keep: int = 4,
        on_evict: Callable[[str], None] | None = None,
    ) -> None:
        self.root = Path(root)
        self.encoder = encoder  # a callable returning the shared Encoder (loaded once, lazily)
        self.keep = keep
        # Told the id of a domain dropped from memory (the runtime closes the explainers built over it).
        self.on_evict = on_evict
        self.pinned: dict[str, Domain] = {}  # the default domain: never evicted or deleted
        self._loaded: OrderedDict[str, Domain] = OrderedDict()
        self._lock = threading.Lock()
        # Builds killed mid-way (a crash, a SIGKILL) left their folders: nothing of them is served.
        for folder in clean_stale_staging(self.root):
            log.warning("removed the folder of an unfinished domain build: %s", folder)

    @staticmethod
    def valid_id(domain_id: str) -> bool:
        return DOMAIN_ID.match(domain_id) is not None

    def path(self, domain_id: str) -> Path:
        if not self.valid_id(domain_id):
            raise ValueError(f"invalid domain id {domain_id!r}: must match {DOMAIN_ID.pattern}")
        return child_path(self.root, domain_id)

    # -- one build per id ---------------------------------------------------------------------
    def _lock_path(self, domain_id: str) -> Path:
        return child_path(self.root / LOCKS, f"{self.path(domain_id).name}.lock")

    def claim_build(self, domain_id: str, job_active: Callable[[str], bool]) -> tuple[str | None, str]:
        """Claim the build of `domain_id`: (None, token) when claimed, else (holder's job id or "", "").

        `job_active(job_id)` tells whether the job holding a lock still runs (the store knows,
        across replicas); a lock of a final or unknown job is stale and taken over.
        """

        def stale(holder: str) -> bool:
            if holder.startswith(PENDING):
                try:
                    return time.time() - float(holder.rsplit(":", 1)[-1]) > PENDING_LOCK_S
                except ValueError:
                    return True
            return not job_active(holder)

        token = f"{PENDING}{uuid.uuid4().hex}:{time.time()}"
        holder = claim_exclusive(self._lock_path(domain_id), token, stale)
        if holder is None:
            return None, token
        return ("" if holder.startswith(PENDING) else holder), ""

    def bind_build(self, domain_id: str, token: str, job_id: str) -> None:
        """The claimed lock now names the build's job (free again once the job is final)."""
        replace_token(self._lock_path(domain_id), token, job_id)

    def release_build(self, domain_id: str, token: str) -> None:
        release(self._lock_path(domain_id), token)

    def exists(self, domain_id: str) -> bool:
        return domain_id in self.pinned or (
            self.valid_id(domain_id) and (self.root / domain_id / META).exists()
        )

    def pin(self, domain: Domain) -> None:
        self.pinned[domain.id] = domain

    def get(self, domain_id: str) -> Domain:
        """The loaded domain; LookupError if there is none by that id."""
        if domain_id in self.pinned:
            return self.pinned[domain_id]
        with self._lock:
            if domain_id in self._loaded:
                self._loaded.move_to_end(domain_id)
                return self._loaded[domain_id]
        if not self.exists(domain_id):
            raise LookupError(f"domain {domain_id!r} does not exist")
        domain = load_domain(self.path(domain_id), encoder=self.encoder())
        evicted = []
        with self._lock:
            self._loaded[domain_id] = domain
            while len(self._loaded) > self.keep:
                evicted.append(self._loaded.popitem(last=False)[0])
        for old in evicted:  # outside the lock: the callback takes the runtime's
            if self.on_evict is not None:
                self.on_evict(old)
        return domain

    def ids(self) -> list[str]:
        found = (
            [p.name for p in sorted(self.root.iterdir()) if (p / META).exists() and self.valid_id(p.name)]
            if self.root.is_dir()
            else []
        )
        return sorted(set(found) | set(self.pinned))

    def summary(self, domain_id: str) -> dict[str, Any]:
        """The public view without loading the domain (meta.json only), or the loaded one's."""
        if domain_id in self.pinned:
            return self.pinned[domain_id].describe()
        return describe(domain_id, self.path(domain_id), read_meta(self.path(domain_id), "domain"))

    def delete(self, domain_id: str) -> bool:
        with self._lock:
            self._loaded.pop(domain_id, None)
        p = self.path(domain_id)
        if not (p / META).exists():
            return False
        shutil.rmtree(p)
        return True
