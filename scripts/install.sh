#!/usr/bin/env bash
# Installs rkv: the binaries, the systemd units, the sysusers file, env-file
# templates and the README. Idempotent: a second run changes nothing, and an
# env file an operator edited is never overwritten (the new template goes
# beside it as *.env.new).
#
# Usage: scripts/install.sh [--prefix P] [--destdir D] [--uninstall] [--no-build]
#
#   --prefix P    installation prefix (default /usr/local): binaries in P/bin,
#                 units in P/lib/systemd/system, sysusers in P/lib/sysusers.d
#   --destdir D   stage everything under D (packaging, tests); env files go to
#                 D/etc/rkv
#   --uninstall   remove what an earlier install put there; edited env files stay
#   --no-build    install binaries already built (in $CARGO_TARGET_DIR/release)
#
# After a real install (no --destdir), as root:
#   systemd-sysusers && systemctl daemon-reload
#   edit /etc/rkv/master.env, then: systemctl enable --now rkv-master
#   cp /etc/rkv/follower.env /etc/rkv/follower-eu1.env (set RKV_LISTEN), then:
#   systemctl enable --now rkv-follower@eu1
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib/common.sh"

PREFIX=/usr/local DESTDIR="" UNINSTALL=0 BUILD=1
while (($#)); do
    case $1 in
        --prefix) PREFIX=${2:?--prefix needs a path}; shift 2 ;;
        --prefix=*) PREFIX=${1#*=}; shift ;;
        --destdir) DESTDIR=${2:?--destdir needs a path}; shift 2 ;;
        --destdir=*) DESTDIR=${1#*=}; shift ;;
        --uninstall) UNINSTALL=1; shift ;;
        --no-build) BUILD=0; shift ;;
        -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
        *) echo "install.sh: unknown argument '$1' (see --help)" >&2; exit 2 ;;
    esac
done
[[ $PREFIX == /* ]] || { echo "install.sh: --prefix must be absolute, got '$PREFIX'" >&2; exit 2; }

ROOTDIR=${DESTDIR%/}
BINDIR=$PREFIX/bin
UNITDIR=$PREFIX/lib/systemd/system
SYSUSERSDIR=$PREFIX/lib/sysusers.d
DOCDIR=$PREFIX/share/doc/rkv
ETCDIR=/etc/rkv
MANIFEST=$ROOTDIR$PREFIX/share/rkv/install-manifest
CHANGED=0

# put SRC DEST MODE — installs SRC at DEST (under DESTDIR) unless identical.
put() {
    local src=$1 dest=$ROOTDIR$2 mode=$3
    mkdir -p "$(dirname "$dest")"
    if ! cmp -s "$src" "$dest"; then
        install -m "$mode" "$src" "$dest"
        log "installed $2"
        CHANGED=1
    fi
    [[ -f $MANIFEST ]] && grep -qxF "$2" "$MANIFEST" || echo "$2" >>"$MANIFEST.new"
}

# A unit with this prefix's paths.
render_unit() {
    sed -e "s|/usr/local/bin/|$BINDIR/|g" -e "s|/usr/local/share/doc/rkv/|$DOCDIR/|g" "$1"
}

uninstall() {
    [[ -f $MANIFEST ]] || { log "nothing installed under $ROOTDIR$PREFIX (no $MANIFEST)"; return 0; }
    local path
    while IFS= read -r path; do
        rm -f "$ROOTDIR$path" && log "removed $path"
    done <"$MANIFEST"
    rm -f "$MANIFEST"
    # Env files: remove the ones still equal to the template; keep edits.
    local env
    for env in master.env follower.env; do
        if [[ -f $ROOTDIR$ETCDIR/$env ]] && cmp -s "$ROOT/systemd/$env" "$ROOTDIR$ETCDIR/$env"; then
            rm -f "$ROOTDIR$ETCDIR/$env" && log "removed $ETCDIR/$env (unedited)"
        elif [[ -f $ROOTDIR$ETCDIR/$env ]]; then
            log "kept $ETCDIR/$env: it was edited"
        fi
        rm -f "$ROOTDIR$ETCDIR/$env.new"
    done
    rmdir -p "$ROOTDIR$PREFIX/share/rkv" "$ROOTDIR$DOCDIR" "$ROOTDIR$ETCDIR" "$ROOTDIR$UNITDIR" \
        "$ROOTDIR$SYSUSERSDIR" "$ROOTDIR$BINDIR" 2>/dev/null || true
    log "uninstalled"
}

if ((UNINSTALL)); then
    uninstall
    exit 0
fi

if ((BUILD)); then
    log "building release binaries"
    (cd "$ROOT" && cargo build --release --bins --quiet)
fi
for b in rkv rkv-master rkv-follower; do
    [[ -x $BIN/$b ]] || { echo "install.sh: $BIN/$b is missing; run without --no-build" >&2; exit 1; }
done

mkdir -p "$(dirname "$MANIFEST")"
rm -f "$MANIFEST.new"
for b in rkv rkv-master rkv-follower; do
    put "$BIN/$b" "$BINDIR/$b" 0755
done
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
for unit in rkv-master.service rkv-follower@.service; do
    render_unit "$ROOT/systemd/$unit" >"$tmp/$unit"
    put "$tmp/$unit" "$UNITDIR/$unit" 0644
done
put "$ROOT/systemd/rkv.sysusers" "$SYSUSERSDIR/rkv.conf" 0644
put "$ROOT/README.md" "$DOCDIR/README.md" 0644

# Env files: installed once; an edited one stays, the new template beside it.
mkdir -p "$ROOTDIR$ETCDIR"
for env in master.env follower.env; do
    dest=$ROOTDIR$ETCDIR/$env
    if [[ ! -e $dest ]]; then
        install -m 0640 "$ROOT/systemd/$env" "$dest"
        log "installed $ETCDIR/$env"
        CHANGED=1
    elif ! cmp -s "$ROOT/systemd/$env" "$dest"; then
        if ! cmp -s "$ROOT/systemd/$env" "$dest.new"; then
            install -m 0640 "$ROOT/systemd/$env" "$dest.new"
            log "kept the edited $ETCDIR/$env; the current template is $ETCDIR/$env.new"
            CHANGED=1
        fi
    fi
done

if [[ -f $MANIFEST.new ]]; then
    cat "$MANIFEST.new" >>"$MANIFEST"
    rm -f "$MANIFEST.new"
fi
if ((CHANGED)); then
    log "installed rkv under ${DESTDIR:+$DESTDIR }$PREFIX"
else
    log "already up to date under ${DESTDIR:+$DESTDIR }$PREFIX"
fi
if [[ -z $DESTDIR ]]; then
    log "next: systemd-sysusers && systemctl daemon-reload; edit $ETCDIR/master.env; systemctl enable --now rkv-master"
fi
