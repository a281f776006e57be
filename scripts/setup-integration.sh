#!/usr/bin/env bash
# Tools of the integration tier (tests/integration), idempotent, as root on Debian 12 or 13:
# debootstrap and systemd-analyze from Debian, and Debian's own `prometheus` package (prometheus,
# promtool) of this host's release, unpacked into the cache. It is unpacked, not installed: the
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

candidate() { apt-cache policy prometheus 2>/dev/null | awk '/Candidate:/ {print $2}'; }
ver=$(candidate)
if [ -z "$ver" ] || [ "$ver" = "(none)" ]; then
    apt-get update -qq
    ver=$(candidate)
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
    (cd "$tmp" && apt-get download -qq -o APT::Sandbox::User=root "prometheus=$ver" >&2)
    dpkg-deb -x "$tmp"/prometheus_*.deb "$tmp/root"
    mkdir -p "$(dirname "$dest")"
    rm -rf "$dest"
    mv "$tmp/root" "$dest"
fi
"$dest/usr/bin/promtool" --version >&2
echo "$dest/usr/bin"
