#!/usr/bin/env bash
# Re-records the wire fixtures fixtures/wire/queue.jsonl and fixtures/wire/cosmos.jsonl:
# starts a private emulator stack (scripts/with-emulators.sh), runs the ignored recording tests of
# tests/replay_fixtures.rs with FLOWCRAFT_RECORD=1 (every Queue and Cosmos operation plus
# 400/404/409/412/413 answers, and one injected throttling answer per service with its
# retry: Queue 503 ServerBusy, Cosmos 429; secrets redacted by the wire Recorder), then
# replays the new fixtures offline to check them. Stops the services it started on exit.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "${FLOWCRAFT_EMULATORS:-}" != 1 ]; then
    exec bash scripts/with-emulators.sh bash scripts/record-fixtures.sh
fi
mkdir -p fixtures/wire

FLOWCRAFT_RECORD=1 cargo test --test replay_fixtures -- --ignored --exact \
    record_queue_fixture record_cosmos_fixture
# The fresh recordings must replay offline (no emulator needed for this step).
cargo test --test replay_fixtures
echo "recorded: fixtures/wire/queue.jsonl ($(wc -l < fixtures/wire/queue.jsonl) exchanges)," \
    "fixtures/wire/cosmos.jsonl ($(wc -l < fixtures/wire/cosmos.jsonl) exchanges)"
