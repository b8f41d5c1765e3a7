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
import time
from collections import OrderedDict
from pathlib import Path
from typing import Any

from explainers.artifacts import read_meta
from explainers.registry import MissingResource, Pool

SPACE_ID = re.compile(r"^[a-z0-9][a-z0-9._-]{0,63}$")


def _matching() -> Any:
    try:
        return importlib.import_module("explainers.matching.space")
    except ModuleNotFoundError as e:  # pragma: no cover - the library ships with the service
        raise MissingResource("the matching library (explainers.matching) is not installed") from e


class SpaceCatalog:
    """Spaces stored under one directory; loaded spaces are kept in memory (a few)."""

    def __init__(self, root: Path, keep: int = 4) -> None:
        self.root = Path(root)
        self.keep = keep
        self._loaded: OrderedDict[str, Any] = OrderedDict()
        self._lock = threading.Lock()
        self._encoder: Any = None

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

    def encoder(self) -> Any:
        if self._encoder is None:
            from explainers.embeddings import Encoder

            self._encoder = Encoder()
        return self._encoder

    def load(self, space_id: str) -> Any:
        with self._lock:
            if space_id in self._loaded:
                self._loaded.move_to_end(space_id)
                return self._loaded[space_id]
        if not self.exists(space_id):
            raise LookupError(f"space {space_id!r} does not exist")
        space = _matching().ConceptSpace.load(self.path(space_id), encoder=self.encoder())
        self._remember(space_id, space)
        return space

    def _remember(self, space_id: str, space: Any) -> None:
        with self._lock:
            self._loaded[space_id] = space
            while len(self._loaded) > self.keep:
                self._loaded.popitem(last=False)

    def delete(self, space_id: str) -> bool:
        with self._lock:
            self._loaded.pop(space_id, None)
        p = self.path(space_id)
        if not (p / "meta.json").exists():
            return False
        shutil.rmtree(p)
        return True

    def ensure_default(self, data_root: Path, cebab_dir: Path | None) -> str:
        """Train the CEBaB space on first start, or load it from the cache; returns its id.

        The matching library keeps spaces under <data_root>/spaces/<name>, which is `self.root`.
        """
        from explainers.matching.cebab import ensure_cebab_space

        space = ensure_cebab_space(data_root, data_dir=cebab_dir, encoder=self.encoder())
        space_id = Path(space.directory).name
        self._remember(space_id, space)
        return space_id

    def train(self, space_id: str, pool: Pool, options: dict[str, Any], *,
              augmentation: dict[str, Any] | None = None) -> dict[str, Any]:
        """Train one projection head per concept on `pool` and save the space as root/space_id.

        Same recipe as the CEBaB default (frozen MiniLM + contrastive head per concept);
        `options` may override TrainConfig fields (epochs, lr, tau, ...). Saving is atomic
        (written to a temporary directory, then renamed), so a killed job leaves no half space.
        """
        from dataclasses import fields

        from explainers.matching.trainers import TrainConfig, train_head

        known = {f.name for f in fields(TrainConfig)}
        unknown = sorted(set(options) - known)
        if unknown:
            raise ValueError(f"unknown training options {unknown}; known: {sorted(known)}")
        cfg = TrainConfig(**options)
        started = time.perf_counter()
        enc = self.encoder()
        base = enc.encode(pool.texts)
        origins = pool.origins or [str(i) for i in range(len(pool))]
        heads, training = {}, {}
        for c in pool.schema.names:
            heads[c], training[c] = train_head(base, pool.labels, origins, c, pool.schema.names, cfg, log=None)
        api = _matching()
        space = api.ConceptSpace(pool, enc, heads=heads, base_vectors=base)
        space.build_indices()
        diagnostics = {"hit_rate": {c: space.nearest_counterfactual_hit_rate(c) for c in pool.schema.names}}
        space.save(self.path(space_id), name=space_id, trainer="head", train_split="uploaded corpus",
                   config=cfg.to_dict(), training=training, diagnostics=diagnostics, n_pairs=len(pool.pairs),
                   build_seconds=round(time.perf_counter() - started, 2),
                   **({"augmentation": augmentation} if augmentation else {}))
        return self.describe(space_id)
