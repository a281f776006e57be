#!/usr/bin/env bash
# Make a shipped recording: boot a real kernel in a lab VM (QEMU TCG), start `rcupending record`,
# and once its baseline is written run the kvfree stress beside it. The guest sees the repository
# read-only, so the recording is written to the guest's /tmp and printed between markers; this
# script cuts it out of the VM's output. The stress's own ground truth goes to FILE.truth.json.
# The recorder follows every object (--sample 1): its per-process rows are then exact, so the
# stress's row can be checked against the stress's own count (the default samples 1 in 64).
#
#   recordings/make-recording.sh [SPEC [FILE]]     (default: debian:6.12)
set -euo pipefail
cd "$(dirname "$0")/.."
spec=${1:-debian:6.12}
out=${2:-recordings/${spec//:/-}-kvfree-stress.jsonl}
drain_s=${DRAIN_SECONDS:-15}
stress_s=${STRESS_SECONDS:-30}
raw=$(mktemp)
trap 'rm -f "$raw"' EXIT

.venv/bin/rcupending lab --kernel "$spec" -- sh -c "
rec=/tmp/rcupending-recording.jsonl
rcupending --sample 1 record -o \$rec --interval 1 2>/tmp/record.err &
recpid=\$!
i=0
while [ \"\$(cat \$rec 2>/dev/null | wc -l)\" -lt 2 ]; do
    sleep 1; i=\$((i + 1))
    if [ \$i -gt 900 ] || ! kill -0 \$recpid 2>/dev/null; then cat /tmp/record.err; exit 1; fi
done
rcupending stress kvfree --duration $stress_s --workers 2 --json > /tmp/stress.json
# until the stress is over (its driver may build first) and its objects drained
sleep $drain_s
kill -TERM \$recpid  # SIGTERM: a background job of sh ignores SIGINT
wait \$recpid; rc=\$?
cat /tmp/record.err
echo RCUPENDING-RECORDING-BEGIN
cat \$rec
echo RCUPENDING-RECORDING-END
echo RCUPENDING-STRESS \$(cat /tmp/stress.json)
exit \$rc
" | tee "$raw" | grep -v '^{' || true

sed -n '/^RCUPENDING-RECORDING-BEGIN/,/^RCUPENDING-RECORDING-END/p' "$raw" | sed '1d;$d' > "$out"
grep '^RCUPENDING-STRESS ' "$raw" | tail -1 | cut -d' ' -f2- > "${out%.jsonl}.truth.json"
.venv/bin/rcupending export "$out" --jsonl /dev/null
echo "wrote $out ($(wc -c < "$out") bytes) and ${out%.jsonl}.truth.json"
