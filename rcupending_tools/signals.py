"""SIGTERM and SIGHUP unwind like Ctrl-C, the one way the commands and the lab VM runner
handle them."""

from __future__ import annotations

import signal


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def terminate_as_interrupt(*, keep: bool = False) -> None:
    """SIGTERM/SIGHUP unwind like Ctrl-C, so `finally` blocks detach every BPF program (and
    the exit stops lab VMs). keep=True leaves a signal whose handler is already set (a
    caller's own, nohup's SIG_IGN). Main thread only, as Python's signal.signal."""
    for sig in (signal.SIGTERM, signal.SIGHUP):
        if not keep or signal.getsignal(sig) == signal.SIG_DFL:
            signal.signal(sig, _interrupt)
