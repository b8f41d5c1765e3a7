"""Registered classifiers and LLMs (name -> spec), shared by every replica."""

from __future__ import annotations

import time
from typing import Any

import sqlalchemy as sa

from app.store.tables import (
    Tables,
    _dump,
    _registry_row,
)


class RegistryStore(Tables):
    def registry_add(
        self, kind: str, name: str, spec: dict[str, Any], description: str | None = None
    ) -> bool:
        """Insert; False if the name is taken."""
        try:
            with self.engine.begin() as c:
                c.execute(
                    self.registry.insert().values(
                        kind=kind,
                        name=name,
                        spec=_dump(spec),
                        description=description,
                        created_at=time.time(),
                    )
                )
            return True
        except sa.exc.IntegrityError:
            return False

    def registry_get(self, kind: str, name: str) -> dict[str, Any] | None:
        with self.engine.connect() as c:
            row = (
                c.execute(
                    self.registry.select().where(self.registry.c.kind == kind, self.registry.c.name == name)
                )
                .mappings()
                .first()
            )
        return _registry_row(row) if row else None

    def registry_list(self, kind: str) -> list[dict[str, Any]]:
        with self.engine.connect() as c:
            rows = (
                c.execute(
                    self.registry.select().where(self.registry.c.kind == kind).order_by(self.registry.c.name)
                )
                .mappings()
                .all()
            )
        return [_registry_row(r) for r in rows]

    def registry_delete(self, kind: str, name: str) -> bool:
        with self.engine.begin() as c:
            res = c.execute(
                self.registry.delete().where(self.registry.c.kind == kind, self.registry.c.name == name)
            )
        return res.rowcount > 0
