"""One A/B run, INSIDE a lab VM (started by `rcupending compare`): the kernel's own rcuscale
kfree test with no BPF attached, then a kvfree_rcu flood measured by the collector.

Prints one line `RCUPENDING-COMPARE <json>`. Run as `python -m rcupending_tools.compare.guest`.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from .. import config
from ..pipeline.derive import percentile_bounds
from ..pipeline.session import open_live
from ..probes.bpfload import LoadError
from ..probes.table import KVFREE_CALL_RCU, RCU_PENDING_ENQUEUE
from ..stress import kvfree
from .cost import CostProbe, cost_delta

MARK = "RCUPENDING-COMPARE "
RCUSCALE_LINE = re.compile(
    r"Total time taken by all kfree'ers: (?P<ns>\d+) ns, loops: (?P<loops>\d+), "
    r"batches: (?P<batches>-?\d+), memory footprint: (?P<mb>-?\d+)MB"
)


def log(msg: str) -> None:
    print(f"guest: {msg}", file=sys.stderr, flush=True)


def mem_available_kb() -> int:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemAvailable:"):
            return int(line.split()[1])
    return 0


def parse_rcuscale(text: str) -> dict[str, int] | None:
    """The rcuscale kfree test's summary line (kernel/rcu/rcuscale.c) as numbers."""
    m = RCUSCALE_LINE.search(text)
    return None if m is None else {k: int(v) for k, v in m.groupdict().items()}


def run_rcuscale(loops: int, alloc_num: int, timeout: float = 300) -> dict[str, Any]:
    """modprobe rcuscale kfree_rcu_test=1 and wait for its summary line in dmesg."""
    subprocess.run(["dmesg", "-C"], check=False)
    start = time.monotonic()
    args = [f"kfree_loops={loops}", f"kfree_alloc_num={alloc_num}", "kfree_rcu_test=1",
            "shutdown=0", "holdoff=0", "verbose=0"]
    proc = subprocess.run(["modprobe", "rcuscale", *args], capture_output=True, text=True)
    if proc.returncode != 0:
        return {"error": f"modprobe rcuscale: {proc.stderr.strip() or proc.returncode}"}
    parsed, text = None, ""
    while time.monotonic() - start < timeout:
        text = subprocess.run(["dmesg"], capture_output=True, text=True).stdout
        if parsed := parse_rcuscale(text):
            break
        time.sleep(0.5)
    subprocess.run(["rmmod", "rcuscale"], check=False, capture_output=True)
    line = next((ln for ln in text.splitlines() if "Total time taken" in ln), "")
    out: dict[str, Any] = {"args": args, "line": line.split("] ", 1)[-1].strip(),
                           "wall_s": round(time.monotonic() - start, 2)}
    if parsed is None:
        out["error"] = f"no summary line within {timeout:.0f} s"
    else:
        out.update(parsed)
    return out


def hist_diff(before: dict, after: dict, name: str) -> list[int]:
    """Per-slot counts of histogram `name` added between two snapshots (64 log2 slots)."""

    def slots(snap: dict) -> list[int]:
        out = [0] * 64
        for lo, _hi, n in (snap["histograms"].get(name) or {"buckets": []})["buckets"]:
            out[max(lo, 1).bit_length() - 1] += n
        return out

    a, b = slots(before), slots(after)
    return [y - x for x, y in zip(a, b, strict=True)]


