"""What the dashboard remembers between snapshots: the last two, a trend, log lines, pause."""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable
from typing import Any

from ... import sanitize
from ...pipeline import derive
from ...pipeline.schema import Snapshot

SPARK = " ▁▂▃▄▅▆▇█"


def sparkline(values: list[float], width: int = 24) -> str:
    vals = values[-width:] if width > 0 else []
    if not vals:
        return ""
    top = max(vals)
    if top <= 0:
        return SPARK[0] * len(vals)
    n = len(SPARK) - 1
    return "".join(SPARK[max(0, min(n, int(v / top * n)))] for v in vals)


def _kv_objects(s: Snapshot) -> int | None:
    kv = s.get("kvfree_rcu")
    return kv["enqueued"]["objects"] if kv else None


def _kv_freed(s: Snapshot) -> int | None:
    kv = s.get("kvfree_rcu")
    return kv["freed"]["objects"] if kv and kv.get("freed") else None


def _kv_pending_bytes(s: Snapshot) -> int | None:
    kv = s.get("kvfree_rcu")
    return kv["pending"]["bytes"] if kv and kv.get("pending") else None


def _rp_objects(s: Snapshot) -> int | None:
    rp = s.get("rcu_pending")
    return rp["enqueued"]["objects"] if rp else None


def _nl(key: str) -> Callable[[Snapshot], int | None]:
    return lambda s: s["nolock"][key] if s.get("nolock") else None


class DashboardState:
    """What the view remembers between snapshots: the last two and a rate history."""

    def __init__(self, banner: str, total: int | None = None, note: str = "") -> None:
        self.banner = sanitize.text(banner)
        self.note = sanitize.text(note)  # one dim line under the header (e.g. why this is not live)
        self.started = time.monotonic()
        self.total = total  # snapshots in a replayed recording
        self.replay = False  # a recording that can seek
        self.prev: Snapshot | None = None
        self.cur: Snapshot | None = None
        self.trend: deque[float] = deque(maxlen=240)  # pending bytes, else enqueues/s
        self.trend_is_pending = False
        self.log: deque[str] = deque(maxlen=3)
        self.paused = False
        self.ended = False
        self.seen = 0

    def push(self, snap: Snapshot) -> None:
        """Remember `snap` (its strings escaped: a comm or a recording may hold escapes)."""
        snap = sanitize.deep(snap)
        self.prev, self.cur = self.cur, snap
        self.seen += 1
        pending = _kv_pending_bytes(snap)
        if pending is not None:
            if not self.trend_is_pending:
                self.trend.clear()
                self.trend_is_pending = True
            self.trend.append(pending)
            return
        r = derive.rate(self.prev, snap, _kv_objects)
        if r is not None:
            self.trend.append(r)

    def jump(self, snaps: list[Snapshot], position: int) -> None:
        """A replay moved to another place: `snaps` are the snapshot before it and it; the
        replay stays paused there (step on with the arrow keys, p plays on)."""
        self.prev = self.cur = None
        self.trend.clear()
        self.trend_is_pending = False
        for s in snaps:
            self.push(s)
        self.seen = position
        self.paused = True
        self.ended = False

    def add_log(self, line: str) -> None:
        self.log.append(sanitize.text(line))

    def rate(self, get: Callable[[Snapshot], Any]) -> float | None:
        return derive.rate(self.prev, self.cur, get)


