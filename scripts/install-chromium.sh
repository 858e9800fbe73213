#!/usr/bin/env bash
# Installs headless Chromium from Debian's packages when no Chromium is on PATH (the browser
# test of the run view, tests/serve_browser.rs, needs it). Safe to run again; prints the
# version it found or installed. Needs root (or sudo) and the package mirror.
set -euo pipefail
for candidate in chromium chromium-browser; do
    if command -v "$candidate" >/dev/null 2>&1; then
        "$candidate" --version 2>/dev/null || true
        exit 0
    fi
done
SUDO=""
if [ "$(id -u)" != 0 ]; then
    SUDO="sudo"
fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends chromium fonts-dejavu-core >/dev/null
chromium --version 2>/dev/null || true
