"""Small helpers shared by the command modules."""

from __future__ import annotations

import json
import signal
import sys

SELF_COST_HELP = "enable BPF run-time stats while running; per-program cost in self_cost"


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def emit_json(obj: object) -> None:
    sys.stdout.write(json.dumps(obj, sort_keys=True) + "\n")
    sys.stdout.flush()


def terminate_as_interrupt() -> None:
    """SIGTERM/SIGHUP unwind like Ctrl-C, so `finally` blocks detach every BPF program."""

    def handler(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, handler)
