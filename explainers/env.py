"""Every environment variable the library reads, read here.

Why one place: the library runs without the service (the CLIs, the benchmarks, a notebook), so it
reads the few variables it needs itself; the service's settings (app/settings.py, the README's
settings table) name the same variables, and this module is where to see which ones the library
honours. Each function reads the environment when called, so a test's `monkeypatch.setenv` holds.
"""

from __future__ import annotations

import os
from pathlib import Path

_OFF = ("0", "false", "no", "off")
_ON = ("1", "true", "yes", "on")


def cache_dir() -> Path:
    """CACE_CACHE_DIR: machine-wide caches (embeddings, LLM generations, models); default ~/.cache/cace."""
    return Path(os.environ.get("CACE_CACHE_DIR", Path.home() / ".cache" / "cace"))


def data_dir() -> Path:
    """CACE_DATA_DIR: where artifacts (reference classifiers, taggers, spaces) live; default ./var."""
    return Path(os.environ.get("CACE_DATA_DIR", "var"))


def cebab_dir() -> Path | None:
    """CACE_CEBAB_DIR: the CEBaB split files, when set."""
    value = os.environ.get("CACE_CEBAB_DIR")
    return Path(value) if value else None


def encoder_backend() -> str | None:
    """CACE_ENCODER_BACKEND: auto, torch, torch-bf16, onnx or onnx-int8 for every Encoder not told
    otherwise (unset: auto, see explainers.embeddings.auto_backend)."""
    return os.environ.get("CACE_ENCODER_BACKEND") or None


def embedding_cache_items(default: int = 200_000) -> int:
    """CACE_EMBEDDING_CACHE_ITEMS: texts kept in memory per encoder model."""
    return int(os.environ.get("CACE_EMBEDDING_CACHE_ITEMS", default))


def progress() -> bool | None:
    """CACE_PROGRESS: force progress reporting on (1/true/yes/on) or off (0/false/no/off); None: unset."""
    value = os.environ.get("CACE_PROGRESS", "").strip().lower()
    if value in _OFF:
        return False
    if value in _ON:
        return True
    return None


def llama_python() -> Path | None:
    """CACE_LLAMA_PYTHON: the Python of the llama.cpp server's virtual environment, when set."""
    value = os.environ.get("CACE_LLAMA_PYTHON")
    return Path(value) if value else None


def llm_base_url() -> str | None:
    """CACE_LLM_BASE_URL: the default OpenAI-compatible LLM server (the generation CLI's default)."""
    return os.environ.get("CACE_LLM_BASE_URL")


def llm_model() -> str | None:
    """CACE_LLM_MODEL: the default LLM's model name."""
    return os.environ.get("CACE_LLM_MODEL")


def secret(variable: str) -> str | None:
    """The value of the variable an LLM spec names for its API key (`api_key_env`)."""
    return os.environ.get(variable)


def omp_threads() -> int:
    """OMP_NUM_THREADS, 0 when unset (ONNX Runtime then picks)."""
    return int(os.environ.get("OMP_NUM_THREADS", "0") or 0)
