#!/usr/bin/env bash
# Re-records the wire fixtures fixtures/wire/queue.jsonl, fixtures/wire/cosmos.jsonl and
# fixtures/wire/concurrent.jsonl (or only those named: `record-fixtures.sh concurrent`):
# starts a private emulator stack (scripts/with-emulators.sh), runs the ignored recording tests of
# tests/replay_fixtures.rs with FLOWCRAFT_RECORD=1 (every Queue and Cosmos operation plus
# 400/404/409/412/413 answers, and one injected throttling answer per service with its
# retry: Queue 503 ServerBusy, Cosmos 429; secrets redacted by the wire Recorder), then
# replays the new fixtures offline to check them. concurrent.jsonl is 32 tasks doing queue and
# Cosmos work at once (tests/replay_concurrent.rs). worker-fanout is a fan-out run on three
# workers, one trace per worker plus the client's (fixtures/wire/worker-fanout-*.jsonl,
# tests/replay_worker_session.rs). Stops the services it started on exit.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "${FLOWCRAFT_EMULATORS:-}" != 1 ]; then
    exec bash scripts/with-emulators.sh bash scripts/record-fixtures.sh "$@"
fi
mkdir -p fixtures/wire

which=("$@")
[ ${#which[@]} -gt 0 ] || which=(queue cosmos concurrent worker-fanout)
for fixture in "${which[@]}"; do
    case "$fixture" in
        queue | cosmos)
            FLOWCRAFT_RECORD=1 cargo test --test replay_fixtures -- --ignored --exact \
                "record_${fixture}_fixture" ;;
        concurrent)
            FLOWCRAFT_RECORD=1 cargo test --test replay_concurrent -- --ignored --exact \
                record_concurrent_fixture ;;
        worker-fanout)
            FLOWCRAFT_RECORD=1 cargo test --test replay_worker_session -- --ignored --exact \
                record_worker_fanout_fixture ;;
        *) echo "unknown fixture '$fixture' (queue, cosmos, concurrent or worker-fanout)" >&2
           exit 2 ;;
    esac
done
# The fresh recordings must replay offline (no emulator needed for this step).
cargo test --test replay_fixtures --test replay_concurrent --test replay_worker_session \
    --test wire_fixture_secrets
for fixture in "${which[@]}"; do
    for file in fixtures/wire/"$fixture"*.jsonl; do
        echo "recorded: $file ($(wc -l < "$file") exchanges)"
    done
done
