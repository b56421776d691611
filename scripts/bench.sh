#!/usr/bin/env bash
# rkv's benchmark: lag, catch-up cost against database size, master write
# throughput with and without backups, follower reads against redis-server,
# and new-follower bootstrap. Prints a table per scenario and writes
# BENCHMARKS.md plus two PNG plots (lag CDF, catch-up time against size).
#
# Usage: scripts/bench.sh [--quick] [--out DIR]
#
#   --quick     small sizes, short runs (under 3 minutes); proves the benchmark
#               works, not how fast rkv is. Writes into a temp dir unless --out
#               is given, so the committed BENCHMARKS.md is never replaced by
#               quick numbers.
#   --out DIR   where BENCHMARKS.md and the plots go (default: the repo root)
#
# Installs what it needs when missing (as root): redis-server and
# redis-tools (the comparison and redis-benchmark), gnuplot-nox (the plots).
# The full run takes under 20 minutes on 2 cores and about 6 GiB of disk.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib/common.sh"

QUICK=() OUT=""
while (($#)); do
    case $1 in
        --quick) QUICK=(--quick); shift ;;
        --out) OUT=${2:?--out needs a directory}; shift 2 ;;
        --out=*) OUT=${1#*=}; shift ;;
        -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
        *) echo "bench.sh: unknown argument '$1' (see --help)" >&2; exit 2 ;;
    esac
done
if [[ -z $OUT ]]; then
    if ((${#QUICK[@]})); then OUT=$(mktemp -d "${TMPDIR:-/tmp}/rkv-bench-quick.XXXXXX"); else OUT=$ROOT; fi
fi

missing=()
command -v redis-server >/dev/null || missing+=(redis-server)
command -v redis-benchmark >/dev/null || missing+=(redis-tools)
command -v gnuplot >/dev/null || missing+=(gnuplot-nox)
if ((${#missing[@]})); then
    [[ $(id -u) -eq 0 ]] || die "missing packages: ${missing[*]}; install them (sudo apt-get install -y ${missing[*]})"
    log "installing ${missing[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi

if [[ -z ${RKV_BIN_DIR:-} ]]; then
    log "building (release)"
    (cd "$ROOT" && cargo build --release --bins --quiet)
fi
[[ -x $BIN/rkv-bench ]] || die "$BIN/rkv-bench is missing"
log "running rkv-bench ${QUICK[*]} into $OUT"
"$BIN/rkv-bench" "${QUICK[@]}" --out "$OUT"
for f in BENCHMARKS.md bench-lag-cdf.png bench-catchup.png; do
    [[ -s $OUT/$f ]] || die "the benchmark did not produce $OUT/$f"
done
log "results: $OUT/BENCHMARKS.md, $OUT/bench-lag-cdf.png, $OUT/bench-catchup.png"
