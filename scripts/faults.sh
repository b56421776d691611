#!/usr/bin/env bash
# rkv's fault suite: starts the real daemons on temp dirs and loopback ports,
# injects the faults an operator meets (kill -9 of the master during backups
# and of followers during applies, damaged backup files, full disks,
# retention shorter than a restore, two masters on one directory, a replaced
# directory, a master clock hours off, an idle follower; the live tail's
# master and follower kills while it ships and applies, damaged and removed
# segments, a shipper stalled past --keep-log) and hostile clients
# (a seeded RESP fuzzer, thousands of connections, unauthenticated floods,
# slow and non-reading clients, a 100,000-command pipeline, a
# million-argument request), prints one line of figures per scenario and
# writes RELIABILITY.md and reliability-recovery.png. Exits 1 when any
# scenario lost a write, served wrong data, crashed, hung or got stuck.
#
# Usage: scripts/faults.sh [--quick] [--out DIR] [--only NAME,…] [--seed N]
#
#   --quick     few tries per scenario (about 3 minutes): proves every
#               scenario works. Writes into a temp dir unless --out is
#               given, so the committed RELIABILITY.md keeps the full run's
#               figures.
#   --out DIR   where RELIABILITY.md and the plot go (default: the repo root)
#   --only …    run only these scenarios (see rkv-faults --help)
#   --seed N    the seed of the random kill moments (default 1)
#
# The full run takes about 20 minutes on 2 cores. Run as root for the
# full-disk scenarios (they mount small tmpfs); installs faketime (the
# clock-skew scenario) and gnuplot-nox (the plot) when missing, as root.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib/common.sh"

QUICK=() OUT="" PASS=()
while (($#)); do
    case $1 in
        --quick) QUICK=(--quick); shift ;;
        --out) OUT=${2:?--out needs a directory}; shift 2 ;;
        --out=*) OUT=${1#*=}; shift ;;
        --only|--seed) PASS+=("$1" "${2:?$1 needs a value}"); shift 2 ;;
        --only=*|--seed=*) PASS+=("$1"); shift ;;
        -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
        *) echo "faults.sh: unknown argument '$1' (see --help)" >&2; exit 2 ;;
    esac
done
if [[ -z $OUT ]]; then
    if ((${#QUICK[@]})); then OUT=$(mktemp -d "${TMPDIR:-/tmp}/rkv-faults-quick.XXXXXX"); else OUT=$ROOT; fi
fi

missing=()
compgen -G '/usr/lib/*/faketime/libfaketime.so.1' >/dev/null || missing+=(faketime)
command -v gnuplot >/dev/null || missing+=(gnuplot-nox)
# The private CA of the TLS scenarios.
command -v openssl >/dev/null || missing+=(openssl)
if ((${#missing[@]})); then
    if [[ $(id -u) -eq 0 ]]; then
        log "installing ${missing[*]}"
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
    else
        log "missing ${missing[*]}: the scenarios that need them report themselves skipped"
    fi
fi

if [[ -z ${RKV_BIN_DIR:-} ]]; then
    log "building (release)"
    (cd "$ROOT" && cargo build --release --workspace --bins --quiet)
fi
[[ -x $BIN/rkv-faults ]] || die "$BIN/rkv-faults is missing"
log "running rkv-faults ${QUICK[*]} ${PASS[*]} into $OUT"
"$BIN/rkv-faults" "${QUICK[@]}" "${PASS[@]}" --out "$OUT"
[[ -s $OUT/RELIABILITY.md ]] || die "the fault suite did not write $OUT/RELIABILITY.md"
log "results: $OUT/RELIABILITY.md"
