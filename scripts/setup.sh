#!/usr/bin/env bash
# Idempotent environment setup. `scripts/setup.sh` installs the service into .venv;
# `scripts/setup.sh test` also runs every scripts/setup.d/*.sh (test servers' own
# virtual environments, the llama.cpp wheel, test models). Each step skips itself when
# its result is already there, so a second run takes seconds.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
export PIP_DISABLE_PIP_VERSION_CHECK=1
PY=${PYTHON:-python3}
CACHE=${CACE_CACHE_DIR:-$HOME/.cache/cace}
mkdir -p "$CACHE"
export CACE_CACHE_DIR=$CACHE

if [[ ! -x .venv/bin/python ]]; then
  "$PY" -m venv .venv
fi
stamp=.venv/.installed-$( (cat pyproject.toml scripts/setup.sh; echo "${CACE_EXTRAS:-}") | sha1sum | cut -c1-12)-${1:-run}
if [[ ! -f $stamp ]]; then
  .venv/bin/pip install -q -U pip wheel setuptools
  # torch first and pinned: pip takes the CPU wheel from local disk (a bare `torch` would pull CUDA).
  .venv/bin/pip install -q torch==2.13.0
  if [[ ${1:-run} == test ]]; then
    .venv/bin/pip install -q -e ".[test]"
  else
    # The production stores' drivers (PostgreSQL jobs/keys, Redis rate limits) ship in the image.
    # CACE_EXTRAS adds optional extras, e.g. CACE_EXTRAS=ray,onnx.
    .venv/bin/pip install -q -e ".[postgres,redis${CACE_EXTRAS:+,$CACE_EXTRAS}]"
  fi
  touch "$stamp"
fi

if [[ ${1:-run} == test ]]; then
  for step in scripts/setup.d/*.sh; do
    [[ -e $step ]] || continue
    echo "setup: $step" >&2
    ROOT=$ROOT CACHE=$CACHE bash "$step"
  done
fi
