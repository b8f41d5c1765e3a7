#!/usr/bin/env bash
# Debian's Chromium for the browser tests of the web UI (tests/test_ui_browser.py). Playwright
# drives it through `executable_path`; `playwright install` is never run (its browser download
# needs the internet). Skips when a chromium binary is already on PATH.
set -euo pipefail
if command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1; then
  exit 0
fi
SUDO=""
if [[ $(id -u) -ne 0 ]]; then
  SUDO="sudo"
fi
started=$(date +%s)
$SUDO apt-get update -q
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q --no-install-recommends chromium
echo "setup: chromium installed in $(( $(date +%s) - started ))s ($(chromium --version))" >&2
