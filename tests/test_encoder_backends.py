"""The torch encoder's two precisions: fp32, and bf16 matrix products (the default on CPUs with
native bf16, where a first start embeds its corpus ~2.8x faster; benchmarks/results/encoder_onnx.md).

bf16 must stay close to fp32, keep its own embedding cache, hold in the build's parallel workers
(autocast is per thread), and a built domain must say which one embedded it.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from explainers import embeddings
from explainers.concepts import ConceptSchema
from explainers.data.movies import CONCEPTS, VALUES, movie_corpus
from explainers.domains import build_domain, pool_from_rows
from explainers.domains.build import load_stage
from explainers.embeddings import Encoder, auto_backend, native_bf16, resolve_backend, weights_fingerprint

TEXTS = [
    "The food was cold and bland, but our waiter was friendly and quick.",
    "ok",
    "Service was slow; the ambiance made up for it.",
    "Great pasta, loud room, and a manager who fixed our wrong order at once.",
    "We waited an hour for a table and the soup was salty.",
    "Quiet, cosy, and the best tiramisu in town.",
]


def test_auto_is_bf16_exactly_where_the_cpu_computes_it_natively(monkeypatch: pytest.MonkeyPatch) -> None:
    assert auto_backend() == ("torch-bf16" if native_bf16() else "torch")
    assert resolve_backend(None) == resolve_backend("auto") == auto_backend()
    monkeypatch.setattr(embeddings, "native_bf16", lambda: False)
    assert auto_backend() == "torch" and Encoder(use_disk_cache=False).backend == "torch"
    monkeypatch.setattr(embeddings, "native_bf16", lambda: True)
    assert Encoder(use_disk_cache=False).backend == "torch-bf16"
    monkeypatch.setenv("CACE_ENCODER_BACKEND", "torch")  # the operator's choice wins over auto
    assert Encoder(use_disk_cache=False).backend == "torch"


def test_an_unknown_backend_is_refused_naming_the_choices() -> None:
    with pytest.raises(ValueError, match=r"'torch-fp8'.*'auto'.*'torch-bf16'"):
        Encoder(backend="torch-fp8")


def test_bf16_vectors_stay_close_to_fp32_and_keep_their_own_cache() -> None:
    fp32 = Encoder(backend="torch", use_disk_cache=False)
    bf16 = Encoder(backend="torch-bf16", use_disk_cache=False)
    assert fp32.fingerprint != bf16.fingerprint  # a cache of one is never served as the other
    a, b = fp32.encode(TEXTS), bf16.encode(TEXTS)
    assert b.dtype == np.float32 and np.allclose(np.linalg.norm(b, axis=1), 1.0, atol=1e-4)
    cos = (a * b).sum(axis=1)
    assert cos.min() > 0.999, cos
    assert np.abs(a - b).max() > 1e-5  # bf16 really ran (fp32 would agree to ~1e-7)


def test_bf16_holds_in_the_builds_parallel_workers() -> None:
    # Batches of 2 make 3 chunks, shared by 2 worker threads: each must enter autocast itself.
    serial = Encoder(backend="torch-bf16", use_disk_cache=False, batch_size=2)._embed(TEXTS)
    Encoder._caches.clear()
    parallel = Encoder(backend="torch-bf16", use_disk_cache=False, batch_size=2).encode(TEXTS, workers=2)
    Encoder._caches.clear()
    fp32 = Encoder(backend="torch", use_disk_cache=False, batch_size=2).encode(TEXTS, workers=2)
    Encoder._caches.clear()
    assert np.abs(parallel - serial).max() < 2e-3
    assert np.abs(parallel - fp32).max() > 1e-5


def test_a_built_domain_says_which_encoder_embedded_it(tmp_path: Path) -> None:
    schema = ConceptSchema.from_dict({"concepts": [{"name": c, "values": list(VALUES)} for c in CONCEPTS]})
    encoder = Encoder(backend="torch-bf16", use_disk_cache=False)
    build_domain(tmp_path, "tiny", pool_from_rows(movie_corpus(6, seed=3), schema), encoder=encoder)
    meta = json.loads((tmp_path / "tiny" / "meta.json").read_text())
    assert meta["encoder"] == {
        "model": "sentence-transformers/all-MiniLM-L6-v2",
        "backend": "torch-bf16",
        "fingerprint": encoder.fingerprint,
    }


def test_a_domain_built_by_another_backend_loads_without_re_embedding_its_corpus(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A domain built with fp32 (before bf16 became the default, or on a CPU without it) and loaded by
    a torch-bf16 process: its saved corpus vectors serve (they built its indices); they stay out of
    the bf16 disk cache; a space of another model's vectors is re-embedded."""
    monkeypatch.setenv("CACE_CACHE_DIR", str(tmp_path / "cache"))
    schema = ConceptSchema.from_dict({"concepts": [{"name": c, "values": list(VALUES)} for c in CONCEPTS]})
    pool = pool_from_rows(movie_corpus(6, seed=4), schema)
    fp32 = Encoder(backend="torch", use_disk_cache=False)
    build_domain(tmp_path / "domains", "built", pool, encoder=fp32)
    folder = tmp_path / "domains" / "built"
    Encoder._caches.clear()
    bf16 = Encoder(backend="torch-bf16")
    assert weights_fingerprint(bf16.fingerprint) == weights_fingerprint(fp32.fingerprint) == fp32.fingerprint
    embedded: list[int] = []
    real_embed = bf16._embed
    monkeypatch.setattr(bf16, "_embed", lambda texts: embedded.append(len(texts)) or real_embed(texts))
    domain = load_stage(folder, bf16)
    assert embedded == []  # the corpus came from the folder
    saved = np.load(folder / "spaces" / "default" / "base.npy")
    assert np.array_equal(domain.space.base_vectors(), saved)
    new = [f"A new review number {i}, with a plot that drags." for i in range(40)]
    bf16.encode(new)  # 40 new texts: the disk cache is written
    assert embedded == [40]
    on_disk = set(np.load(bf16._cache_file)["keys"].tolist())
    assert {bf16._key(t) for t in new} <= on_disk
    assert not on_disk & {bf16._key(t) for t in domain.pool.texts}  # borrowed fp32 rows stay in memory
    # Another model's vectors (a changed fingerprint) are not taken: the corpus is embedded again.
    meta_file = folder / "spaces" / "default" / "meta.json"
    meta = json.loads(meta_file.read_text())
    meta_file.write_text(json.dumps({**meta, "base_fingerprint": "another-model"}))
    Encoder._caches.clear()
    other = Encoder(backend="torch-bf16", use_disk_cache=False)
    load_stage(folder, other)
    assert len(other._cache.rows) >= len(set(domain.pool.texts))
    Encoder._caches.clear()
