#!/usr/bin/env bash
# MLServer (Open Inference Protocol V2) in its own venv, for the V2 adapter tests.
# mlserver pins fastapi<0.116, which clashes with the service, so it lives at
# $CACHE/venvs/mlserver. scikit-learn (and numpy) are pinned to the versions in .venv so
# the tfidf-lr joblib pipeline unpickles there. Idempotent: a stamp keyed by the pins
# makes a second run take well under a second.
set -euo pipefail
ROOT=${ROOT:-$(cd "$(dirname "$0")/../.." && pwd)}
CACHE=${CACHE:-$HOME/.cache/cace}
VENV=$CACHE/venvs/mlserver
MLSERVER_VERSION=1.7.1
pins=$("$ROOT/.venv/bin/python" - <<'PY'
from importlib.metadata import version
print(f"scikit-learn=={version('scikit-learn')} numpy=={version('numpy')} joblib=={version('joblib')}")
PY
)
stamp=$VENV/.installed-$(echo "$MLSERVER_VERSION $pins" | sha1sum | cut -c1-12)
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
"$VENV/bin/pip" install -q "mlserver==$MLSERVER_VERSION" "mlserver-sklearn==$MLSERVER_VERSION" $pins
"$VENV/bin/mlserver" --help >/dev/null
touch "$stamp"
# Kept for benchmarks/classifier_adapters.py, which reports first-time setup cost.
echo "$(( $(date +%s) - started ))" > "$VENV/.build-seconds"
echo "setup: mlserver venv built in $(( $(date +%s) - started ))s at $VENV" >&2
