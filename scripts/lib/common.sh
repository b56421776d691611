# Shared helpers for rkv's shell scripts; source it after `set -euo pipefail`.
# Provides: ROOT, BIN, log, die, ensure_binaries, free_port, start_daemon,
# stop_daemons, wait_for, rkv_cli.

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$HOME/.cache/rkv/target}
BIN=${RKV_BIN_DIR:-$CARGO_TARGET_DIR/release}
SCRIPT=$(basename "$0")
DAEMON_PIDS=()

log() { printf '%s %s: %s\n' "$(date -u +%H:%M:%S.%3N)" "$SCRIPT" "$*" >&2; }
die() { log "FAIL: $*"; exit 1; }

# Builds the binaries when any is missing (the first build compiles RocksDB:
# about 12 minutes on 2 cores).
ensure_binaries() {
    local missing=0 b
    for b in rkv rkv-master rkv-follower; do
        [[ -x $BIN/$b ]] || missing=1
    done
    if ((missing)); then
        [[ -n ${RKV_BIN_DIR:-} ]] && die "RKV_BIN_DIR=$RKV_BIN_DIR lacks rkv, rkv-master or rkv-follower"
        log "building rkv (release) into $CARGO_TARGET_DIR; the first build takes about 12 minutes"
        (cd "$ROOT" && cargo build --release --bins --quiet)
    fi
}

# Prints a loopback TCP port nobody listens on now.
free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

# start_daemon NAME LOGFILE BINARY ARGS… — starts a daemon in the background,
# records its pid in DAEMON_PIDS and in the variable PID_<NAME>.
start_daemon() {
    local name=$1 logfile=$2 binary=$3
    shift 3
    "$BIN/$binary" "$@" >"$logfile" 2>&1 &
    DAEMON_PIDS+=($!)
    printf -v "PID_$name" '%s' "$!"
}

# Stops every daemon this script started: SIGTERM, then SIGKILL after 10 s.
stop_daemons() {
    local pid deadline
    for pid in "${DAEMON_PIDS[@]}"; do
        kill -TERM "$pid" 2>/dev/null || true
    done
    deadline=$((SECONDS + 10))
    for pid in "${DAEMON_PIDS[@]}"; do
        while kill -0 "$pid" 2>/dev/null && ((SECONDS < deadline)); do sleep 0.1; done
        kill -KILL "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
    done
    DAEMON_PIDS=()
}

# wait_for SECONDS COMMAND… — runs COMMAND every 100 ms until it succeeds;
# returns 1 after SECONDS.
wait_for() {
    local limit=$1 deadline
    shift
    deadline=$(($(date +%s%N) + limit * 1000000000))
    until "$@" >/dev/null 2>&1; do
        (($(date +%s%N) < deadline)) || return 1
        sleep 0.1
    done
}

# rkv_cli ARGS… — the rkv CLI.
rkv_cli() { "$BIN/rkv" "$@"; }
