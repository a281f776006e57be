"""`rcupending top`: a rich live dashboard that reads collector snapshots only.

Feeds: this host's kernel (live), a lab VM running a stress scenario on a real kernel (when the
host refuses the probes), each said plainly in the header.
"""

from __future__ import annotations

import json
import queue
import select
import sys
import termios
import threading
import time
import tty
from collections import deque
from collections.abc import Iterator
from contextlib import contextmanager

from rich.console import Group
from rich.live import Live
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from ..schema import Snapshot, is_snapshot

SPARK = " ▁▂▃▄▅▆▇█"


def sparkline(values: list[float], width: int = 24) -> str:
    vals = values[-width:]
    if not vals:
        return ""
    top = max(vals) or 1.0
    return "".join(SPARK[min(len(SPARK) - 1, int(v / top * (len(SPARK) - 1)))] for v in vals)


def _rate(prev: Snapshot | None, cur: Snapshot, get) -> float | None:  # noqa: ANN001
    if prev is None:
        return None
    dt = cur["time"] - prev["time"]
    a, b = get(prev), get(cur)
    if dt <= 0 or a is None or b is None:
        return None
    return (b - a) / dt


def _kv_objects(s: Snapshot) -> int | None:
    kv = s.get("kvfree_rcu")
    return kv["enqueued"]["objects"] if kv else None


class DashboardState:
    """What the view remembers between snapshots: the last two and a rate history."""

    def __init__(self, banner: str) -> None:
        self.banner = banner
        self.prev: Snapshot | None = None
        self.cur: Snapshot | None = None
        self.kv_rates: deque[float] = deque(maxlen=120)
        self.log: deque[str] = deque(maxlen=3)
        self.paused = False

    def push(self, snap: Snapshot) -> None:
        self.prev, self.cur = self.cur, snap
        r = _rate(self.prev, snap, _kv_objects)
        if r is not None:
            self.kv_rates.append(r)


def render(state: DashboardState) -> Group:
    head = Text(state.banner, style="bold reverse")
    parts: list = [head]
    s = state.cur
    if s is None:
        parts.append(Text("waiting for the first snapshot…", style="dim"))
        parts += [Text(line, style="dim") for line in state.log]
        return Group(*parts)
    prov = s["provenance"]
    parts.append(
        Text(
            f"kernel {prov['kernel_release']}  ·  t+{s['elapsed_s']:.0f}s  ·  "
            f"snapshot {s['seq']}" + ("  ·  PAUSED" if state.paused else "")
        )
    )
    t = Table(box=None, pad_edge=False, expand=False)
    t.add_column("kvfree_rcu", style="cyan")
    t.add_column("total", justify="right")
    t.add_column("per s", justify="right")
    kv = s["kvfree_rcu"]
    if kv is None:
        t.add_row("enqueued", "n/a", "")
    else:
        rate = state.kv_rates[-1] if state.kv_rates else None
        t.add_row(
            "enqueued", f"{kv['enqueued']['objects']:,}", f"{rate:,.0f}" if rate is not None else ""
        )
        for kind, n in kv["enqueued"].get("by_kind", {}).items():
            t.add_row(f"  {kind}", f"{n:,}", "")
        if "by_stress" in kv:
            t.add_row("  by stress", f"{kv['by_stress']['enqueued']:,}", "")
        t.add_row("trend", sparkline(list(state.kv_rates)), "")
    parts.append(t)
    if kv is not None:
        cpus = " ".join(f"{i}:{n:,}" for i, n in enumerate(kv["enqueued"]["by_cpu"]))
        parts.append(Text(f"per CPU  {cpus}"))
        procs = Table(box=None, pad_edge=False)
        procs.add_column("tgid", justify="right")
        procs.add_column("comm")
        procs.add_column("enqueued", justify="right")
        for p in kv["by_process"][:5]:
            procs.add_row(str(p["tgid"]), p["comm"], f"{p['objects']:,}")
        parts.append(procs)
    other = []
    if s["rcu_pending"] is not None:
        other.append(f"rcu_pending enqueued {s['rcu_pending']['enqueued']['objects']:,}")
    if s["nolock"] is not None:
        other.append(
            f"nolock allocs {s['nolock']['attempts']:,} failed {s['nolock']['failures']:,}"
        )
    other.append(f"lost {s['lost']['total']:,}")
    parts.append(Text("  ·  ".join(other)))
    probes = Table(box=None, pad_edge=False, show_header=False)
    for p in s["probes"]:
        how = p.get("mechanism") or p["detail"]
        probes.add_row(p["name"], p["status"], Text(how, overflow="ellipsis", no_wrap=True))
    parts.append(Panel(probes, title="probes", title_align="left"))
    parts.append(Text("q quit · p pause · Ctrl-C detaches", style="dim"))
    return Group(*parts)


