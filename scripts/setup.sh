#!/usr/bin/env bash
# Set up rcupending-tools on a Debian machine (root): Debian's bcc, QEMU, virtme-ng, the venv,
# and a kernel headers tree bcc can compile with. Idempotent; safe to re-run.
set -euo pipefail
cd "$(dirname "$0")/.."

apt_pkgs=(python3-bpfcc python3-apt python3-venv qemu-system-x86 kmod udev iproute2 procps busybox-static
          tmux bpftool gcc libc6-dev clang libbpf-dev
          # the oracle tests' second observer (tests/vm/guest_oracle.py)
          bpftrace
          file  # virtme-ng runs file(1) on busybox and the kernel image (absent from minbase)
          # `rcupending lab-build` (kernel/lab-6.12): kernel build, BTF (pahole), IKHEADERS (cpio)
          make flex bison bc libelf-dev libssl-dev dwarves cpio xz-utils git perl)
missing=()
for p in "${apt_pkgs[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
    echo "setup: installing Debian packages: ${missing[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" \
        >/dev/null
fi

# The venv sees Debian's bcc module (system site packages); PyPI's "bcc" is unrelated.
if [ ! -x .venv/bin/python ] || ! .venv/bin/python -c 'import bcc' 2>/dev/null; then
    rm -rf .venv
    /usr/bin/python3 -m venv --system-site-packages .venv
fi
.venv/bin/pip install -q --disable-pip-version-check -e '.[test]'
.venv/bin/python -c 'import bcc, apt_pkg; assert hasattr(bcc, "BPF"), bcc.__file__'

# The native stress driver (C, pthreads), cached by a hash of its source; also built at first use.
.venv/bin/python -c 'from rcupending_tools.stress import native; print("setup: native driver", native.binary())'

# The nolock stress driver: a libbpf BPF object (clang) and its C loader (gcc + libbpf).
.venv/bin/python -c 'from rcupending_tools.stress import nolock; print("setup: nolock driver", nolock.build())'

# bcc compiles against a headers tree; struct layouts come from the running kernel's BTF.
.venv/bin/rcupending fetch --headers
echo "setup: done (.venv/bin/rcupending)"
