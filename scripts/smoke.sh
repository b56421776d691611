#!/usr/bin/env bash
# The shell smoke test: the seed scenario with the real daemons.
#
# Usage: scripts/smoke.sh
#
# Starts a master and two followers on loopback in a throwaway directory,
# writes user:1 Alice and user:2 Bob, later user:3 Charlie, checks both
# followers return Charlie within the bound, restarts follower1 and checks it
# answers at once, checks a follower refuses writes, promotes follower1 to
# master with `rkv promote` (README, "Promote a follower"), starts the
# command it prints, checks follower2 follows the new master and the old
# master is refused. Any failure prints one line saying what was expected and
# what came, and exits non-zero. Every process is stopped on every exit path.
#
# Environment:
#   RKV_BIN_DIR       where rkv, rkv-master, rkv-follower are (default: the
#                     release build dir; built if missing)
#   SMOKE_BOUND       seconds a write may take to reach a follower (default 60:
#                     generous, for a busy machine; a healthy run needs 2)
#   SMOKE_BREAK=stop-follower2   stop follower2 before the check (to see the
#                     failure message)
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib/common.sh"

BOUND=${SMOKE_BOUND:-60}
WORK=$(mktemp -d "${TMPDIR:-/tmp}/rkv-smoke.XXXXXX")
RESULT="FAILED"
STEP="start"
finish() {
    local rc=$?
    stop_daemons
    if ((rc == 0)); then
        RESULT="PASSED"
        rm -rf "$WORK"
    else
        log "logs kept in $WORK"
    fi
    log "smoke test $RESULT (last step: $STEP)"
}
trap finish EXIT
trap 'exit 130' INT TERM

ensure_binaries
# expect_get ADDR KEY WANT — one clear line when the value differs.
expect_get() {
    local addr=$1 key=$2 want=$3 got
    got=$(rkv_cli --connect="$addr" get "$key" 2>&1) || true
    got=${got//$'\n'/ | }
    [[ $got == "$want" ]] || die "$STEP: expected GET $key on $addr to return '$want', got '$got'"
}
# eventually_get ADDR KEY WANT — the same, allowing BOUND seconds; at once
# when nothing listens on ADDR (a stopped daemon will not answer later).
eventually_get() {
    local addr=$1 key=$2 want=$3 got deadline=$((SECONDS + BOUND))
    while ((SECONDS < deadline)); do
        got=$(rkv_cli --connect="$addr" get "$key" 2>&1) || true
        [[ $got == "$want" ]] && return 0
        [[ $got == *"check that the daemon is running"* ]] && break
        sleep 0.1
    done
    expect_get "$addr" "$key" "$want"
}
started() { wait_for 120 rkv_cli --connect="$1" info server || die "$STEP: nothing answers on $1 (log: $2)"; }

BACKUPS=$WORK/backups
# start NAME DIR BINARY ARGS… — starts a daemon on a port of its choosing and
# sets ADDR to the address it names in DIR.
start() {
    local name=$1 dir=$2 pid_var
    shift 2
    start_daemon "$name" "$WORK/$name.log" "$@" --listen 127.0.0.1:0
    pid_var=PID_$name
    ADDR=$(daemon_addr "$dir" "${!pid_var}") || die "$STEP: $name did not start (log: $WORK/$name.log)"
    started "$ADDR" "$WORK/$name.log"
}
follower() { # NAME; sets ADDR
    start "$1" "$WORK/$1" rkv-follower --backup-dir "$BACKUPS" --data "$WORK/$1" --poll-interval 500ms
}

STEP="start master and two followers"
start master "$WORK/master" rkv-master --db "$WORK/master" --backup-dir "$BACKUPS" --interval 1s
M=$ADDR
follower f1
F1=$ADDR
follower f2
F2=$ADDR
log "master $M, followers $F1 $F2, in $WORK"

STEP="write Alice and Bob on the master"
[[ $(rkv_cli --connect="$M" put user:1 Alice) == OK ]] || die "$STEP: put user:1 did not print OK"
[[ $(rkv_cli --connect="$M" put user:2 Bob) == OK ]] || die "$STEP: put user:2 did not print OK"
eventually_get "$F1" user:1 Alice
eventually_get "$F2" user:2 Bob

STEP="write Charlie later; both followers return it within ${BOUND}s"
sleep 1
rkv_cli --connect="$M" put user:3 Charlie >/dev/null
if [[ ${SMOKE_BREAK:-} == stop-follower2 ]]; then
    log "SMOKE_BREAK: stopping follower2 before the check"
    kill -TERM "$PID_f2"
    wait "$PID_f2" 2>/dev/null || true
fi
started_at=$(date +%s%N)
eventually_get "$F1" user:3 Charlie
eventually_get "$F2" user:3 Charlie
log "Charlie reached both followers in $((($(date +%s%N) - started_at) / 1000000)) ms"

STEP="restart follower1; it answers at once"
kill -TERM "$PID_f1"
wait "$PID_f1" 2>/dev/null || true
follower f1
F1=$ADDR
expect_get "$F1" user:3 Charlie

STEP="a write to a follower is refused"
if out=$(rkv_cli --connect="$F2" put user:4 Mallory 2>&1); then
    die "$STEP: expected the follower to refuse the write, got '$out'"
fi
[[ $out == *READONLY* ]] || die "$STEP: expected a READONLY error, got '$out'"

STEP="promote follower1 to master with rkv promote"
kill -TERM "$PID_master"
wait "$PID_master" 2>/dev/null || true
kill -TERM "$PID_f1"
wait "$PID_f1" 2>/dev/null || true
out=$(rkv_cli --db="$WORK/promoted" promote --data="$WORK/f1" --backup_dir="$BACKUPS" 2>&1) ||
    die "$STEP: rkv promote failed: $out"
# The command it prints, as printed (no --take-over), on a port of its choosing.
read -r -a printed <<<"$(sed -n 's/^ *rkv-master //p' <<<"$out")"
((${#printed[@]} > 0)) || die "$STEP: rkv promote printed no rkv-master command: $out"
start promoted "$WORK/promoted" rkv-master "${printed[@]}" --interval 1s
NEW_M=$ADDR
expect_get "$NEW_M" user:3 Charlie
rkv_cli --connect="$NEW_M" put user:4 Dave >/dev/null
eventually_get "$F2" user:4 Dave

STEP="the old master, superseded, is refused"
if out=$("$BIN/rkv-master" --db "$WORK/master" --backup-dir "$BACKUPS" --listen 127.0.0.1:0 2>&1); then
    die "$STEP: expected the old master to be refused, it ran: $out"
fi
[[ $out == *"another rkv-master"* || $out == *superseded* ]] ||
    die "$STEP: expected a refusal naming the new master, got '$out'"

STEP="stop everything"
stop_daemons
