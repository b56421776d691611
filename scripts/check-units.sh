#!/usr/bin/env bash
# Checks the systemd units: `systemd-analyze verify` passes and each unit's
# overall exposure in `systemd-analyze security --offline=true` is at most
# 2.0. Run by the test command.
#
# Usage: scripts/check-units.sh
#
# verify needs ExecStart to exist, so the units are checked as install.sh
# renders them with the prefix pointing at the build's binaries.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib/common.sh"

MAX_EXPOSURE=2.0
command -v systemd-analyze >/dev/null || die "systemd-analyze is missing: apt-get install systemd"
ensure_binaries
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
failures=0
for unit in rkv-master.service rkv-follower@.service; do
    # A template is verified as an instance.
    name=${unit/@./@eu1.}
    sed -e "s|/usr/local/bin/|$BIN/|g" "$ROOT/systemd/$unit" >"$WORK/$name"
    if out=$(systemd-analyze verify "$WORK/$name" 2>&1) && [[ -z $out ]]; then
        log "$unit: systemd-analyze verify passed"
    else
        log "FAIL: $unit: systemd-analyze verify: $out"
        failures=$((failures + 1))
    fi
    exposure=$(systemd-analyze security --offline=true "$WORK/$name" 2>&1 |
        sed -n 's/.*Overall exposure level for [^:]*: \([0-9.]*\).*/\1/p')
    if [[ -z $exposure ]]; then
        log "FAIL: $unit: systemd-analyze security printed no exposure level"
        failures=$((failures + 1))
    elif awk -v e="$exposure" -v m="$MAX_EXPOSURE" 'BEGIN { exit !(e <= m) }'; then
        log "$unit: exposure $exposure (at most $MAX_EXPOSURE)"
    else
        log "FAIL: $unit: exposure $exposure is above $MAX_EXPOSURE"
        failures=$((failures + 1))
    fi
done
((failures == 0)) || die "$failures unit check(s) failed"
log "units OK"
