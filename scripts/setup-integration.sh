#!/usr/bin/env bash
# Tools of the integration tier (tests/integration), idempotent, as root on Debian 12 or 13:
# debootstrap and systemd-analyze from Debian, and Debian's own `prometheus` of this host's
# release (2.42 on 12, 2.53 on 13), unpacked into the cache with promtool (in the prometheus
# package on 12, a package of its own on 13). It is unpacked, not installed: the
# package's maintainer scripts would start a system Prometheus on :9090 (all addresses); the
# tests run their own, on loopback, with a temporary config and data directory.
# Prints the directory holding prometheus and promtool.
set -euo pipefail
cd "$(dirname "$0")/.."

missing=()
command -v debootstrap >/dev/null || missing+=(debootstrap)
command -v systemd-analyze >/dev/null || missing+=(systemd)
if ((${#missing[@]})); then
    echo "setup-integration: installing Debian packages: ${missing[*]}" >&2
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" \
        >/dev/null
fi

candidate() { apt-cache policy "$1" 2>/dev/null | awk '/Candidate:/ {print $2}'; }
ver=$(candidate prometheus)
if [ -z "$ver" ] || [ "$ver" = "(none)" ]; then
    apt-get update -qq
    ver=$(candidate prometheus)
fi
if [ -z "$ver" ] || [ "$ver" = "(none)" ]; then
    echo "setup-integration: no prometheus package in this machine's apt sources" >&2
    exit 1
fi
cache=${RCUPENDING_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/rcupending-tools}
dest=$cache/prometheus/$ver
if [ ! -x "$dest/usr/bin/prometheus" ] || [ ! -x "$dest/usr/bin/promtool" ]; then
    tmp=$(mktemp -d)
    trap 'rm -rf "$tmp"' EXIT
    debs=("prometheus=$ver")
    promtool=$(candidate promtool)
    if [ -n "$promtool" ] && [ "$promtool" != "(none)" ]; then
        debs+=("promtool=$promtool")
    fi
    (cd "$tmp" && apt-get download -qq -o APT::Sandbox::User=root "${debs[@]}" >&2)
    for deb in "$tmp"/*.deb; do
        dpkg-deb -x "$deb" "$tmp/root"
    done
    mkdir -p "$(dirname "$dest")"
    rm -rf "$dest"
    mv "$tmp/root" "$dest"
fi
"$dest/usr/bin/promtool" --version >&2
echo "$dest/usr/bin"
