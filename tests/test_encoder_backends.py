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
from explainers.embeddings import Encoder, auto_backend, native_bf16, resolve_backend

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
