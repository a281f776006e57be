"""Runs INSIDE a lab VM (via `rcupending lab`): `rcupending stress nolock` scenarios, measured
by the collector and by an independent kretprobe count in the same process and window (the
command's --measure), and the one-line refusals where a kernel lacks a scenario. Prints one
line `RCUPENDING-RESULT <json>`. Arguments: scenario names (SCENARIOS)."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
CLI = [sys.executable, "-m", "rcupending_tools.cli"]
SCENARIOS = {
    # 4000 messages from test runs (task context), then 1 s of messages from a perf cpu-clock
    # event on each CPU (hard IRQ, inside a BPF program: the kretprobe count misses those)
    "stream": ["stream", "--batches", "20", "--repeat", "200", "--irq-seconds", "1", "--measure",
               "--json"],
    "arena_forced": ["arena", "--batches", "10", "--repeat", "200", "--memory-max", "65536",
                     "--measure", "--json"],
    # refusals (no BPF load): the kernel lacks the allocator or the scenario's kfunc
    "stream_refused": ["stream", "--measure", "--json"],
    "arena_refused": ["arena", "--measure", "--json"],
}


def main() -> None:
    result: dict = {"release": Path("/proc/sys/kernel/osrelease").read_text().strip()}
    for name in sys.argv[1:]:
        args = ["stress", "nolock", *SCENARIOS[name]]
        print(f"guest: rcupending {' '.join(args)}", flush=True)
        start = time.monotonic()
        proc = subprocess.run(CLI + args, capture_output=True, text=True, timeout=900, cwd=REPO)
        print(f"guest:   rc {proc.returncode} in {time.monotonic() - start:.1f}s", flush=True)
        try:
            out = json.loads(proc.stdout.strip().splitlines()[-1])
            out.pop("snapshot", None)  # the nolock family is `measured`
        except (json.JSONDecodeError, IndexError):
            out = None
        result[name] = {"rc": proc.returncode, "out": out, "stderr": proc.stderr[-2000:]}
    print("RCUPENDING-RESULT " + json.dumps(result, sort_keys=True), flush=True)


if __name__ == "__main__":
    main()
