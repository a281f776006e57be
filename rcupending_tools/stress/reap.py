"""Stress workers die with the command that started them, and a killed run's leftovers go at
the next start (as probes/leftovers.py does for kprobe events).

- Forked workers and driver processes get a parent-death signal (prctl PR_SET_PDEATHSIG): a
  `kill -9` of the command takes them along. They ignore SIGINT (the command handles Ctrl-C
  and tells them to stop) and turn SIGTERM into a clean exit, so their `finally` blocks run.
"""

from __future__ import annotations

import ctypes
import os
import signal

PR_SET_PDEATHSIG = 1


def die_with_parent(sig: int = signal.SIGKILL, parent: int | None = None) -> None:
    """Get `sig` when the parent dies; exit now if it already has (it died before prctl)."""
    parent = parent or os.getppid()
    try:
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, int(sig), 0, 0, 0)
    except (OSError, AttributeError):
        return
    if os.getppid() != parent:
        os._exit(1)


def _terminate(signum: int, frame: object) -> None:
    raise SystemExit(128 + signum)


def worker_signals(parent: int | None = None, death: int = signal.SIGTERM) -> None:
    """In a forked worker: no Ctrl-C traceback (the command stops it), SIGTERM and the
    parent's death (`death`) unwind through `finally`."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, _terminate)
    signal.signal(signal.SIGHUP, _terminate)
    die_with_parent(death, parent)


def preexec(sig: int = signal.SIGKILL):  # noqa: ANN201 - a Popen preexec_fn
    """A Popen preexec_fn: the driver gets `sig` when this process dies; Ctrl-C is ours."""
    parent = os.getpid()

    def fn() -> None:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        die_with_parent(sig, parent)

    return fn
