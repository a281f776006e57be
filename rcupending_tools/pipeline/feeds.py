"""Feeds: iterators of snapshots for the surfaces, from this host (live), a recording (replay)
or a lab VM running a stress scenario. A feed yields a snapshot, a log line (str), or None
(nothing new yet: the surface may poll its keys). Surfaces show a feed; they never pick one."""

from __future__ import annotations

import json
import queue
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from ..errors import UserError
from ..lab import kernels, vm
from .recording import MAX_GAP, Reader, paced
from .schema import Feed, Snapshot, is_snapshot
from .session import LiveSession, open_live

TICK = 0.1  # seconds between yields of None while a feed waits


@dataclass
class Chosen:
    """A feed and how to introduce it: the header line, a note under it, and whether the last
    frame stays up when the feed ends (replays and lab runs)."""

    feed: Feed
    banner: str
    note: str = ""
    hold: bool = False
    total: int | None = None  # snapshots in a replayed recording
    close: Callable[[], None] = lambda: None  # detaches a live feed's probes


def _sleep_ticks(seconds: float) -> Iterator[None]:
    end = time.monotonic() + seconds
    while (left := end - time.monotonic()) > 0:
        time.sleep(min(TICK, left))
        yield None


def replay_feed(snapshots: list[Snapshot], speed: float) -> Feed:
    """The recording at its recorded pace divided by `speed` (0: as fast as it renders)."""
    for delay, snap in paced(snapshots, speed):
        yield from _sleep_ticks(delay)
        yield snap


class ReplayFeed:
    """A recording (pipeline/recording.Reader) at its recorded pace divided by `speed` (0: as
    fast as it renders), each snapshot read and validated as it is due: the first is shown at
    once whatever the length. A thread indexes the lines meanwhile (`total`, and `seek`)."""

    def __init__(self, reader: Reader, speed: float) -> None:
        self.reader = reader
        self.speed = speed
        self.pos = 0  # snapshots shown so far = index of the next one
        self._it = reader.iter_from(0)
        self._prev: Snapshot | None = None
        self._next: Snapshot | None = None
        self._due = 0.0
        self._noted = 0
        threading.Thread(target=self._scan, daemon=True).start()

    def _scan(self) -> None:
        try:
            self.reader.scan()
        except (OSError, ValueError):  # the replay reads on; only the total stays unknown
            pass

    @property
    def total(self) -> int | None:
        """Snapshots in the recording: exact at its end, else the line count once scanned."""
        return self.reader.total if self.reader.total is not None else self.reader.lines

    def __iter__(self) -> ReplayFeed:
        return self

    def __next__(self) -> Snapshot | str | None:
        if self._next is None:
            self._next = next(self._it, None)
            if self._next is None:
                if self._noted < len(self.reader.notes):
                    self._noted += 1
                    return self.reader.notes[self._noted - 1]
                raise StopIteration
            delay = 0.0
            if self._prev is not None and self.speed > 0:
                gap = (self._next["time"] - self._prev["time"]) / self.speed
                delay = min(MAX_GAP, max(0.0, gap))
            self._due = time.monotonic() + delay
        left = self._due - time.monotonic()
        if left > 0:
            time.sleep(min(TICK, left))
            return None
        snap, self._next = self._next, None
        self._prev = snap
        self.pos += 1
        return snap

    def seek(self, i: int) -> list[Snapshot]:
        """Jump to snapshot i (clamped to the recording): [the one before it, it] for the
        rates; play goes on after it."""
        i = max(0, i)
        if (total := self.total) is not None:
            i = min(i, total - 1)
        cur = self.reader.at(i)
        while cur is None and i > 0:  # past the end (a truncated last line): the last one
            i -= 1
            cur = self.reader.at(i)
        if cur is None:
            return []
        prev = self.reader.at(i - 1) if i > 0 else None
        self._it = self.reader.iter_from(i + 1)
        self._next, self._prev, self.pos = None, cur, i + 1
        return [s for s in (prev, cur) if s is not None]

    def close(self) -> None:
        self.reader.close()


def live_feed(session: LiveSession, interval: float) -> Feed:
    """Snapshots of an attached session every `interval` s; closing the feed detaches it."""
    try:
        yield session.read()
        while True:
            yield from _sleep_ticks(interval)
            yield session.read()
    finally:
        session.close()


