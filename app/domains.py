"""The service's domains: folders under <data_dir>/domains, loaded on demand (a few kept in memory).

A domain id is a folder name (`[a-z0-9][a-z0-9._-]*`), never a path from a request. The
operator's default domain may live elsewhere (`CACE_DEFAULT_DOMAIN` as a folder path);
it is registered here under its own id.
"""

from __future__ import annotations

import shutil
import threading
from collections import OrderedDict
from pathlib import Path
from typing import Any

from explainers.artifacts import META, read_meta
from explainers.domains import DOMAIN_ID, Domain, load_domain
from explainers.domains.domain import describe


class DomainCatalog:
    def __init__(self, root: Path, encoder: Any, keep: int = 4) -> None:
        self.root = Path(root)
        self.encoder = encoder  # a callable returning the shared Encoder (loaded once, lazily)
        self.keep = keep
        self.pinned: dict[str, Domain] = {}  # the default domain: never evicted or deleted
        self._loaded: OrderedDict[str, Domain] = OrderedDict()
        self._lock = threading.Lock()

    @staticmethod
    def valid_id(domain_id: str) -> bool:
        return DOMAIN_ID.match(domain_id) is not None

    def path(self, domain_id: str) -> Path:
        if not self.valid_id(domain_id):
            raise ValueError(f"invalid domain id {domain_id!r}: must match {DOMAIN_ID.pattern}")
        return self.root / domain_id

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
        with self._lock:
            self._loaded[domain_id] = domain
            while len(self._loaded) > self.keep:
                self._loaded.popitem(last=False)
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
