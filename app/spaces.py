"""The service's view of concept spaces: list, load (cached), train, delete.

A space is an artifact directory (meta.json + encoder/head + indexes) written by the
matching library (`explainers.matching`). This module only maps space ids to
directories under `root` and calls the library, so the service never depends on how a
space is stored inside. Space ids are directory names: `[a-z0-9][a-z0-9._-]*`.
"""

from __future__ import annotations

import importlib
import re
import shutil
import threading
from collections import OrderedDict
from pathlib import Path
from typing import Any

from explainers.artifacts import read_meta
from explainers.registry import MissingResource, Pool

SPACE_ID = re.compile(r"^[a-z0-9][a-z0-9._-]{0,63}$")


def _matching() -> Any:
    try:
        return importlib.import_module("explainers.matching")
    except ModuleNotFoundError as e:  # pragma: no cover - the library ships with the service
        raise MissingResource("the matching library (explainers.matching) is not installed") from e


def _space_api() -> Any:
    """The module holding the space artifact API (save/load/list/delete)."""
    for name in ("explainers.matching.space", "explainers.matching"):
        try:
            mod = importlib.import_module(name)
        except ModuleNotFoundError:
            continue
        if hasattr(mod, "load_space"):
            return mod
    raise MissingResource("the matching library has no space API (explainers.matching.space.load_space)")


class SpaceCatalog:
    """Spaces stored under one directory; loaded spaces are kept in memory (a few)."""

    def __init__(self, root: Path, keep: int = 4) -> None:
        self.root = Path(root)
        self.keep = keep
        self._loaded: OrderedDict[str, Any] = OrderedDict()
        self._lock = threading.Lock()

    def path(self, space_id: str) -> Path:
        if not SPACE_ID.match(space_id):
            raise ValueError(f"invalid space id {space_id!r}")
        return self.root / space_id

    def exists(self, space_id: str) -> bool:
        return SPACE_ID.match(space_id) is not None and (self.root / space_id / "meta.json").exists()

    def describe(self, space_id: str) -> dict[str, Any]:
        meta = read_meta(self.path(space_id))
        return {"id": space_id, "path": str(self.path(space_id)), "meta": meta}

    def list(self) -> list[dict[str, Any]]:
        if not self.root.is_dir():
            return []
        return [self.describe(p.name) for p in sorted(self.root.iterdir())
                if (p / "meta.json").exists() and SPACE_ID.match(p.name)]

    def load(self, space_id: str) -> Any:
        with self._lock:
            if space_id in self._loaded:
                self._loaded.move_to_end(space_id)
                return self._loaded[space_id]
        if not self.exists(space_id):
            raise LookupError(f"space {space_id!r} does not exist")
        space = _space_api().load_space(self.path(space_id))
        with self._lock:
            self._loaded[space_id] = space
            while len(self._loaded) > self.keep:
                self._loaded.popitem(last=False)
        return space

    def delete(self, space_id: str) -> bool:
        with self._lock:
            self._loaded.pop(space_id, None)
        p = self.path(space_id)
        if not p.exists():
            return False
        shutil.rmtree(p)
        return True

    def ensure_default(self, data_root: Path, cebab_dir: Path | None) -> str:
        """Train the CEBaB space on first start, or load it from the cache; returns its id."""
        lib = _matching()
        result = lib.ensure_cebab_space(self.root, data_dir=cebab_dir)
        path = Path(getattr(result, "path", result))
        space_id = path.name
        if not isinstance(result, (str, Path)):
            with self._lock:
                self._loaded[space_id] = result
        else:
            self.load(space_id)
        return space_id

    def train(self, space_id: str, pool: Pool, options: dict[str, Any]) -> dict[str, Any]:
        """Train a space from a labelled corpus into root/space_id."""
        api = _matching()
        out = self.path(space_id)
        tmp = out.with_name(out.name + ".partial")
        if tmp.exists():
            shutil.rmtree(tmp)  # a previous attempt died mid-way
        api.build_space(pool, tmp, **options)
        if out.exists():
            shutil.rmtree(out)
        tmp.rename(out)
        return self.describe(space_id)