class LineSink:
    """A text stream for the VM runner: JSON snapshot lines go to a queue, others are log."""

    def __init__(self, put: Callable[[Snapshot | str], None]) -> None:
        self.put = put
        self.buf = ""

    def write(self, text: str) -> int:
        self.buf += text
        while "\n" in self.buf:
            line, self.buf = self.buf.split("\n", 1)
            line = line.strip()
            if line.startswith("{"):
                try:
                    obj = json.loads(line)
                except json.JSONDecodeError:
                    continue
                if is_snapshot(obj):
                    obj["source"] = "lab-vm"
                    self.put(obj)
            elif line:
                self.put(line)
        return len(text)

    def flush(self) -> None:
        pass


def lab_feed(spec: str, interval: float, seconds: float) -> Feed:
    """Boot `spec` and run the kvfree stress there with snapshots every `interval`."""
    q: queue.Queue = queue.Queue()
    done = object()
    k = kernels.resolve(spec, progress=q.put)
    q.put(f"booting {k.spec} ({k.release}) in a lab VM; the boot and bcc's compile take a "
          "minute or two")
    cmd = ["rcupending", "stress", "kvfree", "--duration", str(seconds), "--workers", "2",
           "--measure", "--json", "--interval", str(interval)]

    def runner() -> None:
        try:
            vm.run_in_vm(k, cmd, stream=LineSink(q.put))
        except Exception as e:  # shown in the log lines, then the feed ends
            q.put(f"lab VM failed: {e}")
        finally:
            q.put(done)

    vm.stop_on_exit()  # from the iterating (main) thread: the runner's cannot set handlers
    threading.Thread(target=runner, daemon=True).start()
    while True:
        try:
            item = q.get(timeout=TICK)
        except queue.Empty:
            yield None
            continue
        if item is done:
            return
        yield item


def explain_refusal(statuses: list, release: str) -> str | None:
    """Why this kernel cannot show kvfree_rcu live (None when kvfree_call_rcu attached)."""
    kv = next((s for s in statuses if s.name == "kvfree_call_rcu"), None)
    if kv is not None and kv.status == "attached":
        return None
    why = (kv.detail or kv.status) if kv is not None else "not in the probe table"
    return f"this host's kernel {release} refuses the kvfree_call_rcu probe: {why}"


def for_top(interval: float, spec: str, lab_seconds: float, *, no_lab: bool = False,
            self_cost: bool = False, log: Callable[[str], None] = print) -> Chosen:
    """The dashboard's live feed: this host when it allows the kvfree_call_rcu probe; else say
    why (through `log`), then a lab VM on `spec`, or with `no_lab` whatever attaches here."""
    session = open_live(self_cost=self_cost)
    try:
        release = session.release
        why = explain_refusal(session.statuses, release)
        if why is None:
            return Chosen(live_feed(session, interval), f" LIVE · this host's kernel {release} ",
                          close=session.close)
        log(why)
        for s in session.statuses:
            if s.name != "kvfree_call_rcu":
                log(f"  {s.name}: {s.status}: {s.detail}")
        if no_lab:
            if not session.attached:
                raise UserError(f"nothing to show live on {release}: no probe attaches "
                                "(--no-lab: not starting a lab VM)")
            names = ", ".join(session.attached)
            log(f"--no-lab: showing what does attach here ({names})")
            banner = f" LIVE (degraded) · this host's kernel {release} · {names} only "
            # kvfree_rcu's line says why it is missing
            return Chosen(live_feed(session, interval), banner, close=session.close)
    except BaseException:
        session.close()
        raise
    session.close()  # detach before the VM boots
    log(f"showing a lab VM instead: real kernel {spec} (KVM if usable, else QEMU TCG) running "
        f"`stress kvfree` for {lab_seconds:.0f}s (--no-lab to stay on this host)")
    return Chosen(
        lab_feed(spec, interval, lab_seconds),
        f" LAB VM · real kernel {spec} · stress kvfree (this host refuses the probes) ",
        note="this host: " + why.split(" refuses the kvfree_call_rcu probe: ", 1)[-1],
        hold=True,
    )
