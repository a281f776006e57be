"""`stress kvfree --measure`: run a kvfree scenario beside a live session and judge the
collector against the scenario's own ground truth. The verdict lives here, not in the CLI."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ..errors import UserError
from ..kernel import KernelInfo
from ..pipeline.schema import Snapshot
from ..pipeline.session import LiveSession
from ..probes import bpfload
from . import headless as headless_stress
from . import kvfree, native, oracle, sheaves


@dataclass(frozen=True)
class KvfreeLoad:
    """One kvfree scenario: the IP_OPTIONS flood/trickle (python or native) or headless."""

    count: int | None
    duration: float | None
    optlen: int = 4
    workers: int = 1
    sockets: int = 8
    rate: float | None = None
    headless: bool = False
    name_len: int = 24
    driver: str = "python"

    def check(self) -> None:
        """One line for a combination that cannot run."""
        if self.count is not None and self.duration is not None:
            raise UserError("give --count or --duration, not both")
        if self.sockets < self.workers:
            raise UserError("--sockets must be at least --workers")
        if self.driver not in ("python", "native"):
            raise UserError(f"--driver {self.driver!r}: choose python or native")
        if self.rate is not None and self.count is None:
            raise UserError("--rate needs --count (a trickle of that many enqueues)")
        if self.headless and self.count is None:
            raise UserError("--headless needs --count")
        if self.driver == "native" and (self.rate is not None or self.headless):
            raise UserError("--driver native floods: no --rate or --headless")

    def start(self, kernel_version: tuple[int, int]) -> Any:
        """Its processes, paused until their go() (so they can be watched from the start)."""
        if self.headless:
            try:
                return headless_stress.start(self.count or 0, self.name_len, self.rate,
                                             kernel_version, paused=True)
            except PermissionError as e:
                raise UserError(str(e)) from None
        if self.driver == "native":
            return native.start(self.count, self.optlen, self.workers, self.sockets,
                                self.duration, paused=True)
        return kvfree.start(self.count, self.optlen, self.workers, self.sockets, self.duration,
                            self.rate, paused=True)


def run(load: KvfreeLoad, session: LiveSession | None, *, interval: float | None = None,
        drain: float = 0.0, flush_sheaves: bool = True,
        on_snapshot: Callable[[Snapshot], None] = lambda s: None) -> dict[str, Any]:
    """Run `load` (measured by `session` when given: snapshots every `interval` s go to
    `on_snapshot`); the result holds `expected`, and with a session `measured`, `match` and
    `accounted` (the verdict), and `oracle`: the kernel's own figures (stress/oracle.py)."""
    load.check()
    if load.driver == "native":
        native.binary()  # build it now (once), not inside the measured window
    kernel = KernelInfo()
    kernel_version = kernel.version  # the headless truth depends on it
    run_ = None
    counter: bpfload.Loaded | str = "not loaded"
    try:
        if session is not None:
            session.require_something_attached()
            counter = oracle.start()
            session.read()  # seq 0: the baseline at attach
        run_ = load.start(kernel_version)
        if session is not None:
            session.follow(run_.pids)  # before the first enqueue: counted apart, exactly
        run_.go()
        while interval and session is not None and run_.running(timeout=interval):
            on_snapshot(session.read())
        try:
            expected = run_.wait()
        except RuntimeError as e:
            raise UserError(str(e)) from None
        if load.headless and kernel_version < headless_stress.HEADLESS_SINCE:
            expected["note"] = "before 6.15 kernfs frees renamed names with kfree_const()"
        result: dict[str, Any] = {"expected": expected}
        if session is not None:
            result.update(_measured(session, expected, load.headless, drain, flush_sheaves))
            figures = oracle.figures(counter, kernel, expected, load.headless)
            result["oracle"] = figures | oracle.compare(
                figures, result["measured"]["kvfree_rcu"], load.headless)
        return result
    except BaseException:
        if run_ is not None:
            run_.abort()  # Ctrl-C, SIGTERM or an error: stop the workers now
            run_ = None
        raise
    finally:
        if run_ is not None:
            run_.finish()  # workers close their sockets only after the final read
        if isinstance(counter, bpfload.Loaded):
            counter.close()


def _measured(session: LiveSession, expected: dict, headless: bool, drain: float,
              flush: bool) -> dict[str, Any]:
    enq_snap = session.read()  # the stress is done; its frees may not be
    flushed: dict = {}
    snap = drain_stress(session, drain, flush, flushed) if drain else enq_snap
    out: dict[str, Any] = {}
    if flushed:
        out["sheaf_flush"] = flushed
    kv = snap["kvfree_rcu"]
    if kv is not None:
        kv["by_stress"]["enqueued_at_stress_end"] = enq_snap["kvfree_rcu"]["by_stress"][
            "enqueued"]
    out.update(measured={"kvfree_rcu": kv}, snapshot=snap)
    out.update(verdict(expected, kv, headless))
    if kv is None:
        out["why_unmeasured"] = next(
            (f"{s['status']}: {s['detail']}" for s in snap["probes"]
             if s["name"] == "kvfree_call_rcu"), "")
    return out


def verdict(expected: dict, kv: dict | None, headless: bool) -> dict[str, Any]:
    """`match`: the workers' measured enqueues equal the truth; `accounted`: equal, or short
    by no more than the counted recursion misses of the enqueue program (a preemptible kernel
    may preempt one worker inside the fentry program and run another's call on that CPU)."""
    # headless: the renames' kfree_rcu_mightsleep() objects (a worker may also free a few
    # kernel objects of its own with kfree_rcu(), e.g. 7.3 at cgroup set-up)
    share = "enqueued_headless" if headless else "enqueued"
    want = expected["kvfree_rcu"]["enqueued"]
    match = kv is not None and kv["by_stress"][share] == want
    gap = want - kv["by_stress"][share] if kv else None
    missed = ((kv or {}).get("misses") or {}).get("enqueue", 0)
    out: dict[str, Any] = {"match": match, "accounted": bool(match or (gap and 0 < gap <= missed))}
    if not match and out["accounted"]:
        out["short_by_recursion_misses"] = gap
    return out


def drain_stress(session: LiveSession, seconds: float, flush: bool = False,
                 flushed: dict | None = None) -> Snapshot:
    """Read until the stress workers' objects are all freed or `seconds` pass; the last read
    also counts the tracking map, so the conservation invariant is checked. `flush`: after
    half the time, if sheaf-route objects still wait, flush the rcu_free sheaves once (they
    are freed only when a sheaf fills, or on a flush) and say so in `flushed`."""
    start = time.monotonic()
    deadline = start + seconds
    while True:
        snap = session.read()
        kv = snap["kvfree_rcu"]
        if kv is None or kv["by_stress"]["pending"] <= 0 or time.monotonic() >= deadline:
            break
        if (flush and flushed is not None and not flushed
                and time.monotonic() >= start + seconds / 2
                and kv["enqueued"]["by_route"]["sheaf"]["objects"] > 0):
            flushed.update(sheaves.flush_kmalloc_sheaves())
            flushed["at_s"] = round(time.monotonic() - start, 2)
        time.sleep(0.5)
    return session.read(count_map=True)
