#!/usr/bin/env bash
# Installs, starts and stops the local emulator stack the integration tests run against:
# Azurite (Queue Storage only), @vercel/cosmosdb-server (Cosmos SQL REST, plain HTTP) and
# redis-server, all bound to 127.0.0.1. Versions are pinned below.
#
#   scripts/emulators.sh install   install what is missing (idempotent, quick when installed)
#   scripts/emulators.sh start     install, start every service that is not answering yet,
#                                  wait until all answer (exit 1 if one does not)
#   scripts/emulators.sh stop      stop the services this run directory started
#   scripts/emulators.sh status    say which services answer
#   scripts/emulators.sh env       print `export ...` lines for the test environment
#
# Installed under $FLOWCRAFT_EMULATOR_DIR (default: <repo>/.emulators, git-ignored). Pid files go
# to $FLOWCRAFT_EMULATOR_RUN_DIR (default: $FLOWCRAFT_EMULATOR_DIR/run); give each caller its
# own run directory so that `stop` only ends what that caller started.
set -euo pipefail

REPO="$(cd "$(dirname "$0")/.." && pwd)"
EMU="${FLOWCRAFT_EMULATOR_DIR:-$REPO/.emulators}"
RUN="${FLOWCRAFT_EMULATOR_RUN_DIR:-$EMU/run}"

AZURITE_VERSION=3.35.0
COSMOS_VERSION=1.0.1
QUEUE_PORT=11001
COSMOS_PORT=18081
REDIS_PORT=16379
# Well-known public emulator keys (spec §0 / §7); never real secrets.
AZURITE_KEY='Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=='
COSMOS_KEY='C2y6yDjf5/R+ob0N8A7Cgv30VRDJIWEHLM+4QDU5DE2nQ9nDuVTqobD4b8mGGyPMbIZnqyMsEcaGQy67XIw/Jw=='

COSMOS_CLI="$EMU/node_modules/@vercel/cosmosdb-server/lib/cli.js"
COSMOS_READ_HANDLER="$EMU/node_modules/@vercel/cosmosdb-server/lib/handler/read-document.js"
AZURITE_BIN="$EMU/node_modules/.bin/azurite-queue"

log() { echo "emulators: $*" >&2; }
die() { log "ERROR: $*"; exit 1; }

installed_version() { # package dir -> version or empty
    local pj="$EMU/node_modules/$1/package.json"
    [ -f "$pj" ] && node -e 'process.stdout.write(require(process.argv[1]).version)' "$pj" 2>/dev/null || true
}

APT_UPDATED=0
apt_install() { # package... ; only as root on a Debian-like machine
    command -v apt-get >/dev/null || die "$* missing and apt-get is not available; install: $*"
    [ "$(id -u)" = 0 ] || die "$* missing; run as root or install them: apt-get install -y $*"
    log "installing $* with apt-get"
    if [ "$APT_UPDATED" = 0 ]; then apt-get update -qq; APT_UPDATED=1; fi
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@" >/dev/null
}

install_curl() { # the readiness checks use curl
    command -v curl >/dev/null || apt_install curl ca-certificates
}

install_redis() {
    command -v redis-server >/dev/null && command -v redis-cli >/dev/null && return 0
    apt_install redis-server
}

install_node() {
    command -v node >/dev/null && command -v npm >/dev/null || apt_install nodejs npm
    local major
    major="$(node -p 'process.versions.node.split(".")[0]')"
    [ "$major" -ge 18 ] || die "node $major is too old; the emulators need Node 18+ (20 tested)"
    [ "$major" -ge 20 ] || log "warning: node $major; @vercel/cosmosdb-server declares Node >= 20"
}

install_node_packages() {
    install_node
    if [ "$(installed_version azurite)" != "$AZURITE_VERSION" ] \
        || [ "$(installed_version @vercel/cosmosdb-server)" != "$COSMOS_VERSION" ] \
        || [ ! -x "$AZURITE_BIN" ] || [ ! -f "$COSMOS_CLI" ]; then
        log "installing azurite@$AZURITE_VERSION and @vercel/cosmosdb-server@$COSMOS_VERSION into $EMU"
        mkdir -p "$EMU"
        cat > "$EMU/package.json" <<JSON
{"name":"flowcraft-emulators","private":true,"dependencies":{"azurite":"$AZURITE_VERSION","@vercel/cosmosdb-server":"$COSMOS_VERSION"}}
JSON
        (cd "$EMU" && npm install --no-audit --no-fund --loglevel=error >/dev/null) \
            || die "npm install failed (is the npm registry reachable?)"
    fi
    # 404 instead of 500 for a point read of a missing document (spec §7). Idempotent: the
    # pattern no longer matches once patched.
    sed -i 's/if (data\[path\] !== clientKeys\[i\])/if (!data || data[path] !== clientKeys[i])/' "$COSMOS_READ_HANDLER"
    grep -q 'if (!data || data\[path\] !== clientKeys\[i\])' "$COSMOS_READ_HANDLER" \
        || die "could not patch $COSMOS_READ_HANDLER (unexpected cosmosdb-server version?)"
}

