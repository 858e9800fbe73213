#!/usr/bin/env bash
# The project's test command (see README.md): starts the local emulator stack (Azurite queue,
# cosmosdb-server, redis; installed on first use by scripts/emulators.sh), switches the
# emulator-backed integration tests on, runs formatting and lint checks and the whole test
# suite, and stops the services it started on exit.
set -euo pipefail
cd "$(dirname "$0")/.."

# A private run directory: `stop` only ends the services this invocation started.
FLOWCRAFT_EMULATOR_RUN_DIR="$(mktemp -d "${TMPDIR:-/tmp}/flowcraft-emulators.XXXXXX")"
export FLOWCRAFT_EMULATOR_RUN_DIR
cleanup() {
    bash scripts/emulators.sh stop || true
    rm -rf "$FLOWCRAFT_EMULATOR_RUN_DIR"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

bash scripts/emulators.sh start
eval "$(bash scripts/emulators.sh env)"

cargo fmt --all -- --check
cargo clippy --all-targets -- -D warnings
cargo test --all-targets
