"""`rcupending top`: a rich dashboard that shows a feed of snapshots (pipeline/feeds.py).

Feeds come from this host's kernel, a lab VM or a recording, each said plainly in the header;
this module never chooses or starts one. Every number shown is a snapshot's value (totals) or
a difference of two snapshots over their time difference (rates, pipeline/derive.py).
"""

from __future__ import annotations

import os
import select
import sys
import termios
import time
import tty
from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext

from rich.console import Console
from rich.live import Live

from ...pipeline.schema import Feed, Snapshot
from ..text import summary
from .render import render
from .state import DashboardState

TICK = 0.1  # seconds between key polls while paused or at the end
ARROWS = {"\x1b[C": "right", "\x1b[D": "left", "\x1bOC": "right", "\x1bOD": "left",
          "\x1b[H": "home", "\x1b[F": "end"}


@contextmanager
def _keys() -> Iterator[Callable[[float], str | None]]:
    """Single-key reads from a terminal stdin, waiting at most `timeout` (no-op otherwise);
    arrow keys come back as "left"/"right"."""
    if not sys.stdin.isatty():
        yield lambda timeout=0.0: (time.sleep(timeout), None)[1]
        return
    fd = sys.stdin.fileno()
    old = termios.tcgetattr(fd)
    tty.setcbreak(fd)
    try:

        def key(timeout: float = 0.0) -> str | None:
            if not select.select([fd], [], [], timeout)[0]:
                return None
            k = os.read(fd, 1).decode(errors="replace")
            if k == "\x1b" and select.select([fd], [], [], 0.05)[0]:
                k += os.read(fd, 2).decode(errors="replace")
            return ARROWS.get(k, k)

        yield key
    finally:
        termios.tcsetattr(fd, termios.TCSADRAIN, old)


_END = object()


def show(
    feed: Feed,
    banner: str,
    count: int | None = None,
    *,
    total: int | None = None,
    hold: bool = False,
    on_snapshot: Callable[[Snapshot], None] | None = None,
    console: Console | None = None,
    note: str = "",
) -> DashboardState:
    """Render snapshots (and log lines) from `feed` until it ends, q, or `count` snapshots.

    With `hold` (replay), the last frame stays up at the end until q. On a terminal the frame
    is full-screen and redrawn in place; otherwise each snapshot's frame is printed."""
    console = console or Console()
    interactive = console.is_terminal and sys.stdin.isatty()
    state = DashboardState(banner, total, note)
    live_cm = (
        Live(console=console, screen=True, auto_refresh=False, redirect_stderr=False)
        if interactive
        else nullcontext()
    )
    try:
        with _keys() as key, live_cm as live:
            size = None

            def draw(force: bool = True) -> None:
                nonlocal size
                if live is None:
                    return
                if force or console.size != size:
                    size = console.size
                    live.update(render(state, size.width, size.height), refresh=True)

            draw()
            seek = getattr(feed, "seek", None)
            state.replay = seek is not None
            while True:
                if (t := getattr(feed, "total", None)) is not None:
                    state.total = t
                k = key(TICK if (state.paused or state.ended) else 0.0)
                if k in ("q", "Q"):
                    break
                if k in ("p", "P"):
                    state.paused = not state.paused
                    draw()
                    continue
                if seek is not None and k in ("left", "right", "g", "G", "home", "end"):
                    target = {"left": state.seen - 2, "right": state.seen, "g": 0, "home": 0}.get(
                        k, (state.total or state.seen) - 1)
                    if snaps := seek(target):
                        state.jump(snaps, feed.pos)
                        draw()
                    continue
                if state.paused or state.ended:
                    if not interactive:
                        break  # nobody can press a key
                    draw(force=False)
                    continue
                item = next(feed, _END)
                if item is _END:
                    state.ended = True
                    if state.total is not None:
                        state.total = state.seen
                    draw()
                    if not (hold and interactive):
                        break
                    continue
                if item is None:
                    draw(force=state.cur is None)  # the waiting line counts seconds
                    continue
                if isinstance(item, str):
                    state.add_log(item)
                    if not interactive:
                        print(state.log[-1], file=sys.stderr)
                    draw()
                    continue
                state.push(item)
                if on_snapshot is not None:
                    on_snapshot(item)
                if interactive:
                    draw()
                else:
                    console.print(render(state, console.size.width, 10_000))
                if count is not None and state.seen >= count:
                    break
    finally:
        close = getattr(feed, "close", None)
        if close is not None:
            close()
    if interactive and state.cur is not None:  # the full-screen frame is gone: keep a summary
        print(summary(state.cur))
    return state
