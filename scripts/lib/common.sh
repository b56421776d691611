# Shared helpers for rkv's shell scripts; source it after `set -euo pipefail`.
# Provides: ROOT, BIN, log, die, ensure_binaries, daemon_addr, start_daemon,
# stop_daemons, wait_for, rkv_cli.

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
# The harness reads its scripts and analysis from this checkout.
export RKV_REPO=$ROOT
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

# daemon_addr DIR PID — waits (up to 30 s) for the daemon PID to name its
# address in DIR/rkv-daemon.json (it writes the file once it listens), and
# prints it. Daemons started with --listen 127.0.0.1:0 pick a free port
# themselves: no port is picked here and lost to a race.
daemon_addr() {
    local dir=$1 pid=$2 deadline=$((SECONDS + 120)) addr
    while ((SECONDS < deadline)); do
        addr=$(python3 -c 'import json, sys
f = json.load(open(sys.argv[1]))
print(f["listen"][0] if f["pid"] == int(sys.argv[2]) else "")' "$dir/rkv-daemon.json" "$pid" 2>/dev/null) || addr=""
        if [[ -n $addr ]]; then
            echo "$addr"
            return 0
        fi
        kill -0 "$pid" 2>/dev/null || return 1
        sleep 0.05
    done
    return 1
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
