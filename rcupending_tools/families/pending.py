"""The rcu_pending family: enqueues, the list fallback, dequeues, processing runs and processed
objects (bpf/rcu_pending.bpf.c; its indexes in bpf/rcu_pending.h): read, section, samples."""

from __future__ import annotations

import time
from typing import Any

from ..pipeline.derive import log2_buckets, percentile_bounds
from . import base, enums
from .base import Family, Metric, Raw, Samples, Section

H = enums.header("rcu_pending.h")
FLAVORS = H.enum("pending_flavor").names("FL_")
NFL = H["NFL"]
STATS = H.enum("pending_stat").names("PS_")
PS = {name: i for i, name in enumerate(STATS)}
PS_MAX = H["PS_MAX"]
HIST_SLOTS = 64
TOP_PROCESSES = 20
KVFREE_PROCESS = H["RCU_PENDING_KVFREE"]  # the kvfree_rcu() pending (followed by kvfree)
KVFREE_PROCESS_NAME = "RCU_PENDING_KVFREE (kvfree_rcu)"


# ---------------------------------------------------------------- read


def read(b: Any, ctx: base.ReadContext) -> Raw:
    """The maps of bpf/rcu_pending.bpf.c: processed/dequeued sides (histograms) before the
    enqueue totals, like kvfree."""
    n = NFL * HIST_SLOTS
    raw: Raw = {
        "lat_hist": base.summed(b["pending_lat_hist"], n),
        "gp_hist": base.summed(b["pending_gp_hist"], n),
        "run_hist": base.summed(b["pending_run_hist"], n),
    }
    tasks: dict[tuple[int, str], int] = {}
    for k, v in b["pending_by_task"].items():
        key = (int(k.tgid), base.comm(k.comm))
        tasks[key] = tasks.get(key, 0) + int(v.value)
    raw["by_task"] = [[t, c, v] for (t, c), v in sorted(tasks.items())]
    names = [n for n in ctx.status.facts.get("process_callbacks", "").split(",") if n]
    hooked = {sym.address for n in names if (sym := ctx.kernel.symbol(n))}
    raw["callbacks"] = [
        {
            "address": hex(addr),
            "symbol": KVFREE_PROCESS_NAME if addr == KVFREE_PROCESS
            else (ctx.kernel.ksym_at(addr) or ""),
            "enqueued": int(v.value),
            "hooked": addr in hooked or addr == KVFREE_PROCESS,
        }
        for addr, v in ((int(k.value), v) for k, v in b["pending_callbacks"].items())
    ]
    raw["stats"] = base.percpu_rows(b["pending_stats"], PS_MAX * NFL)
    if ctx.count_map:
        raw["in_map"] = _count_pending(b, raw["stats"])
    return raw


def _count_pending(b: Any, stats: list[list[int]], tries: int = 5) -> dict[str, int] | None:
    """The tracking map between two identical counter reads (one instant); None if traffic
    never paused."""
    for _ in range(tries):
        counts = {"objects": 0, "bytes": 0}
        for v in b["pending_inflight"].values():
            counts["objects"] += 1
            counts["bytes"] += int(v.bytes)
        after = base.percpu_rows(b["pending_stats"], PS_MAX * NFL)
        if after == stats:
            return counts
        stats[:] = after
        time.sleep(0.05)
    return None


# ---------------------------------------------------------------- section


def stat(stats: list[list[int]], name: str, flavor: int) -> int:
    """Sum over CPUs of counter `name` of `flavor` (rows: stat * NFL + flavor)."""
    return sum(stats[PS[name] * NFL + flavor])


def enqueued_by_cpu(stats: list[list[int]]) -> list[int]:
    rows = [stats[PS["enq"] * NFL + f] for f in range(NFL)]
    return [sum(col) for col in zip(*rows, strict=True)]


