"""`rcupending bench overhead`: what the probes cost the kvfree_rcu() hot path.

One process, phases alternating per repeat: `unprobed` (nothing attached), `empty` (an fentry
program on kvfree_call_rcu that does nothing: the trampoline's cost) and `full` (the collector's
real programs). Each phase runs the native driver (stress/native.py) for S seconds with BPF
stats off; programs are compiled once and attached/detached between phases. Then one phase each
of `empty` and `full` with BPF run-time stats on gives ns per run; then N phases with both
attached together give their ratio on the same calls (`paired`). The python driver runs once
with 1 worker (the default `stress kvfree` loop) and once with as many workers as driver threads,
right before the first unprobed phase. A benchmark, not a test: it reports, it does not judge.
"""

from __future__ import annotations

import cProfile
import os
import pstats
import statistics
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

from .. import config
from ..errors import UserError
from ..kernel import KernelInfo
from ..pipeline import selfcost
from ..pipeline.schema import Snapshot
from ..pipeline.session import open_live
from ..probes import bpfload, planner
from ..probes.table import KVFREE_CALL_RCU
from ..stress import kvfree, native
from .syscalls import SyscallCounter

PHASES = ("unprobed", "empty", "full")


class Switch:
    """A loaded bcc module whose attachments (fentry/fexit, tracepoints, kprobes) can be paused
    and resumed without recompiling."""

    def __init__(self, bpf: Any, kernel: KernelInfo) -> None:
        self.bpf = bpf
        self.kernel = kernel
        self.saved: list[tuple[str, bytes, bytes]] | None = None

    def pause(self) -> None:
        b = self.bpf
        saved = [("kfunc", k, b"") for k in b.kfunc_entry_fds]
        saved += [("kretfunc", k, b"") for k in b.kfunc_exit_fds]
        saved += [("tracepoint", k, b"") for k in b.tracepoint_fds]
        saved += [("kprobe", ev, fn) for ev, fns in b.kprobe_fds.items() for fn in list(fns)]
        for kind, key, fn in saved:
            if kind == "kprobe":
                b.detach_kprobe_event_by_fn(key, fn)
            else:
                {"kfunc": b.detach_kfunc, "kretfunc": b.detach_kretfunc,
                 "tracepoint": b.detach_tracepoint}[kind](key)
        self.saved = saved

    def resume(self) -> None:
        b = self.bpf
        for kind, key, fn in self.saved or []:
            if kind == "kfunc":
                b.attach_kfunc(fn_name=key)
            elif kind == "kretfunc":
                b.attach_kretfunc(fn_name=key)
            elif kind == "kprobe":  # bcc names the event p_<symbol> / r_<symbol>
                attach = b.attach_kprobe if key.startswith(b"p_") else b.attach_kretprobe
                attach(event=kprobe_symbol(key, self.kernel), fn_name=fn)
            else:
                b.attach_tracepoint(tp=key, fn_name=b"tracepoint__" + key.replace(b":", b"__"))
        self.saved = None


def kprobe_symbol(ev_name: bytes, kernel: KernelInfo) -> bytes:
    """The kernel symbol behind bcc's kprobe event name (`p_` or `r_` + the symbol with `.` and
    `+` made `_`): the symbol itself when kallsyms has it, else the clone it names."""
    want = ev_name[2:].decode()
    if want in kernel.kallsyms:
        return want.encode()
    clone = next((name for name in kernel.kallsyms
                  if name.replace(".", "_").replace("+", "_") == want), want)
    return clone.encode()


def spread(values: list[float]) -> dict[str, Any]:
    return {
        "calls_per_s": [round(v, 1) for v in values],
        "min": round(min(values), 1),
        "median": round(statistics.median(values), 1),
        "max": round(max(values), 1),
    }


def _stats_by_program(programs: list[selfcost.Program]) -> list[dict[str, Any]]:
    return selfcost.program_stats(programs, stats_on=True) or []


def _phase_run(seconds: float, threads: int) -> float:
    return float(native.run(seconds, threads=threads)["calls_per_s"])


