#!/usr/bin/env bash
# The KServe Python model server (V1 protocol) in its own venv, for the V1 adapter tests.
# kserve brings kubernetes, grpc and ray-free serving deps the service does not need, so
# it lives at $CACHE/venvs/kserve. scikit-learn/numpy/joblib are pinned to .venv's
# versions so the test model (benchmarks/harness/model_servers/kserve_sklearn.py) can unpickle the
# tfidf-lr pipeline. Idempotent via a stamp keyed by the pins.
set -euo pipefail
ROOT=${ROOT:-$(cd "$(dirname "$0")/../.." && pwd)}
CACHE=${CACHE:-$HOME/.cache/cace}
VENV=$CACHE/venvs/kserve
KSERVE_VERSION=0.21.0
pins=$("$ROOT/.venv/bin/python" - <<'PY'
from importlib.metadata import version
print(f"scikit-learn=={version('scikit-learn')} numpy=={version('numpy')} joblib=={version('joblib')}")
PY
)
stamp=$VENV/.installed-$(echo "$KSERVE_VERSION $pins" | sha1sum | cut -c1-12)
if [[ -f $stamp ]]; then
  exit 0
fi
started=$(date +%s)
BASE_PY=$("$ROOT/.venv/bin/python" -c 'import sys; print(sys._base_executable)')
rm -rf "$VENV"
mkdir -p "$CACHE/venvs"
"$BASE_PY" -m venv "$VENV"
"$VENV/bin/pip" install -q -U pip wheel
# shellcheck disable=SC2086
"$VENV/bin/pip" install -q "kserve==$KSERVE_VERSION" $pins
"$VENV/bin/python" -c "import kserve"
touch "$stamp"
# Kept for benchmarks/classifier_adapters.py, which reports first-time setup cost.
echo "$(( $(date +%s) - started ))" > "$VENV/.build-seconds"
echo "setup: kserve venv built in $(( $(date +%s) - started ))s at $VENV" >&2
