"""Small helpers shared by the command modules."""

from __future__ import annotations

import json
import shlex
import signal
import sys


def command_line() -> str:
    return shlex.join(["rcupending", *sys.argv[1:]])


def emit_json(obj: object) -> None:
    sys.stdout.write(json.dumps(obj, sort_keys=True) + "\n")
    sys.stdout.flush()


def terminate_as_interrupt() -> None:
    """SIGTERM/SIGHUP unwind like Ctrl-C, so `finally` blocks detach every BPF program."""

    def handler(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, handler)
