#!/usr/bin/env bash
# Another Debian release's root tree, to test set-up on it from this host (Debian 13 on a
# Debian 12 host): debootstrap --variant=minbase (nothing of ours pre-installed), cached under
# the tool's cache dir, with a copy of this checkout in /src/rcupending-tools.
#
#   scripts/debian-tree.sh prepare [SUITE]        bootstrap (cached), copy the checkout, run its
#                                                 scripts/setup.sh and setup-integration.sh in
#                                                 the tree and fetch the kernel its lab VM
#                                                 boots; exit status is theirs
#   scripts/debian-tree.sh run SUITE -- CMD...    CMD as root in the tree's copy of the checkout
#
# The mirror is this machine's own, read at run time from /etc/apt/sources.list{,.d}
# (rcupending_tools/lab/sources.py). Commands run under chroot in a private mount namespace
# (unshare), so the /proc, /sys, /dev mounts they need vanish with them, even on kill -9.
# Environment: RCUPENDING_CACHE (cache dir), RCUPENDING_TREE_MAX_DAYS (rebootstrap after, 7).
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
cache=${RCUPENDING_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/rcupending-tools}
KERNEL=debian:6.12  # what tests/integration/test_fleet_vm.py boots from the tree

# Logs keep no host names (the mirror's URL shows in apt's and debootstrap's output).
redact() { sed -E 's#([a-z+]+://)[^/[:space:]]+#\1<host>#g'; }

usage() { sed -n '2,13p' "$0" >&2; exit 2; }

paths() {
    suite=$1
    tree=$cache/debian-$suite/root
    state=$cache/debian-$suite
}

# Run "$@" as root inside $tree, in /src/rcupending-tools, with a clean environment.
in_tree() {
    local pass=(HOME=/root TERM=dumb LANG=C.UTF-8
                PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin)
    local v ca
    for v in http_proxy https_proxy no_proxy RCUPENDING_VM_ACCEL $(compgen -e | grep '^PIP_'); do
        [ "$v" != PIP_CERT ] && [ -n "${!v:-}" ] && pass+=("$v=${!v}")
    done
    # pip trusts what it trusts on this machine (a site CA: PIP_CERT or pip.conf's cert)
    ca=${PIP_CERT:-$("$repo/.venv/bin/pip" config get global.cert 2>/dev/null || true)}
    if [ -n "$ca" ] && [ -f "$ca" ]; then
        cp -L "$ca" "$tree/etc/rcupending-host-ca.crt"
        pass+=(PIP_CERT=/etc/rcupending-host-ca.crt)
    fi
    cp -L /etc/resolv.conf "$tree/etc/resolv.conf"
    # the accelerator verdict is per host boot (lab/accel.py): the tree runs on the same one
    if [ -f "$cache/accel.json" ]; then
        mkdir -p "$tree/root/.cache/rcupending-tools"
        cp "$cache/accel.json" "$tree/root/.cache/rcupending-tools/accel.json"
    fi
    unshare --mount --propagation private -- /bin/sh -euc '
        t=$1; shift
        mount -t proc proc "$t/proc"
        mount --rbind /sys "$t/sys"
        mount --rbind /dev "$t/dev"
        mount -t tmpfs -o mode=1777 tmpfs "$t/tmp"
        mount -t tmpfs tmpfs "$t/run"
        exec chroot "$t" /usr/bin/env -i "$@"
    ' - "$tree" "${pass[@]}" /bin/sh -c 'cd /src/rcupending-tools && exec "$@"' - "$@"
}

