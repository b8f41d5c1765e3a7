"""The llama.cpp test model and its OpenAI-compatible server, in one place for every test that uses them.

`scripts/setup.sh test` (step setup.d/30-llama.sh) builds the server venv and extracts the GGUF.
Without that setup the tests that need it skip locally, and fail under CI (CI=true), where a
silent skip would hide a broken setup.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager

import pytest

from explainers import env
from explainers.generation.server import llama_python

GGUF = env.cache_dir() / "models" / "SmolLM2-135M-Instruct.Q4_1.gguf"


def require_llama_setup(*, server: bool = True) -> None:
    """Skip (locally) or fail (under CI) when the model, or the server's venv if `server`, is missing."""
    missing = [str(p) for p in ((GGUF, llama_python()) if server else (GGUF,)) if not p.exists()]
    if missing:
        msg = f"llama.cpp setup missing ({', '.join(missing)}); run scripts/setup.sh test"
        if os.environ.get("CI"):
            pytest.fail(msg)
        pytest.skip(msg)


@contextmanager
def llama_server(port: int, *, n_ctx: int = 2048, n_threads: int = 1) -> Iterator[str]:
    """llama.cpp's OpenAI-compatible server on 127.0.0.1:`port` serving the test model; yields its /v1 URL."""
    require_llama_setup()
    # Imported here, not at the top: a module that imports this one for GGUF alone (in-process
    # tests) must not be marked `server` by tests/conftest.py.
    from benchmarks.harness.servers import running

    cmd = [str(llama_python()), "-m", "llama_cpp.server", "--model", str(GGUF), "--host", "127.0.0.1",
           "--port", str(port), "--n_ctx", str(n_ctx), "--n_threads", str(n_threads)]  # fmt: skip
    with running(cmd, port=port, health_path="/v1/models", timeout=120) as srv:
        yield srv.base_url + "/v1"
