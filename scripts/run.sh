#!/usr/bin/env bash
# The main job on a fresh machine: set up, then the live dashboard. On a host that refuses the
# probes, `rcupending top` says why and shows a lab VM running a stress scenario instead.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/rcupending top "$@"