def overhead(
    repeats: int,
    seconds: float,
    threads: int | None = None,
    progress: Callable[[str], None] = lambda m: None,
    profile_reads: int = 0,
) -> dict[str, Any]:
    """Run the benchmark; the JSON result (see README, OVERHEAD). `profile_reads` > 0: the
    collector's snapshots are profiled and that many of their costliest functions printed
    to standard error (CPU time, cumulative)."""
    bpfload.require_root()
    threads = threads or os.cpu_count() or 1
    native.binary()
    kernel = KernelInfo()
    bound = planner.bind(KVFREE_CALL_RCU, kernel)
    if isinstance(bound, planner.ProbeStatus):
        raise UserError(f"bench overhead: {bound.detail}")

    progress("compiling and loading the empty program")  # first: fail fast without fentry
    try:
        empty = bpfload.load("bench_empty.bpf.c", {"KVFREE_SYM": bound.symbol}, "fentry")
    except bpfload.LoadError as e:
        raise UserError(f"bench overhead: the empty fentry program failed: {e.reason}") from e
    session = None
    try:
        empty_switch = Switch(empty.bpf, kernel)
        empty_switch.pause()
        progress("compiling and loading the collector")
        config.default_settle(0)  # the steady state: 1 in RCUPENDING_SAMPLE objects followed
        session = open_live()
        src = session.source
        kv = src.loaded.get("kvfree_call_rcu")
        if kv is None or kv.kind != "fentry":
            why = next((s.detail for s in src.statuses if s.name == "kvfree_call_rcu"), "")
            raise UserError(f"bench overhead: kvfree_call_rcu needs fentry here: {why}")
        switches = {"empty": [empty_switch],
                    "full": [Switch(x.bpf, kernel) for x in src.loaded.values()]}
        for sw in switches["full"]:
            sw.pause()
        # Right before the first unprobed phase, so both see the same host load.
        python = [_python_rate(w, seconds, progress) for w in sorted({1, threads})]
        rates: dict[str, list[float]] = {p: [] for p in PHASES}
        for r in range(repeats):
            for phase in PHASES:
                progress(f"repeat {r + 1}/{repeats}: {phase}")
                for sw in switches.get(phase, []):
                    sw.resume()
                try:
                    rates[phase].append(_phase_run(seconds, threads))
                finally:
                    for sw in switches.get(phase, []):
                        sw.pause()
        stats_runs: dict[str, Any] = {}
        fd = selfcost.enable_stats()
        try:
            for phase, loaded in (("empty", {"bench_empty": empty}), ("full", src.loaded)):
                progress(f"with BPF stats: {phase}")
                progs = _programs(loaded)
                before = {p["name"]: p for p in _stats_by_program(progs)}
                for sw in switches[phase]:
                    sw.resume()
                try:
                    rate = _phase_run(seconds, threads)
                finally:
                    for sw in switches[phase]:
                        sw.pause()
                stats_runs[phase] = _stats_delta(before, _stats_by_program(progs), rate)
        finally:
            selfcost.disable_stats(fd)
        paired = _paired_stats(empty, src.loaded, switches, repeats, seconds, threads, progress)
        progress("collector cost: snapshots during the flood")
        collector = _collector_cost(session, switches["full"], threads, profile=profile_reads)
        tracking = _tracking(session.read())
    finally:
        if session is not None:
            session.close()
        empty.close()
    result = _result(kernel, threads, repeats, seconds, rates, stats_runs, python)
    result["paired"] = paired
    result["full_tracking"] = tracking
    result["collector"] = collector
    result["settings"] = {"sample_one_in": config.kvfree_sample_one_in(),
                          "settle_s": config.settle_seconds()}
    return result


def _programs(loaded: dict[str, Any]) -> list[selfcost.Program]:
    return [selfcost.Program(probe, n.decode(), f.fd)
            for probe, x in loaded.items() for n, f in x.bpf.funcs.items()]


