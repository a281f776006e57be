"""SIGTERM and SIGHUP unwind like Ctrl-C, the one way the commands and the lab VM runner
handle them."""

from __future__ import annotations

import signal


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def terminate_as_interrupt() -> None:
    """SIGTERM/SIGHUP unwind like Ctrl-C, so `finally` blocks detach every BPF program."""
    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, _interrupt)
