"""The benchmark harness: where results go, how a run writes them, and the server launchers.

`servers.py` (start and stop real processes on 127.0.0.1), `service.py` (the explanation service
as a uvicorn subprocess) and `model_servers/` (real model servers: MLServer, KServe, a
misbehaving one, a fake OpenAI LLM) are shared with the test suite, which imports them from here.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
RESULTS = ROOT / "benchmarks" / "results"


def write_result(out: Path, markdown: str, data: Any | None = None) -> Path:
    """Write a run's Markdown table to `out` and, when given, its data as JSON beside it (`.json`)."""
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(markdown)
    if data is not None:
        out.with_suffix(".json").write_text(json.dumps(data, indent=1, default=str))
    return out