@contextmanager
def _keys() -> Iterator[callable]:
    """Non-blocking single-key reads from a terminal stdin (no-op otherwise)."""
    if not sys.stdin.isatty():
        yield lambda: None
        return
    fd = sys.stdin.fileno()
    old = termios.tcgetattr(fd)
    tty.setcbreak(fd)
    try:
        yield lambda: sys.stdin.read(1) if select.select([fd], [], [], 0)[0] else None
    finally:
        termios.tcsetattr(fd, termios.TCSADRAIN, old)


def show(feed: Iterator[Snapshot | str], banner: str, count: int | None = None) -> None:
    """Render snapshots (and log lines) from `feed` until it ends, q, or `count` snapshots."""
    state = DashboardState(banner)
    seen = 0
    with _keys() as key, Live(render(state), refresh_per_second=4, screen=False) as live:
        for item in feed:
            k = key()
            if k == "q":
                break
            if k == "p":
                state.paused = not state.paused
            if isinstance(item, str):
                state.log.append(item)
            elif not state.paused:
                state.push(item)
                seen += 1
            live.update(render(state))
            if count is not None and seen >= count:
                break


def live_feed(interval: float, command: str) -> Iterator[Snapshot]:
    from ..collector import Collector, provenance
    from ..live import LiveSource

    with LiveSource() as src:
        col = Collector(provenance(command=command), src.probe_dicts(), source="live")
        while True:
            yield col.update(src.read())
            time.sleep(interval)


class _LineSink:
    """A text stream for the VM runner: JSON snapshot lines go to a queue, others are log."""

    def __init__(self, q: queue.Queue) -> None:
        self.q = q
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
                    self.q.put(obj)
            elif line:
                self.q.put(line)
        return len(text)

    def flush(self) -> None:
        pass


def lab_feed(spec: str, interval: float, seconds: float) -> Iterator[Snapshot | str]:
    """Boot `spec` and run the kvfree stress there with snapshots every `interval`."""
    from ..lab import kernels, vm

    q: queue.Queue = queue.Queue()
    done = object()
    k = kernels.resolve(spec, progress=lambda m: q.put(m))
    cmd = [
        "rcupending",
        "stress",
        "kvfree",
        "--duration",
        str(seconds),
        "--workers",
        "2",
        "--measure",
        "--json",
        "--interval",
        str(interval),
    ]

    def runner() -> None:
        try:
            vm.run_in_vm(
                k,
                cmd,
                stream=_LineSink(q),
                env={"RCUPENDING_LAB_SPEC": k.spec, "RCUPENDING_LAB_SOURCE": k.source},
            )
        except Exception as e:  # shown in the log lines, then the feed ends
            q.put(f"lab VM failed: {e}")
        finally:
            q.put(done)

    threading.Thread(target=runner, daemon=True).start()
    while (item := q.get()) is not done:
        yield item


def run(interval: float, count: int | None, spec: str, lab_seconds: float, command: str) -> None:
    from .. import bpfload, planner
    from ..kernel import KernelInfo
    from ..probes import KVFREE_CALL_RCU

    bpfload.require_root()
    kernel = KernelInfo()
    status, loaded = planner.attach(KVFREE_CALL_RCU, kernel)
    if loaded is not None:
        loaded.close()
        show(live_feed(interval, command), f" LIVE · this host's kernel {kernel.release} ", count)
        return
    why = status.detail or status.status
    print(
        f"this host's kernel {kernel.release} refuses the kvfree_call_rcu probe: {why}",
        file=sys.stderr,
    )
    print(
        f"showing a lab VM instead: real kernel {spec} under QEMU TCG running "
        f"`stress kvfree` for {lab_seconds:.0f}s",
        file=sys.stderr,
    )
    banner = (
        f" LAB VM · real kernel {spec} running stress kvfree · host refused probes: {why[:60]} "
    )
    show(lab_feed(spec, interval, lab_seconds), banner, count)
