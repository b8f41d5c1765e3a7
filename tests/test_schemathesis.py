"""Property-based fuzzing of the live OpenAPI spec with schemathesis.

The real service runs under uvicorn (reference tfidf-lr classifier, no pool, so methods that
need more answer 409 quickly); the schemathesis CLI loads `/openapi.json` from it, generates a
bounded number of requests per operation (schema examples, then fuzzed data) and checks that
no response is a server error (see tests/test_schemathesis_hooks.py for the one exception:
documented upstream failures) and that every response matches its schema and content type.
Generated strings include NUL, and the hooks plant lone surrogates and whitespace-only text in
bodies, so hostile unicode is part of every run.
The CLI is used rather than the pytest plugin because it is the interface schemathesis keeps
stable across pytest versions. Overloading the service is not this test's job
(benchmarks/load.py does that), so the in-flight cap is off.
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from benchmarks.harness.servers import ROOT, Server
from tests.test_security import service

MAX_EXAMPLES = os.environ.get("CACE_FUZZ_EXAMPLES", "6")
CHECKS = "no_internal_error,response_schema_conformance,content_type_conformance"


@pytest.fixture(scope="module")
def fuzz_service(
    tmp_path_factory: pytest.TempPathFactory, tfidf_lr_dir: Path, test_data_dir: Path
) -> Iterator[Server]:
    """Auth on with a file key (admin), so keys the fuzzer creates cannot lock it out."""
    tmp = tmp_path_factory.mktemp("fuzz")
    key = "cace_fuzz-" + secrets.token_urlsafe(24)
    keys = tmp / "keys.json"
    keys.write_text(
        json.dumps(
            [
                {
                    "name": "fuzz",
                    "sha256": hashlib.sha256(key.encode()).hexdigest(),
                    "scopes": ["admin", "explain"],
                }
            ]
        )
    )
    with service(
        tmp,
        test_data_dir,
        CACE_API_KEYS_FILE=str(keys),
        CACE_RATE_LIMIT_PER_S="0",
        CACE_MAX_INFLIGHT="0",
        CACE_JOB_WORKERS="1",
        CACE_MAX_INLINE_TEXTS="5",
        CACE_MAX_EFFECT_TEXTS="20",
        CACE_LOG_FORMAT="text",
    ) as srv:
        srv.key = key  # type: ignore[attr-defined]
        yield srv


def _st() -> str:
    exe = ROOT / ".venv" / "bin" / "schemathesis"
    return str(exe) if exe.exists() else "schemathesis"


def test_api_conforms_to_its_openapi_spec(fuzz_service: Server, tmp_path: Path) -> None:
    cmd = [
        _st(),
        "run",
        fuzz_service.base_url + "/openapi.json",
        "--checks",
        CHECKS,
        "--max-examples",
        MAX_EXAMPLES,
        "--seed",
        "7",
        "--phases",
        "examples,fuzzing",
        "--generation-allow-x00",
        "true",  # NUL in generated strings; hooks add lone surrogates
        "--generation-codec",
        "utf-8",
        "--header",
        f"Authorization: Bearer {fuzz_service.key}",  # type: ignore[attr-defined]
        "--workers",
        "2",
        "--request-timeout",
        "60",
        "--max-time",
        "90",
        "--report",
        "junit",
        "--report-dir",
        str(tmp_path),
    ]
    proc = subprocess.run(
        cmd,
        capture_output=True,
        text=True,
        timeout=600,
        cwd=tmp_path,
        env={
            **os.environ,
            "NO_COLOR": "1",
            "PYTHONPATH": str(ROOT),
            "SCHEMATHESIS_HOOKS": "tests.test_schemathesis_hooks",
        },
    )
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-8000:] + "\n--- server log ---\n" + fuzz_service.log_text()[-3000:]
    assert "Authentication failed" not in out, out[-3000:]  # the run really exercised the API
    log = fuzz_service.log_text()
    assert "Internal error" not in log and "Exception in ASGI application" not in log, log[-3000:]
