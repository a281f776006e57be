"""`rcupending top`: a rich dashboard that reads collector snapshots only.

Feeds: this host's kernel (live), a lab VM running a stress scenario on a real kernel (when the
host refuses the probes), or a recording (`--replay`), each said plainly in the header. The frame
is laid out for the terminal's size (80x24 at least) and grows with it: spare rows go to more
processes and per-CPU lines, spare columns to the trend. Every number shown is a snapshot's value
(totals) or a difference of two snapshots over their time difference (rates).
"""

from __future__ import annotations

import json
import os
import queue
import select
import sys
import termios
import threading
import time
import tty
from collections import deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext
from typing import Any

from rich.console import Console, Group
from rich.live import Live
from rich.table import Table
from rich.text import Text

from ...pipeline import derive
from ...pipeline.schema import Snapshot, is_snapshot

SPARK = " ▁▂▃▄▅▆▇█"
TICK = 0.1  # seconds between key polls while a feed waits

Feed = Iterator[Snapshot | str | None]  # None: nothing new yet (lets the view poll keys)


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


def _nolock_detail(nl: dict) -> str:
    """Orders, contexts and the top call site of the nolock family (newer snapshots)."""
    parts = []
    if nl.get("by_order"):
        parts.append(
            "order "
            + " ".join(f"{r['order'] if r['order'] is not None else '?'}:{_n(r['attempts'])}"
                       for r in nl["by_order"][:4])
        )
    if nl.get("by_context"):
        ctx = [f"{c} {_n(r['attempts'])}" for c, r in nl["by_context"].items() if r["attempts"]]
        if ctx:
            parts.append(", ".join(ctx))
    if nl.get("by_caller"):
        parts.append(f"top {nl['by_caller'][0]['caller']}")
    return "  ".join(parts)


def _nl(key: str) -> Callable[[Snapshot], int | None]:
    return lambda s: s["nolock"][key] if s.get("nolock") else None


class DashboardState:
    """What the view remembers between snapshots: the last two and a rate history."""

    def __init__(self, banner: str, total: int | None = None, note: str = "") -> None:
        self.banner = banner
        self.note = note  # one dim line under the header (e.g. why this is not live)
        self.started = time.monotonic()
        self.total = total  # snapshots in a replayed recording
        self.prev: Snapshot | None = None
        self.cur: Snapshot | None = None
        self.trend: deque[float] = deque(maxlen=240)  # pending bytes, else enqueues/s
        self.trend_is_pending = False
        self.log: deque[str] = deque(maxlen=3)
        self.paused = False
        self.ended = False
        self.seen = 0

    def push(self, snap: Snapshot) -> None:
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

    def rate(self, get: Callable[[Snapshot], Any]) -> float | None:
        return derive.rate(self.prev, self.cur, get)


def _n(v: int | float) -> str:
    return f"{v:,}" if isinstance(v, int) else f"{v:,.1f}"


def _r(v: float | None) -> str:
    return "" if v is None else f"{v:,.0f}/s"


def _pack(items: list[str], width: int, lines: int, prefix: str) -> list[str]:
    """Lay `items` out on at most `lines` lines of `width`; what does not fit is counted."""
    rows: list[list[str]] = [[]]
    for it in items:
        row = rows[-1]
        if row and len(prefix) + len(" ".join([*row, it])) > width:
            rows.append([])
        rows[-1].append(it)
    if len(rows) > lines:
        rows = rows[:lines]
        shown = sum(len(r) for r in rows)
        last = rows[-1]
        while last:
            more = f"+{len(items) - shown} more"
            if len(prefix) + len(" ".join([*last, more])) <= width:
                last.append(more)
                break
            last.pop()
            shown -= 1
    pad = " " * len(prefix)
    return [(prefix if i == 0 else pad) + " ".join(r) for i, r in enumerate(rows)]


def _probe_line(p: dict[str, Any], width: int) -> Text:
    how = p.get("mechanism") if p["status"] in ("attached", "stand-in") else p["detail"]
    if p["status"] == "stand-in":
        how = f"{p.get('mechanism') or ''}: {p['detail']}"
    style = {"attached": "green", "stand-in": "yellow", "blocked": "red"}.get(p["status"], "dim")
    t = Text(f"  {p['name']:<20} ")
    t.append(f"{p['status']:<9}", style=style)
    t.append(f" {how or ''}")
    t.truncate(width, overflow="ellipsis")
    return t


