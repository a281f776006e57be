#!/usr/bin/env bash
# Set up (idempotent) and run every test tier: unit, host (this kernel, root) and VM (real
# Debian kernels under QEMU TCG). Extra arguments go to pytest, e.g. -m "not vm".
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
.venv/bin/ruff check rcupending_tools tests
# Fetch the VM tier's kernels up front, so download progress shows outside the timed tests.
.venv/bin/rcupending fetch debian:6.1 debian:6.12 debian:6.17 debian:6.18 debian:7.3
exec .venv/bin/python -m pytest -ra "$@"
