"""Start real servers on 127.0.0.1 for tests, and stop them cleanly.

Every integration test talks HTTP to a real process (uvicorn, MLServer, the KServe
model server, llama.cpp's OpenAI-compatible server); this is the one place that knows
how to pick a free port, wait until a health URL answers, and tear the process down.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[2]
VENV_PY = ROOT / ".venv" / "bin" / "python"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_http(url: str, timeout: float = 60.0, proc: subprocess.Popen | None = None) -> None:
    deadline = time.monotonic() + timeout
    last: Exception | None = None
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode} before {url} answered")
        try:
            r = httpx.get(url, timeout=2.0)
            if r.status_code < 500:
                return
        except httpx.HTTPError as e:
            last = e
        time.sleep(0.2)
    raise TimeoutError(f"{url} did not answer within {timeout}s ({last})")


class Server:
    def __init__(self, proc: subprocess.Popen, base_url: str, log: Path) -> None:
        self.proc = proc
        self.base_url = base_url
        self.log = log

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 15.0) -> None:
        if self.proc.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, sig)
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(5)

    def kill(self) -> None:
        """SIGKILL: the abrupt death a restart test needs."""
        self.stop(signal.SIGKILL)

    def log_text(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""


@contextlib.contextmanager
def running(
    cmd: Sequence[str],
    *,
    port: int,
    health_path: str = "/",
    env: dict[str, str] | None = None,
    cwd: Path | None = None,
    timeout: float = 90.0,
    log_dir: Path | None = None,
) -> Iterator[Server]:
    """Run `cmd` in its own process group until the with-block ends; yields a Server."""
    log_dir = log_dir or ROOT / "var" / "test-logs"
    log_dir.mkdir(parents=True, exist_ok=True)
    log = log_dir / f"{Path(cmd[0]).name}-{port}.log"
    full_env = {**os.environ, **(env or {})}
    with open(log, "wb") as fh:
        proc = subprocess.Popen(
            list(cmd),
            stdout=fh,
            stderr=subprocess.STDOUT,
            env=full_env,
            cwd=cwd or ROOT,
            start_new_session=True,
        )
    server = Server(proc, f"http://127.0.0.1:{port}", log)
    try:
        try:
            wait_http(server.base_url + health_path, timeout=timeout, proc=proc)
        except Exception as e:
            server.stop()
            raise RuntimeError(f"{cmd} failed to start: {e}\n--- log ---\n{server.log_text()[-3000:]}") from e
        yield server
    finally:
        server.stop()


def python() -> str:
    return str(VENV_PY if VENV_PY.exists() else sys.executable)
