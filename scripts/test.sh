#!/usr/bin/env bash
# The test command: installs what a fresh machine lacks, builds everything in
# release mode (RocksDB compiles once, for the binaries and the tests alike),
# and runs every test.
#
# Usage: scripts/test.sh
#
# Environment:
#   CARGO_TARGET_DIR  build directory (default: $HOME/.cache/rkv/target, kept
#                     outside the checkout so a fresh clone reuses the ~12 min
#                     RocksDB build)
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$HOME/.cache/rkv/target}
START=$(date +%s)

log() { printf '%s test.sh: %s\n' "$(date -u +%H:%M:%S)" "$*" >&2; }
RESULTS=$(mktemp)
summary() {
    local rc=$?
    rm -f "$RESULTS"
    log "finished with exit code $rc after $(( $(date +%s) - START ))s"
    # The closing line CI reads: the count of everything that ran.
    [[ -n ${TESTS_LINE:-} ]] && echo "$TESTS_LINE"
    return "$rc"
}
trap summary EXIT

# System packages: libclang for RocksDB's bindings, clang to build it,
# redis-cli for the tests that drive the daemons with a real Redis client,
# systemd-analyze for the unit checks, python3 for the scripts' port picking,
# redis-server for the quick benchmark and the differential test, gnuplot and
# strace (system calls per request) for the benchmark, faketime for the tests
# and fault scenarios of a master whose clock is hours off, python3's venv
# for moto and redis-py (below), prometheus for promtool, which lints the
# metrics, and openssl, which makes the TLS tests' private CA as the README does.
missing=()
# libclang itself (libclang.so, libclang-14.so.1), not libclang-cpp, which
# other packages bring and bindgen cannot use.
compgen -G '/usr/lib/llvm-*/lib/libclang.so*' >/dev/null ||
    compgen -G '/usr/lib/llvm-*/lib/libclang-[0-9]*.so*' >/dev/null || missing+=(libclang-dev)
command -v clang >/dev/null || missing+=(clang)
command -v redis-cli >/dev/null || missing+=(redis-tools)
command -v systemd-analyze >/dev/null || missing+=(systemd)
command -v python3 >/dev/null || missing+=(python3)
command -v redis-server >/dev/null || missing+=(redis-server)
command -v gnuplot >/dev/null || missing+=(gnuplot-nox)
command -v strace >/dev/null || missing+=(strace)
compgen -G '/usr/lib/*/faketime/libfaketime.so.1' >/dev/null || missing+=(faketime)
python3 -c 'import venv, ensurepip' 2>/dev/null || missing+=(python3-venv)
command -v promtool >/dev/null || missing+=(prometheus)
command -v openssl >/dev/null || missing+=(openssl)
if ((${#missing[@]})); then
    if [[ $(id -u) -ne 0 ]]; then
        log "missing packages: ${missing[*]}; install them (sudo apt-get install -y ${missing[*]}) and rerun"
        exit 1
    fi
    log "installing ${missing[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi

# moto's S3 server, a real S3-compatible store for the object store tests,
# in a virtualenv under the cache directory so reruns do not reinstall it.
MOTO_VENV=${RKV_MOTO_VENV:-$HOME/.cache/rkv/moto-venv}
if [[ ! -x $MOTO_VENV/bin/moto_server ]]; then
    log "installing moto[server] into $MOTO_VENV"
    python3 -m venv "$MOTO_VENV"
    "$MOTO_VENV/bin/pip" install -q 'moto[server]==5.2.5'
fi
export RKV_MOTO_SERVER=$MOTO_VENV/bin/moto_server

# The newest redis-py from PyPI, for the test that uses it as a user would
# (at its default settings): upgraded on every run, so a new release that
# breaks against rkv shows up here first.
REDIS_PY_VENV=${RKV_REDIS_PY_VENV:-$HOME/.cache/rkv/redis-py-venv}
[[ -x $REDIS_PY_VENV/bin/python ]] || python3 -m venv "$REDIS_PY_VENV"
"$REDIS_PY_VENV/bin/pip" install -q --upgrade redis
log "redis-py $("$REDIS_PY_VENV/bin/python" -c 'import redis; print(redis.__version__)')"
export RKV_REDIS_PY=$REDIS_PY_VENV/bin/python

log "cargo fmt --check"
cargo fmt --all --check
log "building (release) into $CARGO_TARGET_DIR"
cargo build --release --workspace --all-targets --locked
log "running the tests"
cargo test --release --workspace --locked 2>&1 | tee "$RESULTS"
count() { awk -v what="$1" '/^test result:/ { for (i = 1; i < NF; i++) if ($(i + 1) ~ "^" what) n += $i } END { print n + 0 }' "$RESULTS"; }
passed=$(count passed)
failed=$(count failed)
log "checking the systemd units"
scripts/check-units.sh
passed=$((passed + 1))
log "running the shell smoke test"
scripts/smoke.sh
passed=$((passed + 1))
log "running the benchmark in quick mode (it must run and produce numbers; speed is not checked)"
BENCH_OUT=$(mktemp -d)
RKV_BIN_DIR=$CARGO_TARGET_DIR/release scripts/bench.sh --quick --out "$BENCH_OUT" >/dev/null
grep -q '^| rkv, defaults | [1-9]' "$BENCH_OUT/BENCHMARKS.md" || { log "the quick benchmark has no lag numbers"; exit 1; }
rm -rf "$BENCH_OUT"
passed=$((passed + 1))
log "running the fault suite in quick mode (every scenario must lose nothing, serve nothing wrong, get stuck nowhere)"
FAULTS_OUT=$(mktemp -d)
RKV_BIN_DIR=$CARGO_TARGET_DIR/release scripts/faults.sh --quick --out "$FAULTS_OUT" >&2
rm -rf "$FAULTS_OUT"
passed=$((passed + 1))
TESTS_LINE="tests: $passed passed, $failed failed"