def _ns(v: int | float | None) -> str:
    if v is None:
        return "?"
    for unit, div in (("s", 1e9), ("ms", 1e6), ("µs", 1e3)):
        if v >= div:
            return f"{v / div:.3g}{unit}"
    return f"{v:.0f}ns"


def _line(width: int, *parts: tuple[str, str] | str) -> Text:
    t = Text()
    for p in parts:
        t.append(*(p if isinstance(p, tuple) else (p,)))
    t.truncate(width, overflow="ellipsis")
    return t


def _kvfree_lines(state: DashboardState, kv: dict[str, Any], width: int) -> list[Text]:
    enq = kv["enqueued"]
    freed, pend = kv.get("freed"), kv.get("pending")
    a: list[tuple[str, str] | str] = [
        ("kvfree_rcu  ", "bold cyan"),
        f"enqueued {_n(enq['objects'])} ",
    ]
    a.append((_r(state.rate(_kv_objects)), "bold"))
    if freed is not None:
        a += [f"  freed {_n(freed['objects'])} ", (_r(state.rate(_kv_freed)), "bold")]
    out = [_line(width, *a)]
    if pend is not None:
        out.append(
            _line(
                width,
                "  pending ",
                (f"{_n(pend['bytes'])} bytes", "bold magenta"),
                f" ({_human(pend['bytes'])}) in {_n(pend['objects'])} objects",
                f" · enqueued {_n(enq['bytes'])} bytes" if "bytes" in enq else "",
            )
        )
    parts = [f"{k} {_n(v)}" for k, v in enq.get("by_kind", {}).items()]
    if "by_stress" in kv:
        parts.append(f"by stress {_n(kv['by_stress'].get('enqueued', 0))}")
    for key in ("untracked", "replaced"):
        v = kv.get(key)
        n = v.get("objects") if isinstance(v, dict) else v
        if n:
            parts.append(f"{key} {_n(n)}")
    if parts:
        out.append(_line(width, "  " + " · ".join(parts)))
    fb, lat = kv.get("fallback"), kv.get("latency")
    if fb is not None or lat:
        b: list[str] = []
        if fb is not None:
            pct = [
                f"{k} {_n(fb.get(k, 0))}"
                + (f" ({100 * fb[k + '_ratio']:.1f}%)" if fb.get(k + "_ratio") is not None else "")
                for k in ("list", "inline")
            ]
            b.append("fallback " + " ".join(pct))
        if lat and lat.get("count"):
            ns = lat.get("ns", {})
            b.append(
                f"wait p50 ≤{_ns(ns.get('p50'))} p90 ≤{_ns(ns.get('p90'))} "
                f"p99 ≤{_ns(ns.get('p99'))}"
            )
            gps = lat.get("gps", {})
            if gps.get("p50") is not None:
                b.append(f"GPs p50 ≤{gps['p50']} p99 ≤{gps.get('p99')}")
        joined = "  " + " · ".join(b)
        if len(joined) <= width or len(b) == 1:
            out.append(_line(width, joined))
        else:  # fallback on one line, the wait on the next
            out.append(_line(width, "  " + b[0]))
            out.append(_line(width, "  " + " · ".join(b[1:])))
    rates = list(state.trend)
    what = "pending bytes" if state.trend_is_pending else "enqueues/s"
    label = f"  {what} trend (max {max(rates):,.0f}) " if rates else f"  {what} trend "
    out.append(Text(label) + Text(sparkline(rates, width - len(label)), style="cyan"))
    return out


def _self_cpu(s: Snapshot) -> float | None:
    sc = s.get("self_cost")
    return sc["cpu_seconds"] if sc else None


def _self_bpf_ns(s: Snapshot) -> int | None:
    sc = s.get("self_cost")
    return sc.get("bpf_run_ns") if sc else None


