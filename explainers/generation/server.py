"""Start llama-cpp-python's OpenAI-compatible server for a GGUF file (benchmarks, local use).

The server lives in its own venv (`scripts/setup.d/30-llama.sh` builds it at
$CACE_CACHE_DIR/venvs/llama) because its dependencies may clash with the service's.
The explainer then talks to it over HTTP exactly as it would to vLLM or OpenAI.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import time
from pathlib import Path
from types import TracebackType

import httpx

from explainers import env


def llama_python() -> Path:
    """The Python of the llama.cpp server venv (override with CACE_LLAMA_PYTHON)."""
    return env.llama_python() or env.cache_dir() / "venvs" / "llama" / "bin" / "python"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class LlamaServer:
    """`with LlamaServer(gguf) as srv: srv.base_url` -> http://127.0.0.1:PORT/v1, stopped on exit."""

    def __init__(
        self,
        gguf: str | Path,
        *,
        port: int | None = None,
        n_ctx: int = 2048,
        n_threads: int = 2,
        log: str | Path | None = None,
        start_timeout_s: float = 120.0,
    ) -> None:
        self.gguf = Path(gguf)
        self.port = port or _free_port()
        self.n_ctx = n_ctx
        self.n_threads = n_threads
        self.log = Path(log) if log else Path(os.devnull)
        self.start_timeout_s = start_timeout_s
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def command(self) -> list[str]:
        return [
            str(llama_python()), "-m", "llama_cpp.server",
            "--model", str(self.gguf), "--host", "127.0.0.1", "--port", str(self.port),
            "--n_ctx", str(self.n_ctx), "--n_threads", str(self.n_threads),
        ]  # fmt: skip

    def start(self) -> LlamaServer:
        if not self.gguf.exists():
            raise FileNotFoundError(f"GGUF model not found: {self.gguf}")
        if not llama_python().exists():
            raise FileNotFoundError(
                f"llama.cpp server venv missing ({llama_python()}); run scripts/setup.sh test"
            )
        with open(self.log, "ab") as fh:
            self.proc = subprocess.Popen(
                self.command(), stdout=fh, stderr=subprocess.STDOUT, start_new_session=True
            )
        deadline = time.monotonic() + self.start_timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"llama.cpp server exited with {self.proc.returncode}; see {self.log}")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(self.base_url + "/models", timeout=2.0).status_code == 200:
                    return self
            time.sleep(0.3)
        self.stop()
        raise TimeoutError(f"llama.cpp server did not answer within {self.start_timeout_s}s; see {self.log}")

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(15)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(5)

    def __enter__(self) -> LlamaServer:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()
