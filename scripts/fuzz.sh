#!/usr/bin/env bash
# Runs the libFuzzer targets in fuzz/ (cargo-fuzz, nightly toolchain) for a bounded time each
# and keeps every crash, timeout or out-of-memory input as a regression case under
# tests/regressions/<target>/, where the stable test `kept_regression_inputs_stay_fixed`
# (tests/hostile_parsers.rs) replays it in every CI run.
#
# Usage: scripts/fuzz.sh [target ...]      (default: every target)
#   FUZZ_SECONDS=60 scripts/fuzz.sh        seconds per target (default 30)
#   FUZZ_JOBS=2 scripts/fuzz.sh            parallel libFuzzer jobs per target (default 1)
#
# Without a nightly toolchain or cargo-fuzz it says so and exits 0: CI does not depend on it
# (the stable property tests in tests/hostile_*.rs cover the same parsers).
set -euo pipefail

cd "$(dirname "$0")/.."
ROOT=$(pwd)
SECONDS_PER_TARGET=${FUZZ_SECONDS:-30}
JOBS=${FUZZ_JOBS:-1}
ALL_TARGETS=(queue_xml cosmos_json job_message connection_string blueprint expression replay_file)

if ! rustup toolchain list 2>/dev/null | grep -q '^nightly'; then
    echo "fuzz.sh: no nightly toolchain (rustup toolchain install nightly); not fuzzing."
    echo "fuzz.sh: the stable property tests (cargo test --test hostile_parsers) still run."
    exit 0
fi
if ! cargo +nightly fuzz --version >/dev/null 2>&1; then
    echo "fuzz.sh: cargo-fuzz is not installed (cargo install cargo-fuzz); not fuzzing."
    echo "fuzz.sh: the stable property tests (cargo test --test hostile_parsers) still run."
    exit 0
fi

targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
    targets=("${ALL_TARGETS[@]}")
fi

# Seeds: the repository's own valid inputs, plus the kept regressions.
seed() {
    local target=$1 dir=$ROOT/fuzz/corpus/$1
    mkdir -p "$dir"
    case $target in
        queue_xml | cosmos_json)
            local file=queue.jsonl
            [ "$target" = cosmos_json ] && file=cosmos.jsonl
            # One response body per seed file (first byte: the status selector, 0 = 200).
            python3 - "$ROOT/fixtures/wire/$file" "$dir" <<'EOF'
import json, sys
for i, line in enumerate(open(sys.argv[1])):
    body = json.loads(line).get("response_body")
    if isinstance(body, str) and body:
        open(f"{sys.argv[2]}/seed-{i}", "wb").write(b"\0" + body.encode())
EOF
            ;;
        job_message)
            printf '{"runId":"r1","blueprintId":"bp","nodeId":"a"}' >"$dir/raw"
            printf 'eyJydW5JZCI6InIxIiwiYmx1ZXByaW50SWQiOiJicCIsIm5vZGVJZCI6ImEiLCJhY3RpdmF0aW9uIjozfQ==' >"$dir/base64"
            ;;
        connection_string)
            printf 'UseDevelopmentStorage=true' >"$dir/dev"
            printf 'DefaultEndpointsProtocol=https;AccountName=acct;AccountKey=a2V5;EndpointSuffix=core.windows.net' >"$dir/storage"
            printf 'AccountEndpoint=https://acct.documents.azure.com:443/;AccountKey=a2V5;' >"$dir/cosmos"
            ;;
        blueprint)
            cp "$ROOT"/fixtures/blueprints/*.json "$dir/"
            ;;
        expression)
            printf "result.output && a.b[0] === 'x'" >"$dir/and"
            printf "(n + 1) * 2 >= 3 ? s : 'none'" >"$dir/ternary"
            ;;
        replay_file)
            cp "$ROOT/fixtures/wire/queue.jsonl" "$ROOT/fixtures/wire/cosmos.jsonl" "$dir/"
            ;;
    esac
    if [ -d "$ROOT/tests/regressions/$target" ]; then
        cp "$ROOT/tests/regressions/$target"/* "$dir/" 2>/dev/null || true
    fi
}

failed=()
cd "$ROOT/fuzz"
for target in "${targets[@]}"; do
    seed "$target"
    echo "fuzz.sh: $target for ${SECONDS_PER_TARGET}s"
    if cargo +nightly fuzz run "$target" "corpus/$target" -- \
        -max_total_time="$SECONDS_PER_TARGET" -timeout=10 -rss_limit_mb=2048 \
        -max_len=262144 -jobs="$JOBS" -workers="$JOBS" -print_final_stats=1; then
        echo "fuzz.sh: $target: no crash"
    else
        failed+=("$target")
    fi
    # Keep what libFuzzer found as regression inputs for the stable test.
    for found in artifacts/"$target"/crash-* artifacts/"$target"/timeout-* artifacts/"$target"/oom-*; do
        [ -f "$found" ] || continue
        mkdir -p "$ROOT/tests/regressions/$target"
        cp "$found" "$ROOT/tests/regressions/$target/"
        echo "fuzz.sh: kept $found as tests/regressions/$target/$(basename "$found")"
    done
done

if [ ${#failed[@]} -gt 0 ]; then
    echo "fuzz.sh: crashes in: ${failed[*]} (inputs kept under tests/regressions/)"
    exit 1
fi
echo "fuzz.sh: every target ran ${SECONDS_PER_TARGET}s without a crash"