bootstrap() {
    local mirror keyring max_days=${RCUPENDING_TREE_MAX_DAYS:-7}
    if [ -f "$state/bootstrapped" ] && \
       [ -z "$(find "$state/bootstrapped" -mtime "+$max_days" 2>/dev/null)" ]; then
        return 0
    fi
    # the venv (scripts/setup.sh made it) sees Debian's python3-apt, which sources.py uses
    read -r mirror keyring < <(PYTHONPATH=$repo "$repo/.venv/bin/python" -c '
from rcupending_tools.lab.sources import debian_mirrors
m = debian_mirrors()
if not m:
    raise SystemExit("no Debian archive in /etc/apt/sources.list{,.d}")
print(m[0].uri, m[0].keyring)')
    command -v debootstrap >/dev/null || { echo "debootstrap missing: run scripts/setup-integration.sh" >&2; exit 1; }
    echo "debian-tree: debootstrap --variant=minbase $suite (this machine's mirror)" >&2
    rm -rf "$tree.tmp" "$state/bootstrapped"
    mkdir -p "$state"
    local start=$SECONDS
    debootstrap --variant=minbase --keyring="$keyring" "$suite" "$tree.tmp" "$mirror" 2>&1 \
        | redact > "$state/debootstrap.log" || {
        tail -20 "$state/debootstrap.log" >&2
        exit 1
    }
    rm -rf "$tree"
    mv "$tree.tmp" "$tree"
    echo "debootstrap took $((SECONDS - start)) s" > "$state/bootstrapped"
    echo "debian-tree: $(cat "$state/bootstrapped")" >&2
}

# This checkout's files (tracked and new, as in the working tree) into the tree; its .venv stays.
sync_checkout() {
    local dest=$tree/src/rcupending-tools
    mkdir -p "$dest"
    find "$dest" -mindepth 1 -maxdepth 1 ! -name .venv -exec rm -rf {} +
    (cd "$repo" && git ls-files -z -co --exclude-standard | tar --null -T - -cf -) | tar -xf - -C "$dest"
    (cd "$repo" && git ls-files -z -co --exclude-standard | xargs -0 sha256sum) | sha256sum | cut -d' ' -f1
}

prepare() {
    mkdir -p "$state"
    exec 9>"$state/lock"
    flock 9  # one prepare at a time: scripts/test.sh starts one while the tests may too
    bootstrap
    local digest
    digest=$(sync_checkout)
    if [ -f "$state/prepared" ] && [ "$(cat "$state/prepared")" = "$digest" ]; then
        echo "debian-tree: $suite already set up from this checkout" >&2
        return 0
    fi
    rm -f "$state/prepared"
    local start=$SECONDS rc=0
    in_tree bash scripts/setup.sh 2>&1 | redact > "$state/setup.log" || rc=$?
    echo "setup.sh exit $rc after $((SECONDS - start)) s" >> "$state/setup.log"
    if [ "$rc" = 0 ]; then  # the integration tier's tools, Debian 13's own
        in_tree bash scripts/setup-integration.sh 2>&1 | redact >> "$state/setup.log" || rc=$?
        echo "setup-integration.sh exit $rc after $((SECONDS - start)) s" >> "$state/setup.log"
    fi
    if [ "$rc" = 0 ]; then  # with trixie's apt, through the tool's private apt configuration
        in_tree .venv/bin/rcupending fetch "$KERNEL" 2>&1 | redact >> "$state/setup.log" || rc=$?
        echo "fetch $KERNEL exit $rc after $((SECONDS - start)) s" >> "$state/setup.log"
    fi
    if [ "$rc" != 0 ]; then
        echo "debian-tree: set-up in $suite failed (exit $rc); $state/setup.log:" >&2
        tail -30 "$state/setup.log" >&2
        exit "$rc"
    fi
    echo "$digest" > "$state/prepared"
    echo "debian-tree: $suite set up in $((SECONDS - start)) s" >&2
}

cmd=${1:-}
[ -n "$cmd" ] || usage
shift
case $cmd in
    prepare)
        paths "${1:-trixie}"
        prepare
        ;;
    run)
        [ $# -ge 3 ] && [ "$2" = "--" ] || usage
        paths "$1"
        shift 2
        [ -f "$state/bootstrapped" ] || { echo "no $suite tree: run prepare first" >&2; exit 1; }
        in_tree "$@"
        ;;
    *) usage ;;
esac