def _paired_stats(empty: Any, full: dict[str, Any], switches: dict[str, list[Switch]],
                  repeats: int, seconds: float, threads: int,
                  progress: Callable[[str], None]) -> dict[str, Any]:
    """The empty and the full programs attached together, with BPF stats on, `repeats` times:
    both run on the same kvfree_call_rcu() calls, so the emulator's speed, which drifts from
    one phase to the next under TCG, cancels in their ratio. The attach order (hence which of
    the two runs first in the trampoline) alternates per repeat."""
    empty_progs, full_progs = _programs({"bench_empty": empty}), _programs(full)
    runs = []
    fd = selfcost.enable_stats()
    try:
        for r in range(repeats):
            progress(f"with BPF stats {r + 1}/{repeats}: empty and full together")
            order = ["empty", "full"] if r % 2 == 0 else ["full", "empty"]
            e0 = {p["name"]: p for p in _stats_by_program(empty_progs)}
            f0 = {p["name"]: p for p in _stats_by_program(full_progs)}
            attached = [sw for phase in order for sw in switches[phase]]
            try:
                for sw in attached:
                    sw.resume()
                rate = _phase_run(seconds, threads)
            finally:
                for sw in attached:
                    if sw.saved is None:
                        sw.pause()
            e = _stats_delta(e0, _stats_by_program(empty_progs), rate)
            f = _stats_delta(f0, _stats_by_program(full_progs), rate)
            runs.append(_pair(e, f, order[0]))
    finally:
        selfcost.disable_stats(fd)
    return _paired_summary(runs)


def _pair(empty: dict[str, Any], full: dict[str, Any], first: str) -> dict[str, Any]:
    """One paired run: each side's ns and their ratios (None when a side saw no call)."""
    e, entry, total = (empty["entry_ns_per_run"], full["entry_ns_per_run"],
                       full["bpf_ns_per_call"])
    return {"first": first, "calls_per_s": full["calls_per_s"],
            "kvfree_call_rcu_runs": full["kvfree_call_rcu_runs"],
            "empty_ns_per_run": e, "entry_ns_per_run": entry, "bpf_ns_per_call": total,
            "entry_over_empty": round(entry / e, 3) if e and entry else None,
            "all_over_empty": round(total / e, 3) if e and total else None}