def _self_cost_line(state: DashboardState, sc: dict[str, Any] | None, width: int) -> Text:
    """The tool's own cost: its CPU (and share of one CPU), memory, its BPF programs' run time."""
    label = ("tool cost   ", "bold cyan")
    if sc is None:
        return _line(width, label, ("n/a", "dim"))
    cpu = f"{sc['cpu_seconds']:,.2f}s"
    if (r := state.rate(_self_cpu)) is not None:
        cpu = f"{100 * r:.1f}% ({cpu})"  # of one CPU, as top shows it
    bpf = "n/a"
    ns, runs = sc.get("bpf_run_ns"), sc.get("bpf_run_count")
    if ns is not None and runs is not None:
        bpf = f"{_ns(ns)}, {_n(runs)} runs"
        if (r := state.rate(_self_bpf_ns)) is not None:
            bpf = f"{100 * r / 1e9:.2f}% ({bpf})"
    return _line(width, label, f"CPU {cpu} · rss {_human(sc['rss_bytes'])} · BPF {bpf}")


def _human(n: int | float) -> str:
    for unit, div in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if abs(n) >= div:
            return f"{n / div:.1f} {unit}"
    return f"{n} B"


def render(state: DashboardState, width: int = 80, height: int = 24) -> Group:
    """One frame of at most `height` lines of at most `width` columns."""
    width = max(40, width)
    height = max(12, height)
    head = Text(state.banner[:width].ljust(width), style="bold reverse")
    s = state.cur
    note = [_line(width, (state.note, "dim"))] if state.note else []
    if s is None:
        waited = time.monotonic() - state.started
        lines = [head, *note, Text(f"waiting for the first snapshot… {waited:.0f}s", style="dim")]
        lines += [Text(ln[:width], style="dim") for ln in state.log]
        return Group(*lines)
    prov = s["provenance"]
    where = s["source"]
    if prov.get("lab"):
        where += f" {prov['lab'].get('spec', '')}"
    pos = f"snapshot {s['seq']}" + (f" ({state.seen}/{state.total})" if state.total else "")
    flags = "  PAUSED" if state.paused else ""
    if state.ended:
        flags += "  END of recording" if state.total else "  END of the feed"
    info = _line(
        width,
        (f"kernel {prov['kernel_release']} · {where} · t+{s['elapsed_s']:.0f}s · {pos}", "bold"),
    )
    top: list[Any] = [head, info, *note]
    kv = s["kvfree_rcu"]
    cpu_label, cpu_items = "", []
    if kv is None:
        why = next((p for p in s["probes"] if p["name"] == "kvfree_call_rcu"), None)
        msg = f"{why['status']}: {why['detail']}" if why else "not attached"
        top.append(_line(width, ("kvfree_rcu  ", "bold cyan"), (f"n/a ({msg})", "dim")))
    else:
        top += _kvfree_lines(state, kv, width)
        pend = kv.get("pending") or {}
        if "bytes_by_cpu" in pend:
            cpu_label, vals = "  pending bytes per CPU ", pend["bytes_by_cpu"]
        else:
            cpu_label, vals = "  enqueued per CPU ", kv["enqueued"]["by_cpu"]
        cpu_items = [f"{i}:{_n(n)}" for i, n in enumerate(vals)]
    cpu_at = len(top)
    rp = s["rcu_pending"]
    if rp is not None:
        top.append(
            _line(
                width,
                ("rcu_pending ", "bold cyan"),
                f"enqueued {_n(rp['enqueued']['objects'])} {_r(state.rate(_rp_objects))}",
            )
        )
    nl = s["nolock"]
    if nl is not None:
        standin = any(
            p["name"] == "alloc_pages_nolock" and p["status"] == "stand-in" for p in s["probes"]
        )
        top.append(
            _line(
                width,
                ("nolock      ", "bold cyan"),
                f"attempts {_n(nl['attempts'])} {_r(state.rate(_nl('attempts')))}  "
                f"failures {_n(nl['failures'])} {_r(state.rate(_nl('failures')))}"
                + ("  (stand-in)" if standin else ""),
            )
        )
        if (detail := _nolock_detail(nl)) and height > 24:  # 80x24 keeps its layout
            top.append(_line(width, ("            ", "bold cyan"), detail))
    lost = s["lost"]
    reasons = ", ".join(f"{k} {_n(v)}" for k, v in lost["by_reason"].items() if v)
    top.append(
        Text(
            f"lost events {_n(lost['total'])}" + (f" ({reasons})" if reasons else ""),
            style="red" if lost["total"] else "dim",
        )
    )
    if "self_cost" in s:  # snapshots of older collectors lack it
        top.append(_self_cost_line(state, s["self_cost"], width))

    bottom: list[Any] = [Text("probes", style="bold")]
    bottom += [_probe_line(p, width) for p in s["probes"]]
    bottom += [Text(ln[:width], style="dim") for ln in list(state.log)[-1:]]
    keys = "q quit · p pause" + ("" if state.total is not None else " · Ctrl-C detaches")
    bottom.append(
        _line(width, (flags.strip() + "  " if flags else "", "bold yellow"), (keys, "dim"))
    )

    spare = height - len(top) - len(bottom)
    if cpu_items and spare > 0:
        want = max(1, spare // 3)  # the rest goes to the process table
        cpu_lines = _pack(cpu_items, width, want, cpu_label)
        top[cpu_at:cpu_at] = [Text(ln) for ln in cpu_lines]
        spare -= len(cpu_lines)
    middle: list[Any] = []
    # histograms without a summary line of their own (kvfree_rcu's are in its latency line)
    for name, h in sorted((s.get("histograms") or {}).items()):
        if spare <= 3 or (kv is not None and name.startswith("kvfree_rcu.")):
            continue
        ps = [derive.percentile(h.get("buckets", []), p) for p in derive.PERCENTILES]
        count = sum(b[2] for b in h.get("buckets", []))
        pct = "  ".join(
            f"p{p} ≤{v:,}" for p, v in zip(derive.PERCENTILES, ps, strict=True) if v is not None
        )
        middle.append(Text(f"{name} ({h.get('unit', '')}, n={count:,})  {pct}"[:width]))
        spare -= 1
    fam_data = kv or rp
    procs = (fam_data or {}).get("by_process", [])
    if procs and spare >= 2:
        fam = "kvfree_rcu" if kv else "rcu_pending"
        total = fam_data["enqueued"]["objects"] or 1
        with_bytes = "pending_bytes" in procs[0]
        tab = Table(box=None, pad_edge=False, padding=(0, 1))
        tab.add_column("tgid", justify="right", width=8)
        tab.add_column("comm", width=16, no_wrap=True, overflow="ellipsis")
        tab.add_column(f"{fam} enqueued", justify="right", width=20)
        if with_bytes:
            tab.add_column("pending bytes", justify="right", width=14)
        tab.add_column("share", justify="right", width=6)
        for p in procs[: spare - 1]:
            row = [str(p["tgid"]), p["comm"], _n(p["objects"])]
            if with_bytes:
                row.append(_n(p["pending_bytes"]))
            row.append(f"{100 * p['objects'] / total:.0f}%")
            tab.add_row(*row)
        middle.append(tab)
    return Group(*top, *middle, *bottom)


@contextmanager
def _keys() -> Iterator[Callable[[float], str | None]]:
    """Single-key reads from a terminal stdin, waiting at most `timeout` (no-op otherwise)."""
    if not sys.stdin.isatty():
        yield lambda timeout=0.0: (time.sleep(timeout), None)[1]
        return
    fd = sys.stdin.fileno()
    old = termios.tcgetattr(fd)
    tty.setcbreak(fd)
    try:

        def key(timeout: float = 0.0) -> str | None:
            if select.select([fd], [], [], timeout)[0]:
                return os.read(fd, 1).decode(errors="replace")
            return None

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
            while True:
                k = key(TICK if (state.paused or state.ended) else 0.0)
                if k in ("q", "Q"):
                    break
                if k in ("p", "P"):
                    state.paused = not state.paused
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
                    draw()
                    if not (hold and interactive):
                        break
                    continue
                if item is None:
                    draw(force=state.cur is None)  # the waiting line counts seconds
                    continue
                if isinstance(item, str):
                    state.log.append(item)
                    if not interactive:
                        print(item, file=sys.stderr)
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
        from ..text import summary

        print(summary(state.cur))
    return state


def _sleep_ticks(seconds: float) -> Iterator[None]:
    end = time.monotonic() + seconds
    while (left := end - time.monotonic()) > 0:
        time.sleep(min(TICK, left))
        yield None


def replay_feed(snapshots: list[Snapshot], speed: float) -> Feed:
    """The recording at its recorded pace divided by `speed` (0: as fast as it renders)."""
    from ...pipeline.recording import paced

    for delay, snap in paced(snapshots, speed):
        yield from _sleep_ticks(delay)
        yield snap


def live_feed(src: Any, col: Any, interval: float) -> Feed:
    """Snapshots of an attached LiveSource through its Collector (the caller closes `src`)."""
    yield col.update(src.read())
    while True:
        yield from _sleep_ticks(interval)
        yield col.update(src.read())


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


def lab_feed(spec: str, interval: float, seconds: float) -> Feed:
    """Boot `spec` and run the kvfree stress there with snapshots every `interval`."""
    from ...lab import kernels, vm

    q: queue.Queue = queue.Queue()
    done = object()
    k = kernels.resolve(spec, progress=lambda m: q.put(m))
    q.put(
        f"booting {k.spec} ({k.release}) in a lab VM; the boot and bcc's compile take a "
        "minute or two"
    )
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
    while True:
        try:
            item = q.get(timeout=TICK)
        except queue.Empty:
            yield None
            continue
        if item is done:
            return
        yield item


def explain_refusal(statuses: list[Any], release: str) -> str | None:
    """Why this kernel cannot show kvfree_rcu live (None when kvfree_call_rcu attached)."""
    kv = next((s for s in statuses if s.name == "kvfree_call_rcu"), None)
    if kv is not None and kv.status in ("attached",):
        return None
    why = (kv.detail or kv.status) if kv is not None else "not in the probe table"
    return f"this host's kernel {release} refuses the kvfree_call_rcu probe: {why}"


def run(
    interval: float,
    count: int | None,
    spec: str,
    lab_seconds: float,
    *,
    no_lab: bool = False,
    on_snapshot: Callable[[Snapshot], None] | None = None,
    self_cost: bool = False,
) -> None:
    """Live: this host when it allows the kvfree_call_rcu probe; else say why, then a lab VM
    (or, with `no_lab`, whatever does attach here)."""
    from ...cli import app as cli
    from ...errors import UserError

    src, col = cli._live_collector(self_cost=self_cost)
    try:
        release = src.kernel.release
        why = explain_refusal(src.statuses, release)
        if why is None:
            feed = live_feed(src, col, interval)
            show(feed, f" LIVE · this host's kernel {release} ", count, on_snapshot=on_snapshot)
            return
        print(why, file=sys.stderr)
        others = [s for s in src.statuses if s.name != "kvfree_call_rcu"]
        for s in others:
            print(f"  {s.name}: {s.status}: {s.detail}", file=sys.stderr)
        if no_lab:
            if not src.loaded:
                raise UserError(
                    f"nothing to show live on {release}: no probe attaches (--no-lab: "
                    "not starting a lab VM)"
                )
            names = ", ".join(src.loaded)
            print(f"--no-lab: showing what does attach here ({names})", file=sys.stderr)
            feed = live_feed(src, col, interval)
            banner = f" LIVE (degraded) · this host's kernel {release} · {names} only "
            show(feed, banner, count, on_snapshot=on_snapshot)  # kvfree_rcu's line says why
            return
    finally:
        src.close()  # detaches every program (also on q, Ctrl-C, SIGTERM)
    print(
        f"showing a lab VM instead: real kernel {spec} (KVM if usable, else QEMU TCG) running "
        f"`stress kvfree` for {lab_seconds:.0f}s (--no-lab to stay on this host)",
        file=sys.stderr,
    )
    banner = f" LAB VM · real kernel {spec} · stress kvfree (this host refuses the probes) "
    note = "this host: " + why.split(" refuses the kvfree_call_rcu probe: ", 1)[-1]
    show(
        lab_feed(spec, interval, lab_seconds),
        banner,
        count,
        hold=True,
        on_snapshot=on_snapshot,
        note=note,
    )
