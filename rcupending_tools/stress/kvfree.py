"""kvfree_rcu load: setsockopt(IP_OPTIONS) on UDP sockets, with its own ground truth.

Each successful IP_OPTIONS set replaces the socket's option block and frees the old one with
kfree_rcu() (net/ipv4/ip_sockglue.c); a socket's first set has nothing to free, and a rejected
set (optlen > 40, malformed options) allocates nothing that reaches kfree_rcu. So per socket,
expected enqueues = successful sets - 1 (when at least one succeeded).

Closing a socket frees its last option block too (on 6.1 through kfree_rcu from
inet_sock_destruct), so workers keep their sockets open until `StressRun.finish()`: a
measurement read between `wait()` and `finish()` sees exactly the sets' enqueues.
"""

from __future__ import annotations

import errno
import multiprocessing as mp
import multiprocessing.connection
import os
import signal
import socket
import time
from dataclasses import asdict, dataclass

from . import reap

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
    sockets_with_options: int  # their last block is freed when the socket closes


class Worker:
    """UDP sockets and the count of what was done to them."""

    def __init__(self, sockets: int, optlen: int) -> None:
        self.opts = options_bytes(optlen)
        self.socks = [socket.socket(socket.AF_INET, socket.SOCK_DGRAM) for _ in range(sockets)]
        self.succeeded = [0] * sockets
        self.calls = 0
        self.errors: dict[str, int] = {}

    def set_once(self, i: int) -> None:
        self.calls += 1
        try:
            self.socks[i].setsockopt(socket.IPPROTO_IP, socket.IP_OPTIONS, self.opts)
        except OSError as e:
            name = errno.errorcode.get(e.errno or 0, str(e.errno))
            self.errors[name] = self.errors.get(name, 0) + 1
            return
        self.succeeded[i] += 1

    def run(
        self, enqueues: int | None, deadline: float | None = None, rate: float | None = None
    ) -> WorkerTruth:
        """`enqueues` kfree_rcu() enqueues spread over the sockets (fewer if sets fail); with
        `enqueues` None, keep going round the sockets until `deadline` (monotonic). `rate`:
        at most that many enqueuing sets per second (a trickle)."""
        n = len(self.socks)
        if enqueues is not None:
            for i in range(n):
                self.set_once(i)  # a socket's first set frees nothing
            start = time.monotonic()
            for k in range(enqueues):
                if rate:
                    time.sleep(max(0.0, start + k / rate - time.monotonic()))
                self.set_once(k % n)
        else:
            while time.monotonic() < (deadline or 0):
                for _ in range(256):
                    self.set_once(self.calls % n)
        ok = sum(self.succeeded)
        return WorkerTruth(
            pid=os.getpid(),
            sockets=n,
            calls=self.calls,
            ok=ok,
            failed=self.calls - ok,
            errors=dict(self.errors),
            expected_enqueued=sum(max(0, k - 1) for k in self.succeeded),
            sockets_with_options=sum(1 for k in self.succeeded if k),
        )

    def close(self) -> None:
        for s in self.socks:
            s.close()


def run_worker(
    enqueues: int | None, sockets: int, optlen: int, deadline: float | None = None
) -> WorkerTruth:
    """Run one worker in this process and close its sockets."""
    w = Worker(sockets, optlen)
    try:
        return w.run(enqueues, deadline)
    finally:
        w.close()


def _child(
    conn,  # noqa: ANN001
    enqueues: int | None,
    sockets: int,
    optlen: int,
    duration: float | None,
    rate: float | None = None,
    parent: int | None = None,
    paused: bool = False,
) -> None:
    # SIGKILL at the parent's death: the worker inherited its BPF program and stats fds,
    # which must not outlive it; Ctrl-C is the parent's to handle (no traceback per worker)
    reap.worker_signals(parent, death=signal.SIGKILL)
    w = Worker(sockets, optlen)
    try:
        if paused:  # sockets made; the go starts the load
            conn.recv()
        deadline = None if duration is None else time.monotonic() + duration
        conn.send(asdict(w.run(enqueues, deadline, rate)))
        conn.recv()  # hold the sockets open until the parent has measured
    except (EOFError, BrokenPipeError):
        pass
    finally:
        w.close()
        conn.close()


