"""kvfree_rcu load: setsockopt(IP_OPTIONS) on UDP sockets, with its own ground truth.

Each successful IP_OPTIONS set replaces the socket's option block and frees the old one with
kfree_rcu() (net/ipv4/ip_sockglue.c); a socket's first set has nothing to free, and a rejected
set (optlen > 40, malformed options) allocates nothing that reaches kfree_rcu. So per socket,
expected enqueues = successful sets - 1 (when at least one succeeded).
"""

from __future__ import annotations

import errno
import multiprocessing as mp
import multiprocessing.connection
import os
import socket
import time
from dataclasses import asdict, dataclass

MAX_OPTLEN = 40  # IPv4 options space; larger sets fail with EINVAL


def options_bytes(optlen: int) -> bytes:
    """`optlen` bytes of IPv4 options: NOPs then END (needs no privilege)."""
    if optlen <= 0:
        raise ValueError("optlen must be positive")
    return b"\x01" * (optlen - 1) + b"\x00"


@dataclass
class WorkerTruth:
    pid: int
    sockets: int
    calls: int
    ok: int
    failed: int
    errors: dict[str, int]
    expected_enqueued: int


def run_worker(
    enqueues: int | None, sockets: int, optlen: int, deadline: float | None = None
) -> WorkerTruth:
    """Make `enqueues` kfree_rcu() enqueues spread over `sockets` UDP sockets (fewer if sets
    fail); with `enqueues` None, keep going round the sockets until `deadline`."""
    opts = options_bytes(optlen)
    socks = [socket.socket(socket.AF_INET, socket.SOCK_DGRAM) for _ in range(sockets)]
    succeeded = [0] * sockets
    calls = 0
    errors: dict[str, int] = {}

    def set_once(i: int) -> None:
        nonlocal calls
        calls += 1
        try:
            socks[i].setsockopt(socket.IPPROTO_IP, socket.IP_OPTIONS, opts)
        except OSError as e:
            name = errno.errorcode.get(e.errno or 0, str(e.errno))
            errors[name] = errors.get(name, 0) + 1
            return
        succeeded[i] += 1

    try:
        if enqueues is not None:
            for i in range(sockets):
                for _ in range(enqueues // sockets + (i < enqueues % sockets) + 1):
                    set_once(i)  # + 1: a socket's first set frees nothing
        else:
            while time.monotonic() < (deadline or 0):
                for _ in range(256):
                    set_once(calls % sockets)
    finally:
        for s in socks:
            s.close()
    ok = sum(succeeded)
    expected = sum(max(0, n - 1) for n in succeeded)
    return WorkerTruth(os.getpid(), sockets, calls, ok, calls - ok, errors, expected)


def _child(
    conn,
    enqueues: int | None,
    sockets: int,
    optlen: int,  # noqa: ANN001
    deadline: float | None,
) -> None:
    conn.send(asdict(run_worker(enqueues, sockets, optlen, deadline)))
    conn.close()


@dataclass
class StressRun:
    """Worker processes started (their pids known) before they do any work."""

    procs: list
    conns: list

    @property
    def pids(self) -> set[int]:
        return {p.pid for p in self.procs}

    def running(self, timeout: float) -> bool:
        """Wait up to `timeout` s; True while any worker has not reported."""
        deadline = time.monotonic() + timeout
        while pending := [c for c in self.conns if not c.poll()]:
            left = deadline - time.monotonic()
            if left <= 0:
                return True
            mp.connection.wait(pending, left)
        return False

    def wait(self) -> dict:
        truths = [c.recv() for c in self.conns]
        for p in self.procs:
            p.join()
        bad = [p.exitcode for p in self.procs if p.exitcode != 0]
        if bad:
            raise RuntimeError(f"stress workers failed with exit codes {bad}")
        return {
            "scenario": "kvfree",
            "workers": len(truths),
            "sockets": sum(t["sockets"] for t in truths),
            "calls": sum(t["calls"] for t in truths),
            "ok": sum(t["ok"] for t in truths),
            "failed": sum(t["failed"] for t in truths),
            "errors": _merge(t["errors"] for t in truths),
            "kvfree_rcu": {"enqueued": sum(t["expected_enqueued"] for t in truths)},
            "pids": sorted(t["pid"] for t in truths),
        }


def _merge(dicts) -> dict[str, int]:  # noqa: ANN001
    out: dict[str, int] = {}
    for d in dicts:
        for k, v in d.items():
            out[k] = out.get(k, 0) + v
    return out


def start(
    count: int | None,
    optlen: int = 4,
    workers: int = 1,
    sockets: int = 8,
    duration: float | None = None,
) -> StressRun:
    """Fork `workers` processes sharing `count` enqueues (or running for `duration` seconds)
    and `sockets` sockets."""
    if (count is None) == (duration is None):
        raise ValueError("give exactly one of count and duration")
    if (count or 0) < 0 or workers < 1 or sockets < workers:
        raise ValueError("need count >= 0, workers >= 1 and sockets >= workers")
    deadline = time.monotonic() + duration if duration is not None else None
    ctx = mp.get_context("fork")
    procs, conns = [], []
    for w in range(workers):
        n = None if count is None else count // workers + (1 if w < count % workers else 0)
        s = sockets // workers + (1 if w < sockets % workers else 0)
        parent, child = ctx.Pipe(duplex=False)
        p = ctx.Process(target=_child, args=(child, n, s, optlen, deadline), daemon=True)
        p.start()
        child.close()
        procs.append(p)
        conns.append(parent)
    return StressRun(procs, conns)
