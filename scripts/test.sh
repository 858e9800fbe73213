#!/usr/bin/env bash
# The project's test command (see README.md): runs, under a private local emulator stack
# (scripts/with-emulators.sh: Azurite queue, cosmosdb-server, redis on loopback, installed on
# first use), the formatting and lint checks and the whole test suite with the emulator-backed
# integration tests switched on (FLOWCRAFT_EMULATORS=1), and Debian's headless Chromium for the
# run view's browser test.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "${FLOWCRAFT_EMULATORS:-}" != 1 ]; then
    exec bash scripts/with-emulators.sh bash scripts/test.sh
fi

bash scripts/install-chromium.sh   # the run view's browser test (tests/serve_browser.rs)
cargo fmt --all -- --check
cargo clippy --all-targets -- -D warnings
cargo test --all-targets --no-fail-fast
cargo test --doc