def _merge(dicts) -> dict[str, int]:  # noqa: ANN001
    out: dict[str, int] = {}
    for d in dicts:
        for k, v in d.items():
            out[k] = out.get(k, 0) + v
    return out


@dataclass
class StressRun:
    """Worker processes, started (pids known) before they do any work."""

    procs: list
    conns: list
    scenario: str = "kvfree"

    @property
    def pids(self) -> set[int]:
        return {p.pid for p in self.procs}

    def go(self) -> None:
        """Start a paused run's load (its processes exist and can be watched first)."""
        for c in self.conns:
            c.send("go")

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
        """The workers' truth once all have finished their sets (sockets still open)."""
        truths = []
        for p, c in zip(self.procs, self.conns, strict=True):
            try:
                truths.append(c.recv())
            except EOFError:
                p.join()
                raise RuntimeError(f"stress worker {p.pid} died (exit {p.exitcode})") from None
        if errors := [t["error"] for t in truths if "error" in t]:
            raise RuntimeError(errors[0])
        return {
            "scenario": self.scenario,
            "workers": len(truths),
            "sockets": sum(t["sockets"] for t in truths),
            "calls": sum(t["calls"] for t in truths),
            "ok": sum(t["ok"] for t in truths),
            "failed": sum(t["failed"] for t in truths),
            "errors": _merge(t["errors"] for t in truths),
            "kvfree_rcu": {"enqueued": sum(t["expected_enqueued"] for t in truths)},
            "sockets_with_options": sum(t["sockets_with_options"] for t in truths),
            "pids": sorted(t["pid"] for t in truths),
        }

    def abort(self) -> None:
        """Stop the workers now (Ctrl-C, an error): SIGTERM unwinds their `finally`."""
        for p in self.procs:
            if p.is_alive():
                p.terminate()
        for p in self.procs:
            p.join(timeout=10)
            if p.is_alive():
                p.kill()
                p.join()

    def finish(self) -> None:
        """Let the workers close their sockets and exit."""
        for c in self.conns:
            try:
                c.send("close")
            except OSError:
                pass
        for p in self.procs:
            p.join(timeout=30)
            if p.is_alive():
                p.kill()
                p.join()


def start(
    count: int | None,
    optlen: int = 4,
    workers: int = 1,
    sockets: int = 8,
    duration: float | None = None,
    rate: float | None = None,
    paused: bool = False,
) -> StressRun:
    """Fork `workers` processes sharing `count` enqueues (or running for `duration` seconds)
    and `sockets` sockets; `rate` (with `count`): enqueues per second in all (a trickle).
    `paused`: they make their sockets and wait for go()."""
    if (count is None) == (duration is None):
        raise ValueError("give exactly one of count and duration")
    if (count or 0) < 0 or workers < 1 or sockets < workers:
        raise ValueError("need count >= 0, workers >= 1 and sockets >= workers")
    if rate is not None and (rate <= 0 or count is None):
        raise ValueError("a rate needs a count and must be positive")
    ctx = mp.get_context("fork")
    procs, conns = [], []
    for w in range(workers):
        n = None if count is None else count // workers + (1 if w < count % workers else 0)
        s = sockets // workers + (1 if w < sockets % workers else 0)
        parent, child = ctx.Pipe(duplex=True)
        r = rate / workers if rate else None
        args = (child, n, s, optlen, duration, r, os.getpid(), paused)
        p = ctx.Process(target=_child, args=args, daemon=True)
        p.start()
        child.close()
        procs.append(p)
        conns.append(parent)
    return StressRun(procs, conns)
