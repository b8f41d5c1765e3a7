"""The ONNX Runtime encoder backend: exported offline from the shipped MiniLM, cached, and faithful.

fp32 ONNX must give sentence-transformers' vectors; int8 must stay close (the benchmark
measures what that costs downstream). Needs the `onnx` extra.
"""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("onnxruntime")
pytest.importorskip("onnx")

from explainers.embeddings import Encoder, resolve_model  # noqa: E402
from explainers.onnx_encoder import OnnxSentenceModel, onnx_path  # noqa: E402

# Exports MiniLM to ONNX (fp32 and int8) and compares: minutes on 2 cores, not for the fast tier.
pytestmark = pytest.mark.slow

TEXTS = [
    "The food was cold and bland, but our waiter was friendly and quick.",
    "ok",
    "Great pasta! " * 120,  # longer than the model's 256 tokens: truncated like sentence-transformers does
    "Service was slow; the ambiance made up for it.",
]


@pytest.fixture(scope="module")
def torch_vectors() -> np.ndarray:
    return Encoder(use_disk_cache=False, backend="torch")._embed(TEXTS)


def test_fp32_matches_sentence_transformers(torch_vectors: np.ndarray) -> None:
    got = OnnxSentenceModel(resolve_model("minilm"), "onnx").encode(TEXTS, batch_size=3)
    assert got.shape == torch_vectors.shape
    assert np.abs(got - torch_vectors).max() < 1e-4
    assert np.allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-5)


def test_int8_stays_close(torch_vectors: np.ndarray) -> None:
    got = OnnxSentenceModel(resolve_model("minilm"), "onnx-int8").encode(TEXTS)
    cos = (got * torch_vectors).sum(axis=1)
    assert cos.min() > 0.95, cos


def test_export_is_cached_by_content_and_variant() -> None:
    path = resolve_model("minilm")
    a = onnx_path(path, "onnx")
    stamp = a.stat().st_mtime_ns
    assert onnx_path(path, "onnx") == a and a.stat().st_mtime_ns == stamp  # not exported again
    assert onnx_path(path, "onnx-int8") != a
    with pytest.raises(ValueError, match="variant"):
        onnx_path(path, "onnx-fp16")


def test_encoder_backend_setting(monkeypatch: pytest.MonkeyPatch, torch_vectors: np.ndarray) -> None:
    monkeypatch.setenv("CACE_ENCODER_BACKEND", "onnx-int8")
    enc = Encoder(use_disk_cache=False)
    assert enc.backend == "onnx-int8"
    assert enc._cache is not Encoder(use_disk_cache=False, backend="torch")._cache  # int8 vectors kept apart
    assert enc.encode(TEXTS[:2]).shape == (2, 384)
    assert (
        Encoder(use_disk_cache=False, backend="onnx")._cache
        is Encoder(use_disk_cache=False, backend="torch")._cache
    )
    with pytest.raises(ValueError, match="backend"):
        Encoder(backend="tensorrt")
