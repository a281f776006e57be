"""The rcu_pending family of a snapshot, from the raw counters of bpf/rcu_pending.bpf.c."""

from __future__ import annotations

from typing import Any

from ..pipeline.derive import log2_buckets, percentile_bounds
from .kvfree import HIST_SLOTS

# Mirrors of the BPF enums (tests/unit/test_pending_metrics.py checks them against the C file).
FLAVORS = ("rcu", "srcu")
NFL = len(FLAVORS)
STATS = (
    "enq", "enq_bytes", "enq_unsized", "list", "kv_list", "deq", "deq_bytes", "deq_unmatched",
    "proc", "proc_bytes", "proc_unmatched", "untracked", "untracked_bytes", "replaced", "runs",
    "kv_runs",
)  # fmt: skip
PS = {name: i for i, name in enumerate(STATS)}
PS_MAX = len(STATS)
# rcu_pending.process of kvfree_rcu()'s pending on a patched kernel (RCU_PENDING_KVFREE_FN):
# its objects are followed by the kvfree_call_rcu probe.
KVFREE_PROCESS = 1
KVFREE_PROCESS_NAME = "RCU_PENDING_KVFREE (kvfree_rcu)"


def stat(stats: list[list[int]], name: str, flavor: int) -> int:
    """Sum over CPUs of counter `name` of `flavor` (rows: stat * NFL + flavor)."""
    return sum(stats[PS[name] * NFL + flavor])


def enqueued_by_cpu(stats: list[list[int]]) -> list[int]:
    rows = [stats[PS["enq"] * NFL + f] for f in range(NFL)]
    return [sum(col) for col in zip(*rows, strict=True)]


def _hist(h: list[int] | None, flavor: int) -> list[int]:
    if not h:
        return [0] * HIST_SLOTS
    return h[flavor * HIST_SLOTS : (flavor + 1) * HIST_SLOTS]


def _flavor(raw: Any, f: int) -> dict[str, Any]:
    st = raw.pending_stats
    enq, enq_bytes = stat(st, "enq", f), stat(st, "enq_bytes", f)
    proc, proc_bytes = stat(st, "proc", f), stat(st, "proc_bytes", f)
    deq, deq_bytes = stat(st, "deq", f), stat(st, "deq_bytes", f)
    untracked, untracked_bytes = stat(st, "untracked", f), stat(st, "untracked_bytes", f)
    replaced = stat(st, "replaced", f)
    lat, gps = _hist(raw.pending_lat_hist, f), _hist(raw.pending_gp_hist, f)
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


def pending_family(raw: Any, tasks: list[dict[str, Any]]) -> dict[str, Any] | None:
    """Snapshot section `rcu_pending` (None when the probe is not attached). Recordings made
    before the flavor split carry only `pending_enqueued`."""
    if raw.pending_stats is None:
        if raw.pending_enqueued is None:
            return None
        return {
            "enqueued": {"objects": sum(raw.pending_enqueued), "by_cpu": raw.pending_enqueued},
            "by_process": tasks,
        }
    by_cpu = enqueued_by_cpu(raw.pending_stats)
    flavors = {name: _flavor(raw, f) for f, name in enumerate(FLAVORS)}
    run_hist = [sum(_hist(raw.pending_run_hist, f)[s] for f in range(NFL)) for s in range(64)]
    out: dict[str, Any] = {
        "enqueued": {"objects": sum(by_cpu), "by_cpu": by_cpu},
        "by_process": tasks,
        "flavors": flavors,
        "objects_per_run": {"count": sum(run_hist), "objects": percentile_bounds(run_hist)},
        "callbacks": raw.pending_callbacks or [],
    }
    if raw.pending_in_map is not None:
        in_map = raw.pending_in_map
        pending = sum(v["pending"]["objects"] for v in flavors.values())
        out["conservation"] = {
            "in_map": in_map,
            # enqueued = processed + dequeued + pending + untracked (+ replaced), per flavor
            "ok": pending == in_map["objects"],
        }
    return out


def histograms(raw: Any) -> dict[str, Any]:
    """Log2 histograms of the rcu_pending family, per flavor."""
    out: dict[str, Any] = {}
    for f, name in enumerate(FLAVORS):
        for key, h, unit in (
            ("latency_ns", raw.pending_lat_hist, "ns"),
            ("latency_gps", raw.pending_gp_hist, "grace periods + 1"),
            ("objects_per_run", raw.pending_run_hist, "objects"),
        ):
            part = _hist(h, f)
            if sum(part):
                out[f"rcu_pending.{key}.{name}"] = {"unit": unit, "buckets": log2_buckets(part)}
    return out
