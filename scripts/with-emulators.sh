#!/usr/bin/env bash
# Runs a command with a private local emulator stack: starts Azurite (queue), cosmosdb-server
# and redis-server on loopback through scripts/emulators.sh (installing them on first use),
# exports FLOWCRAFT_EMULATORS=1 and the endpoint variables, runs the command, and stops the
# services it started when the command ends (whatever its outcome).
#   usage: scripts/with-emulators.sh COMMAND [ARGS...]
set -euo pipefail
cd "$(dirname "$0")/.."
[ "$#" -gt 0 ] || { echo "usage: $0 COMMAND [ARGS...]" >&2; exit 2; }

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
"$@"
