#!/usr/bin/env bash
# rkv in one command: a master and two followers on loopback, in a throwaway
# directory. Writes keys through `rkv`, shows them arriving on both followers
# with the measured lag, shows a follower refusing a write and its
# INFO replication, then stops everything (also on Ctrl-C).
#
# Usage: scripts/demo.sh [--keep-running]
#
#   --keep-running   leave the daemons up until Ctrl-C, to try redis-cli on them
#
# Builds the binaries first when missing (the first build compiles RocksDB:
# about 12 minutes on 2 cores).
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib/common.sh"

KEEP_RUNNING=0
case ${1:-} in
    --keep-running) KEEP_RUNNING=1 ;;
    "") ;;
    -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) echo "demo.sh: unknown argument '$1' (see --help)" >&2; exit 2 ;;
esac

WORK=$(mktemp -d "${TMPDIR:-/tmp}/rkv-demo.XXXXXX")
cleanup() {
    stop_daemons
    rm -rf "$WORK"
    log "stopped every process and removed $WORK"
}
trap cleanup EXIT
trap 'echo; exit 130' INT TERM

say() { printf '\n\033[1m== %s\033[0m\n' "$*"; }
show() { # prints and runs a command; `rkv` is the built binary
    printf '$ %s\n' "$*"
    if [[ $1 == rkv ]]; then shift; rkv_cli "$@"; else "$@"; fi
}

ensure_binaries
# Each daemon picks a free loopback port and names it in its directory.
start_daemon master "$WORK/master.log" rkv-master --db "$WORK/master" --backup-dir "$WORK/backups" \
    --listen 127.0.0.1:0 --interval 1s
start_daemon f1 "$WORK/f1.log" rkv-follower --backup-dir "$WORK/backups" --data "$WORK/f1" \
    --listen 127.0.0.1:0 --poll-interval 250ms
start_daemon f2 "$WORK/f2.log" rkv-follower --backup-dir "$WORK/backups" --data "$WORK/f2" \
    --listen 127.0.0.1:0 --poll-interval 250ms
M=$(daemon_addr "$WORK/master" "$PID_master") || die "the master did not start; logs in $WORK"
F1=$(daemon_addr "$WORK/f1" "$PID_f1") || die "follower 1 did not start; logs in $WORK"
F2=$(daemon_addr "$WORK/f2" "$PID_f2") || die "follower 2 did not start; logs in $WORK"
say "Started rkv-master on $M (backup every 1s) and two followers on $F1 and $F2 (poll every 250ms)"
for addr in "$M" "$F1" "$F2"; do
    wait_for 120 rkv_cli --connect="$addr" info server || die "nothing answers on $addr; logs in $WORK"
done

say "Writing through the master with rkv"
show rkv --connect="$M" put user:1 Alice
show rkv --connect="$M" put user:2 Bob
show rkv --connect="$M" put user:3 Charlie

say "Waiting for the writes to arrive on both followers"
start=$(date +%s%N)
for addr in "$F1" "$F2"; do
    wait_for 120 bash -c "[[ \$('$BIN/rkv' --connect='$addr' get user:3 2>/dev/null) == Charlie ]]" ||
        die "user:3 did not reach $addr within 120 s; logs in $WORK"
    printf 'user:3 readable on %s after %d ms\n' "$addr" $((($(date +%s%N) - start) / 1000000))
done
show rkv --connect="$F1" scan
for addr in "$F1" "$F2"; do
    staleness=$(rkv_cli --connect="$addr" info replication | sed -n 's/^rkv_staleness_ms://p')
    printf 'measured staleness on %s: %s ms (bound: interval 1s + poll 250ms + apply)\n' "$addr" "$staleness"
done

say "A follower refuses writes"
printf '$ rkv --connect=%s put user:4 Mallory\n' "$F1"
rkv_cli --connect="$F1" put user:4 Mallory || true

say "The follower's INFO replication"
show rkv --connect="$F1" info replication

say "The backups the master made"
show rkv backups --backup_dir="$WORK/backups"

if ((KEEP_RUNNING)); then
    say "Running; try: redis-cli -p ${F1##*:} GET user:1   (Ctrl-C stops everything)"
    while true; do sleep 1; done
fi