def _paired_summary(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """The runs, and each ratio with both sides averaged over both trampoline positions: in
    runs N and O (README OVERHEAD, TCG) the empty program took 217-298 ns when it ran first
    (attached last) and 96-166 ns when it ran after the collector's (in run Q 171-179 ns
    either way), so a ratio of one order alone may say more about the order than about the
    programs. A position's ns are the mean of its runs; None when no run had both sides."""
    def pooled(key: str) -> float | None:
        by_first: dict[str, list[dict[str, Any]]] = {}
        for r in runs:
            if r["empty_ns_per_run"] and r[key]:
                by_first.setdefault(r["first"], []).append(r)
        if not by_first:
            return None
        num = sum(statistics.mean(r[key] for r in rs) for rs in by_first.values())
        den = sum(statistics.mean(r["empty_ns_per_run"] for r in rs) for rs in by_first.values())
        return round(num / den, 3)
    return {"runs": runs, "entry_over_empty": pooled("entry_ns_per_run"),
            "all_over_empty": pooled("bpf_ns_per_call"),
            "orders": sorted({r["first"] for r in runs})}


def _collector_cost(session: Any, switches: list[Switch], threads: int, reads: int = 10,
                    interval: float = 1.0, profile: int = 0) -> dict[str, Any]:
    """Per snapshot, read every `interval` s during a native flood with every program on: the
    reading thread's system calls (the kernel's count: bench/syscalls.py) and CPU time, and
    that time split as session.read() spends it: reading the maps (system calls and the
    kernel's work in them included), then making the snapshot of that reading. Each is
    followed at once by a second snapshot, timed apart (`cpu_ms_back_to_back`): under
    emulation the first after a 1 s sleep costs more than the same work done back to back
    (idle guest, debian:6.12: 9.6 against 7.8 ms; runs L and M during the flood: 16.9 against
    15.3 and 26.7 against 24.9 ms), a gap of the machine's caches, not of the collector.
    `profile`: that many of the reads' costliest functions to standard error (the
    profiler's own cost is then in the figures)."""
    failed: list[BaseException] = []

    def flood() -> None:
        try:
            _phase_run(reads * interval + 2, threads)
        except BaseException as e:  # noqa: BLE001 - reported after the reads
            failed.append(e)

    for sw in switches:
        sw.resume()
    calls: list[int] = []
    cpu: list[float] = []
    again: list[float] = []
    read_s: list[float] = []
    try:
        driver = threading.Thread(target=flood, daemon=True)
        driver.start()
        prof = cProfile.Profile(time.thread_time) if profile else None
        with SyscallCounter() as counter:
            for _ in range(reads):
                time.sleep(interval)
                c0, t0 = counter.count(), time.thread_time()
                if prof is not None:
                    prof.enable()
                raw = session.source.read()  # session.read(), in its two steps
                tr = time.thread_time()
                session.collector.update(raw)
                if prof is not None:
                    prof.disable()
                t1, c1 = time.thread_time(), counter.count()
                calls.append(c1 - c0 - 1)  # less the second count's own read()
                cpu.append(t1 - t0)
                read_s.append(tr - t0)
                t2 = time.thread_time()
                session.collector.update(session.source.read())
                again.append(time.thread_time() - t2)
        driver.join()
    finally:
        for sw in switches:
            sw.pause()
    if failed:
        raise failed[0]
    if prof is not None:
        pstats.Stats(prof, stream=sys.stderr).sort_stats("cumulative").print_stats(profile)
    cpu_s = statistics.median(cpu)
    return {"reads": reads, "interval_s": interval,
            "syscalls_per_snapshot": {"values": calls, "min": min(calls),
                                      "median": statistics.median(calls), "max": max(calls)},
            "cpu_ms_per_snapshot": round(cpu_s * 1e3, 2),
            "cpu_ms_reading_maps": round(statistics.median(read_s) * 1e3, 2),
            "cpu_percent_of_one_cpu": round(100 * cpu_s / interval, 2),
            "cpu_ms_back_to_back": round(statistics.median(again) * 1e3, 2)}


def _tracking(snap: Snapshot) -> dict[str, int]:
    """Enqueues the full phases saw and how many the per-object map could not hold."""
    kv = snap["kvfree_rcu"] or {"enqueued": {"objects": 0}, "untracked": {"objects": 0}}
    return {"enqueued": kv["enqueued"]["objects"], "untracked": kv["untracked"]["objects"],
            "followed": (kv.get("tracking") or {}).get("followed")}


def _python_rate(workers: int, seconds: float, progress: Callable[[str], None]) -> dict:
    """The python driver (`stress kvfree`, forked workers) for `seconds`: calls/s."""
    progress(f"python driver: {workers} worker(s) for {seconds:g} s")
    run = kvfree.start(None, workers=workers, sockets=max(8, workers), duration=seconds)
    try:
        calls = run.wait()["calls"]
    finally:
        run.finish()
    return {"workers": workers, "calls_per_s": round(calls / seconds, 1)}


def _stats_delta(
    before: dict[str, dict], after: list[dict], rate: float
) -> dict[str, Any]:
    """Runs and ns per program during one stats-on phase, and per kvfree_call_rcu() call."""
    progs = []
    for p in after:
        b = before.get(p["name"], {"run_cnt": 0, "run_time_ns": 0})
        cnt, ns = p["run_cnt"] - b["run_cnt"], p["run_time_ns"] - b["run_time_ns"]
        progs.append({"name": p["name"], "run_cnt": cnt, "run_time_ns": ns,
                      "avg_ns": round(ns / cnt, 1) if cnt else None})
    entry = next((p for p in progs if p["name"] == "kfunc__kvfree_call_rcu"), None)
    calls = entry["run_cnt"] if entry else 0
    total_ns = sum(p["run_time_ns"] for p in progs)
    return {
        "calls_per_s": round(rate, 1),
        "kvfree_call_rcu_runs": calls,
        "entry_ns_per_run": entry["avg_ns"] if entry else None,
        "bpf_ns_per_call": round(total_ns / calls, 1) if calls else None,
        "programs": progs,
    }


def _result(
    kernel: KernelInfo,
    threads: int,
    repeats: int,
    seconds: float,
    rates: dict[str, list[float]],
    stats_runs: dict[str, Any],
    python: list[dict[str, Any]],
) -> dict[str, Any]:
    phases = {p: spread(v) for p, v in rates.items()}
    base = phases["unprobed"]["median"]
    ratios = {p: round(phases[p]["median"] / base, 4) for p in PHASES}
    # Each thread owns a CPU, so a call takes threads / rate CPU-seconds.
    added = {p: round(threads * (1 / phases[p]["median"] - 1 / base) * 1e9, 1)
             for p in ("empty", "full")}
    return {
        "benchmark": "overhead",
        "kernel_release": kernel.release,
        "lab": (config.lab() or {}).get("spec"),
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "driver": "native",
        "threads": threads,
        "repeats": repeats,
        "seconds": seconds,
        "phases": phases,
        "ratio_to_unprobed": ratios,
        "added_ns_per_call": added,
        "with_bpf_stats": stats_runs,
        # the default python loop (1 worker) and as many workers as driver threads
        "python_loop": python,
        "native_over_python": {str(p["workers"]): round(base / p["calls_per_s"], 2)
                               for p in python},
    }


def text(result: dict[str, Any]) -> str:
    """The result as a short table."""
    r = result
    lines = [f"bench overhead on {r['kernel_release']}"
             + (f" (lab {r['lab']})" if r["lab"] else "")
             + f": native driver, {r['threads']} threads, {r['repeats']} x {r['seconds']:g} s"]
    lines.append(f"  {'phase':<9} {'min':>11} {'median':>11} {'max':>11}  ratio  +ns/call")
    for p in PHASES:
        ph = r["phases"][p]
        add = r["added_ns_per_call"].get(p)
        lines.append(f"  {p:<9} {ph['min']:>11,.0f} {ph['median']:>11,.0f} {ph['max']:>11,.0f}"
                     f"  {r['ratio_to_unprobed'][p]:.3f}  {'' if add is None else f'{add:,.0f}'}")
    for p, s in r["with_bpf_stats"].items():
        lines.append(f"  BPF stats, {p}: entry {s['entry_ns_per_run']} ns/run, all programs "
                     f"{s['bpf_ns_per_call']} ns per kvfree_call_rcu ({s['calls_per_s']:,.0f}"
                     " calls/s with stats on)")
    if pr := r.get("paired"):
        lines.append(f"  BPF stats, both attached together ({len(pr['runs'])} runs: "
                     f"{_fmt_ratios(pr['runs'], 'entry_over_empty')}): entry / empty "
                     f"{pr['entry_over_empty']}x, all programs / empty {pr['all_over_empty']}x"
                     " (both trampoline positions averaged)")
    for p in r["python_loop"]:
        lines.append(f"  python loop, {p['workers']} worker(s): {p['calls_per_s']:,.0f} calls/s;"
                     f" native unprobed median is {r['native_over_python'][str(p['workers'])]}x")
    if c := r.get("collector"):
        lines.append(f"  collector: {c['cpu_ms_per_snapshot']} ms CPU per snapshot "
                     f"({c['cpu_percent_of_one_cpu']}% of one CPU at {c['interval_s']:g} s; "
                     f"{c.get('cpu_ms_back_to_back', '?')} ms back to back), "
                     f"{c['syscalls_per_snapshot']['median']:g} system calls")
    return "\n".join(lines)


def _fmt_ratios(runs: list[dict[str, Any]], key: str) -> str:
    return " ".join("-" if r[key] is None else f"{r[key]:g}x" for r in runs)
