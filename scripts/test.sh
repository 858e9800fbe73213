#!/usr/bin/env bash
# The project's test command (see README.md). Runs formatting and lint checks and the whole
# test suite. Emulator-backed tests are switched on by scripts/emulators.sh once it exists.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo fmt --all -- --check
cargo clippy --all-targets -- -D warnings
cargo test --all-targets