queue_ready() { curl -s -o /dev/null --max-time 2 "http://127.0.0.1:$QUEUE_PORT/"; }
cosmos_ready() { curl -sf -o /dev/null --max-time 2 "http://127.0.0.1:$COSMOS_PORT/"; }
redis_ready() { [ "$(redis-cli -h 127.0.0.1 -p "$REDIS_PORT" ping 2>/dev/null)" = PONG ]; }

wait_for() { # name check-function
    local i
    for i in $(seq 150); do
        "$2" && return 0
        sleep 0.2
    done
    log "$1 did not become ready within 30 s; its log:"
    tail -n 20 "$RUN/$1.log" >&2 2>/dev/null || true
    die "$1 is not ready"
}

start() {
    install_curl
    install_redis
    install_node_packages
    mkdir -p "$RUN"
    if queue_ready; then
        log "azurite already answers on $QUEUE_PORT; reusing it"
    else
        "$AZURITE_BIN" --queueHost 127.0.0.1 --queuePort "$QUEUE_PORT" --inMemoryPersistence \
            --skipApiVersionCheck --disableTelemetry --silent >"$RUN/azurite.log" 2>&1 &
        echo $! >"$RUN/azurite.pid"
    fi
    if cosmos_ready; then
        log "cosmosdb-server already answers on $COSMOS_PORT; reusing it"
    else
        node "$COSMOS_CLI" --host 127.0.0.1 -p "$COSMOS_PORT" --no-ssl >"$RUN/cosmos.log" 2>&1 &
        echo $! >"$RUN/cosmos.pid"
    fi
    if redis_ready; then
        log "redis already answers on $REDIS_PORT; reusing it"
    else
        redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --save '' --appendonly no \
            --daemonize yes --pidfile "$RUN/redis.pid" --logfile "$RUN/redis.log" >/dev/null
    fi
    wait_for azurite queue_ready
    wait_for cosmos cosmos_ready
    wait_for redis redis_ready
    log "ready: queue :$QUEUE_PORT, cosmos :$COSMOS_PORT, redis :$REDIS_PORT"
}

stop() {
    local svc pid i
    for svc in azurite cosmos redis; do
        [ -f "$RUN/$svc.pid" ] || continue
        pid="$(cat "$RUN/$svc.pid")"
        rm -f "$RUN/$svc.pid"
        [ -n "$pid" ] && kill "$pid" 2>/dev/null || continue
        # Wait (up to 10 s) for the process to exit so the port is free for the next start.
        for i in $(seq 50); do
            kill -0 "$pid" 2>/dev/null || break
            sleep 0.2
        done
        log "stopped $svc (pid $pid)"
    done
}

status() {
    local ok=0
    if queue_ready; then log "azurite: up"; else log "azurite: down"; ok=1; fi
    if cosmos_ready; then log "cosmos: up"; else log "cosmos: down"; ok=1; fi
    if redis_ready; then log "redis: up"; else log "redis: down"; ok=1; fi
    return $ok
}

print_env() {
    cat <<ENV
export FLOWCRAFT_EMULATORS=1
export AZURE_QUEUE_ENDPOINT=http://127.0.0.1:$QUEUE_PORT/devstoreaccount1
export AZURE_STORAGE_ACCOUNT=devstoreaccount1
export AZURE_STORAGE_KEY='$AZURITE_KEY'
export AZURE_STORAGE_CONNECTION_STRING='DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;AccountKey=$AZURITE_KEY;QueueEndpoint=http://127.0.0.1:$QUEUE_PORT/devstoreaccount1;'
export COSMOS_ENDPOINT=http://127.0.0.1:$COSMOS_PORT
export COSMOS_KEY='$COSMOS_KEY'
export COSMOS_CONNECTION_STRING='AccountEndpoint=http://127.0.0.1:$COSMOS_PORT/;AccountKey=$COSMOS_KEY;'
export REDIS_URL=redis://127.0.0.1:$REDIS_PORT
ENV
}

case "${1:-}" in
    install) install_curl; install_redis; install_node_packages ;;
    start) start ;;
    stop) stop ;;
    status) status ;;
    env) print_env ;;
    *) echo "usage: $0 install|start|stop|status|env" >&2; exit 2 ;;
esac
