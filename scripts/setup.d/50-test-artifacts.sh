#!/usr/bin/env bash
# The service's embedded defaults (tfidf-lr, CEBaB pool embeddings, taggers, concept space)
# built once into the tests' data directory, so the service tests start warm instead of
# each racing to train them inside a readiness timeout. Idempotent: a second run loads
# what is there (seconds).
set -euo pipefail
ROOT=${ROOT:-$(cd "$(dirname "$0")/../.." && pwd)}
DATA=${CACE_TEST_DATA_DIR:-$ROOT/var/test}
mkdir -p "$DATA"
cd "$ROOT"
started=$(date +%s)
OMP_NUM_THREADS=2 HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false CACE_DATABASE_URL="sqlite:///$DATA/prepare.sqlite" \
  .venv/bin/cace serve --prepare-only --data-dir "$DATA" --log-level warning
echo "50-test-artifacts: ready in $(( $(date +%s) - started ))s" >&2
