#!/usr/bin/env bash
# Set up (idempotent) and run every test tier: unit, host (this kernel, root) and VM (real
# Debian kernels under QEMU TCG). Extra arguments go to pytest, e.g. -m "not vm".
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
.venv/bin/ruff check rcupending_tools tests
# Fetch the VM tier's kernels up front, so download progress shows outside the timed tests.
.venv/bin/rcupending fetch debian:6.1 debian:6.12 debian:6.17 debian:6.18 debian:7.3
# The patched kernel lab (kernel/lab-6.12): both variants and the lab module, cached by the
# recipe's hash (a fresh machine builds them: see kernel/lab-6.12/README.md for the time); the
# lab module also for the Debian kernels of the oracle tests (tests/vm/test_oracle_vm.py),
# against their linux-headers packages (6.17 and 6.18 have none in the archive).
start=$(date +%s)
.venv/bin/rcupending lab-build --jobs 3 --module-for debian:6.1 --module-for debian:6.12 \
    --module-for debian:7.3
echo "test: lab-build took $(( $(date +%s) - start )) s"
exec .venv/bin/python -m pytest -ra "$@"