def _flavor(raw: Raw, f: int) -> dict[str, Any]:
    st = raw["stats"]
    enq, enq_bytes = stat(st, "enq", f), stat(st, "enq_bytes", f)
    proc, proc_bytes = stat(st, "proc", f), stat(st, "proc_bytes", f)
    deq, deq_bytes = stat(st, "deq", f), stat(st, "deq_bytes", f)
    untracked, untracked_bytes = stat(st, "untracked", f), stat(st, "untracked_bytes", f)
    replaced = stat(st, "replaced", f)
    lat, gps = base.slots(raw.get("lat_hist"), f), base.slots(raw.get("gp_hist"), f)
    return {
        "enqueued": {
            "objects": enq,
            "bytes": enq_bytes,
            "unsized": stat(st, "enq_unsized", f),
            "by_cpu": list(st[PS["enq"] * NFL + f]),
        },
        # radix tree (or its darray slot) not allocatable: the object went on a linked list
        "list_fallback": {"objects": stat(st, "list", f), "kvfree_rcu": stat(st, "kv_list", f)},
        "dequeued": {"objects": deq, "bytes": deq_bytes},
        "processed": {"objects": proc, "bytes": proc_bytes},
        "pre_attach": {
            "processed": stat(st, "proc_unmatched", f),
            "dequeued": stat(st, "deq_unmatched", f),
        },
        "untracked": {"objects": untracked, "bytes": untracked_bytes},
        "replaced": replaced,
        "pending": {
            "objects": enq - proc - deq - untracked - replaced,
            "bytes": enq_bytes - proc_bytes - deq_bytes - untracked_bytes,
        },
        "runs": {"calls": stat(st, "runs", f), "kvfree_rcu": stat(st, "kv_runs", f)},
        "latency": {
            "count": sum(lat),
            "ns": percentile_bounds(lat),
            "gps": percentile_bounds(gps),
        },
    }


def _by_process(rows: list[list[Any]]) -> list[dict[str, Any]]:
    top = sorted(rows, key=lambda r: (-r[2], r[0], r[1]))[:TOP_PROCESSES]
    return [{"tgid": t, "comm": c, "objects": n} for t, c, n in top]


def section(raw: Raw | None, ctx: base.SectionContext) -> Section | None:
    """Snapshot section `rcu_pending` (None when the probe is not attached)."""
    if raw is None or raw.get("stats") is None:
        return None
    by_cpu = enqueued_by_cpu(raw["stats"])
    flavors = {name: _flavor(raw, f) for f, name in enumerate(FLAVORS)}
    runs = [base.slots(raw.get("run_hist"), f) for f in range(NFL)]
    run_hist = [sum(r[s] for r in runs) for s in range(HIST_SLOTS)]
    out: Section = {
        "enqueued": {"objects": sum(by_cpu), "by_cpu": by_cpu},
        "by_process": _by_process(raw.get("by_task") or []),
        "flavors": flavors,
        "objects_per_run": {"count": sum(run_hist), "objects": percentile_bounds(run_hist)},
        "callbacks": raw.get("callbacks") or [],
    }
    if (in_map := raw.get("in_map")) is not None:
        pending = sum(v["pending"]["objects"] for v in flavors.values())
        out["conservation"] = {
            "in_map": in_map,
            # enqueued = processed + dequeued + pending + untracked (+ replaced), per flavor
            "ok": pending == in_map["objects"],
        }
    return out


def histograms(raw: Raw | None) -> dict[str, Any]:
    """Log2 histograms of the rcu_pending family, per flavor."""
    if raw is None or raw.get("stats") is None:
        return {}
    out: dict[str, Any] = {}
    for f, name in enumerate(FLAVORS):
        for key, h, unit in (
            ("latency_ns", raw.get("lat_hist"), "ns"),
            ("latency_gps", raw.get("gp_hist"), "grace periods + 1"),
            ("objects_per_run", raw.get("run_hist"), "objects"),
        ):
            part = base.slots(h, f)
            if sum(part):
                out[f"rcu_pending.{key}.{name}"] = {"unit": unit, "buckets": log2_buckets(part)}
    return out


# ---------------------------------------------------------------- metrics

METRICS: tuple[Metric, ...] = (
    Metric("rcu_pending_enqueued_objects", "counter", "objects queued by rcu_pending_enqueue()"),
    Metric("rcu_pending_enqueued_objects_by_cpu", "counter",
           "rcu_pending_enqueue() objects by CPU", ("cpu",)),
    Metric("rcu_pending_process_enqueued_objects", "counter",
           "rcu_pending_enqueue() objects of the top processes", ("tgid", "comm")),
)


def samples(rp: Section) -> list:
    """The metric samples of an `rcu_pending` section."""
    c = Samples(METRICS)
    c("rcu_pending_enqueued_objects", rp["enqueued"]["objects"])
    for cpu, n in enumerate(rp["enqueued"]["by_cpu"]):
        c("rcu_pending_enqueued_objects_by_cpu", n, cpu=cpu)
    for p in rp["by_process"]:
        c("rcu_pending_process_enqueued_objects", p["objects"], tgid=p["tgid"], comm=p["comm"])
    return c.out


FAMILY = Family("rcu_pending", "rcu_pending_enqueue", read, section, histograms, samples,
                METRICS)