def measure(count: int, threads: int, drain: float, interval: float) -> dict[str, Any]:
    config.keep_pending_peak()  # the flood's high-water mark, kept by the kernel side
    t0 = time.monotonic()
    cost: CostProbe | None = CostProbe()
    cost_error = None
    try:
        cost.attach()
    except LoadError as e:
        cost, cost_error = None, e.reason
        log(f"backend cost probe: {e.reason}")
    try:
        # kvfree_rcu and rcu_pending only: the nolock allocator plays no part in a kvfree
        # flood, and each program is one more compile in the guest
        session = open_live((KVFREE_CALL_RCU, RCU_PENDING_ENQUEUE), command="compare")
    except BaseException:
        if cost is not None:
            cost.close()
        raise
    log(f"attached in {time.monotonic() - t0:.1f}s")
    try:
        probes = session.source.probe_dicts()
        cost0 = cost.read() if cost is not None else None
        base = session.read(count_map=True)
        kv0 = base["kvfree_rcu"]
        mem0 = mem_available_kb()
        peak = {"mem_drop_kb": 0}

        def sample() -> dict:
            snap = session.read()
            peak["mem_drop_kb"] = max(peak["mem_drop_kb"], mem0 - mem_available_kb())
            return snap

        # worker processes (the stress tgids: the guest's own BPF work stays out of by_stress),
        # one socket each; each set after a socket's first hands the previous option to kfree_rcu
        t_start = time.monotonic()
        run = kvfree.start(count, 4, threads, threads, paused=True)
        session.follow(run.pids)
        run.go()
        while run.running(timeout=interval):
            sample()
        expected = run.wait()
        flood_s = time.monotonic() - t_start
        snap = sample()
        deadline = time.monotonic() + drain
        while snap["kvfree_rcu"]["by_stress"]["pending"] > 0 and time.monotonic() < deadline:
            time.sleep(interval)
            snap = sample()
        drained_s = round(time.monotonic() - (deadline - drain), 2)
        final = session.read(count_map=True)
        cost1 = cost.read() if cost is not None else None
        run.finish()
    finally:
        session.close()
        if cost is not None:
            cost.close()
    kv = final["kvfree_rcu"]
    lat = hist_diff(base, final, "kvfree_rcu.latency_ns")
    gps = hist_diff(base, final, "kvfree_rcu.latency_gps")

    def delta(*path: str) -> int | None:
        a: Any = kv0
        b: Any = kv
        for key in path:
            if not isinstance(a, dict) or not isinstance(b, dict) or key not in b:
                return None
            a, b = a.get(key), b[key]
        return None if a is None or b is None else b - a

    pend = final.get("rcu_pending") or {}
    pend0 = base.get("rcu_pending") or {}

    def pending_runs(snap: dict) -> int:
        fl = (snap.get("flavors") or {}).get("rcu") or {}
        return (fl.get("runs") or {}).get("kvfree_rcu", 0)

    kv_probe = next((p for p in probes if p["name"] == "kvfree_call_rcu"), {})
    # the kernel side's high-water mark of tracked pending (sampling every `interval` misses
    # rcu_pending's: its objects wait milliseconds), over the level at the start
    kv_peak = kv["pending"].get("peak") or {}
    freed = delta("freed", "objects") or 0
    def kv_list_enqueued(snap: dict) -> int:
        fl = (snap.get("flavors") or {}).get("rcu") or {}
        return (fl.get("list_fallback") or {}).get("kvfree_rcu", 0)

    return {
        "backend": (kv_probe.get("facts") or {}).get("backend"),
        "mechanism": kv_probe.get("mechanism"),
        "flood_s": round(flood_s, 3),
        "truth": expected["kvfree_rcu"]["enqueued"],
        "enqueued": kv["by_stress"]["enqueued"],
        "freed": kv["by_stress"]["freed"],
        "drain_s": drained_s,
        "conservation_ok": kv["conservation"]["ok"],
        "pending_peak_objects": max(0, kv_peak.get("objects", 0) - kv0["pending"]["objects"]),
        "pending_peak_bytes": max(0, kv_peak.get("bytes", 0) - kv0["pending"]["bytes"]),
        "mem_available_drop_kb": peak["mem_drop_kb"],
        "latency_ns": percentile_bounds(lat),
        "latency_gps": percentile_bounds(gps),
        "latency_count": sum(lat),
        "freed_all": freed,
        # objects freed from the linked list: krc channel 3, or rcu_pending's list fallback
        "list_fallback": delta("freed", "by_path", "list", "objects") or 0,
        "list_fallback_enqueued": kv_list_enqueued(pend) - kv_list_enqueued(pend0)
        if pend else None,
        "inline": delta("freed", "by_path", "inline", "objects") or 0,
        "grace_periods": delta("rcu_gp", "completed"),
        # batches: krc's kfree_rcu_work runs, or rcu_pending's __process_finished_items runs
        "batches": delta("events", "reclaim_work") if kv_probe.get("facts", {}).get(
            "backend") != "rcu_pending" else pending_runs(pend) - pending_runs(pend0),
        "shrinker_scans": delta("events", "shrinker", "scans"),
        "page_refills": delta("events", "page_refill"),
        # callbacks queued and backend metadata (bulk pages / radix nodes) during the run
        "cost": cost_delta(cost0, cost1) if cost0 is not None and cost1 is not None
        else {"error": cost_error},
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="rcupending_tools.compare.guest")
    ap.add_argument("--count", type=int, default=20000)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--drain", type=float, default=40)
    ap.add_argument("--interval", type=float, default=0.5)
    ap.add_argument("--rcuscale-loops", type=int, default=10, help="0: skip rcuscale")
    ap.add_argument("--rcuscale-alloc", type=int, default=8000)
    args = ap.parse_args(argv)
    out: dict[str, Any] = {"release": os.uname().release,
                           "cmdline": Path("/proc/cmdline").read_text().strip()}
    if args.rcuscale_loops:
        out["rcuscale"] = run_rcuscale(args.rcuscale_loops, args.rcuscale_alloc)
        log(f"rcuscale: {out['rcuscale'].get('line') or out['rcuscale'].get('error')}")
    out["flood"] = measure(args.count, args.threads, args.drain, args.interval)
    print(MARK + json.dumps(out, sort_keys=True), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
