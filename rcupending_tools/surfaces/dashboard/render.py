"""One frame of the dashboard from its state: laid out for the terminal's size (80x24 at least),
growing with it (spare rows to processes and per-CPU lines, spare columns to the trend)."""

from __future__ import annotations

import time
from typing import Any

from rich.console import Group
from rich.table import Table
from rich.text import Text

from ...pipeline import derive
from ...pipeline.schema import Snapshot
from .state import (
    DashboardState,
    _kv_freed,
    _kv_objects,
    _nl,
    _rp_objects,
    sparkline,
)


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
            b.append("wait " + " ".join(f"{p} {_range(ns, p)}" for p in ("p50", "p99")))
            if (last := _interval_p50(state)) is not None:
                b.append(f"last interval p50 {last}")
            gps = lat.get("gps", {})
            if gps.get("p50") is not None:
                b.append("GPs " + " ".join(f"{p} {_gps(gps, p)}" for p in ("p50", "p99")))
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


def estimated(fam: dict[str, Any] | None, short: bool = False) -> str:
    """` (est. 1/N, M followed)` where a split is estimated from a sample, not exact; `short`:
    ` (est.)` (the per-CPU line: its values need the room)."""
    t = (fam or {}).get("tracking")
    if not t or t.get("exact"):
        return ""
    if short:
        return " (est.)"
    return f" (est. 1/{t.get('one_in') or '?'}, {_n(t['followed'])} followed)"


def _range(bounds: dict[str, Any], p: str) -> str:
    """A percentile as the log2 bucket holding it (`16.8–33.6 ms`); `≤x` from older
    snapshots, which kept only the upper bound."""
    r = (bounds.get("ranges") or {}).get(p)
    if r is not None:
        return derive.fmt_range(r).replace(" ", "")
    return f"≤{_ns(bounds.get(p))}"


def _gps(bounds: dict[str, Any], p: str) -> str:
    """Grace periods elapsed: the histogram counts grace periods + 1 in log2 buckets."""
    r = (bounds.get("ranges") or {}).get(p)
    if r is None:
        return f"≤{bounds.get(p)}"
    lo, hi = max(0, r[0] - 1), max(0, r[1] - 2)
    return str(lo) if lo == hi else f"{lo}–{hi}"


def _interval_p50(state: DashboardState) -> str | None:
    """p50 of the waits that ended between the last two snapshots (since-attach beside it)."""
    if state.prev is None or state.cur is None:
        return None
    name = "kvfree_rcu.latency_ns"
    before = ((state.prev.get("histograms") or {}).get(name) or {}).get("buckets", [])
    after = ((state.cur.get("histograms") or {}).get(name) or {}).get("buckets")
    if after is None:
        return None
    r = derive.percentile_range(derive.interval(before, after), 50)
    return None if r is None else derive.fmt_range(r).replace(" ", "")


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
    pos = f"snapshot {s['seq']}" + (f" ({state.seen}/{state.total})" if state.total
                                    else f" ({state.seen}/…)" if state.replay else "")
    flags = "  PAUSED" if state.paused else ""
    if state.ended:
        flags += "  END of recording" if state.total or state.replay else "  END of the feed"
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
            cpu_label = f"  pending bytes per CPU{estimated(kv, short=True)} "
            vals = pend["bytes_by_cpu"]
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
    keys = "q quit · p pause" + (" · ←/→ g/G seek" if state.replay
                                  else "" if state.total is not None else " · Ctrl-C detaches")
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
        est = estimated(fam_data)  # a line of its own above the table: a header would wrap
        tab = Table(box=None, pad_edge=False, padding=(0, 1),
                    title=Text(f"processes{est}"[:width]) if est else None,
                    title_justify="left")
        tab.add_column("tgid", justify="right", width=8)
        tab.add_column("comm", width=16, no_wrap=True, overflow="ellipsis")
        tab.add_column(f"{fam} enqueued", justify="right", width=20)
        if with_bytes:
            tab.add_column("pending bytes", justify="right", width=14)
        tab.add_column("share", justify="right", width=6)
        other = (fam_data or {}).get("by_process_other")
        shown = procs[: spare - (2 if other else 1) - (1 if est else 0)]
        for p in shown:
            row = [str(p["tgid"]), p["comm"], _n(p["objects"])]
            if with_bytes:
                row.append(_n(p["pending_bytes"]))
            row.append(f"{100 * p['objects'] / total:.0f}%")
            tab.add_row(*(Text(c) for c in row))  # a comm is text, never rich markup
        if other:  # the rows not shown: the table sums to the totals
            rest = procs[len(shown):]
            objects = other["objects"] + sum(p["objects"] for p in rest)
            row = ["", f"other ({other['processes'] + len(rest)})", _n(objects)]
            if with_bytes:
                row.append(_n(other["pending_bytes"] + sum(p["pending_bytes"] for p in rest)))
            row.append(f"{100 * objects / total:.0f}%")
            tab.add_row(*(Text(c) for c in row), style="dim")
        middle.append(tab)
    return Group(*top, *middle, *bottom)


