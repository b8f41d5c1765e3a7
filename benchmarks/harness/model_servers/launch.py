"""Start the real model servers the adapter tests and benchmarks talk to.

Each helper is a context manager yielding a `benchmarks.harness.servers.Server` on 127.0.0.1:
the project's own classifier server (explainers.serving), the misbehaving test server,
MLServer (V2) and the KServe model server (V1), the last two from their own venvs built
by scripts/setup.d/20-mlserver.sh and 21-kserve.sh.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

from benchmarks.harness.servers import ROOT, Server, free_port, python, running

HERE = Path(__file__).resolve().parent
CACHE = Path(os.environ.get("CACE_CACHE_DIR", Path.home() / ".cache" / "cace"))
MLSERVER_VENV = CACHE / "venvs" / "mlserver"
KSERVE_VENV = CACHE / "venvs" / "kserve"
# Servers share the 2-core CI machine with pytest; keep their math libraries single-threaded.
QUIET_ENV = {"OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


def _need(venv: Path, step: str) -> Path:
    py = venv / "bin" / "python"
    if not py.exists():
        raise RuntimeError(f"{venv} is missing; run `scripts/setup.sh test` (step scripts/setup.d/{step})")
    return venv / "bin"


@contextlib.contextmanager
def own_server(artifact: Path, name: str = "tfidf-lr") -> Iterator[Server]:
    port = free_port()
    cmd = [python(), "-m", "explainers.serving", str(artifact), "--port", str(port), "--name", name]
    with running(cmd, port=port, health_path="/health", env=QUIET_ENV, timeout=120) as server:
        yield server


@contextlib.contextmanager
def misbehaving_server() -> Iterator[Server]:
    port = free_port()
    cmd = [
        python(),
        "-m",
        "uvicorn",
        "benchmarks.harness.model_servers.misbehaving:app",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--log-level",
        "warning",
        "--no-access-log",
    ]
    with running(cmd, port=port, health_path="/health", timeout=60) as server:
        yield server


@contextlib.contextmanager
def mlserver(artifact: Path, workdir: Path, name: str = "tfidf-lr") -> Iterator[Server]:
    """MLServer's scikit-learn runtime serving artifact/model.joblib as model `name`."""
    bin_dir = _need(MLSERVER_VENV, "20-mlserver.sh")
    model_dir = workdir / "models" / name
    model_dir.mkdir(parents=True, exist_ok=True)
    shutil.copy(artifact / "model.joblib", model_dir / "model.joblib")
    (model_dir / "model-settings.json").write_text(
        json.dumps(
            {
                "name": name,
                "implementation": "mlserver_sklearn.SKLearnModel",
                "parameters": {"uri": "./model.joblib"},
            }
        )
    )
    port, grpc_port, metrics_port = free_port(), free_port(), free_port()
    (workdir / "models" / "settings.json").write_text(
        json.dumps(
            {
                "host": "127.0.0.1",
                "http_port": port,
                "grpc_port": grpc_port,
                "metrics_port": metrics_port,
                # Inference in the main process: no extra worker processes on a 2-core machine.
                "parallel_workers": 0,
                "debug": False,
            }
        )
    )
    cmd = [str(bin_dir / "mlserver"), "start", str(workdir / "models")]
    with running(
        cmd, port=port, health_path=f"/v2/models/{name}/ready", env=QUIET_ENV, cwd=workdir, timeout=180
    ) as server:
        yield server


@contextlib.contextmanager
def kserve_server(artifact: Path, name: str = "tfidf-lr") -> Iterator[Server]:
    """The KServe model server with two V1 models: `name` (score lists) and `name`-dict (label->score).

    kserve has no bind-address option and listens on all interfaces; the port is a fresh
    free one and the server lives only for the test module.
    """
    bin_dir = _need(KSERVE_VENV, "21-kserve.sh")
    port, grpc_port = free_port(), free_port()
    cmd = [
        str(bin_dir / "python"),
        str(HERE / "kserve_sklearn.py"),
        "--model_dir",
        str(artifact),
        "--model_name",
        name,
        "--http_port",
        str(port),
        "--grpc_port",
        str(grpc_port),
        "--workers",
        "1",
        "--enable_grpc",
        "false",
    ]
    with running(
        cmd, port=port, health_path=f"/v1/models/{name}", env=QUIET_ENV, cwd=ROOT, timeout=180
    ) as server:
        yield server
