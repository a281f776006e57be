"""What a kvfree_rcu() backend costs besides the objects it holds (bpf/backend_cost.bpf.c):
RCU callbacks queued by callback function, and the backend's metadata memory (krc's bulk
pages, rcu_pending's radix nodes) from allocation to free. Used by `rcupending compare`.
"""

from __future__ import annotations

import ctypes
from dataclasses import dataclass, field
from typing import Any

from ..kernel import KernelInfo
from ..probes import bpfload
from ..probes.layouts import symbol_range

# metadata kind -> the functions whose allocations are that kind (absent ones are skipped).
# krc: add_ptr_to_bulk_krc_lock() (inlined into kvfree_call_rcu on 6.12) and the page-cache
# refill take bulk pages. rcu_pending: the enqueue paths' preallocated radix node (inlined
# into rcu_pending_enqueue / kvfree_call_rcu_pending) and __genradix_ptr_alloc()'s inner
# nodes; no other genradix user runs in the lab guest. rcu_pending's per-CPU darray of
# sequence numbers comes from kvmalloc (call site in mm/util.c) and is not counted.
METADATA_SITES: dict[str, tuple[str, ...]] = {
    "krc_bulk_pages": ("kvfree_call_rcu", "add_ptr_to_bulk_krc_lock", "fill_page_cache_func"),
    "rcu_pending_radix_nodes": ("rcu_pending_enqueue", "kvfree_call_rcu_pending",
                                "__genradix_ptr_alloc"),
}
KINDS = tuple(METADATA_SITES)
MAX_SITES = 16  # bpf/backend_cost.bpf.c
PAGE_SIZE = 4096  # krc bulk pages are order-0 pages (x86-64)
# callbacks a backend queues for its own batches: krc hands each batch to queue_rcu_work()
# (rcu_work_rcufn); rcu_pending queues one rcu_pending_rcu_cb per CPU and grace period
BACKEND_CALLBACKS = ("rcu_work_rcufn", "rcu_pending_rcu_cb")
CALLBACK_HOOKS = (("call_rcu", "kprobe_call_rcu"), ("call_rcu_hurry", "kprobe_call_rcu"),
                  ("call_srcu", "kprobe_call_srcu"))


class _Site(ctypes.Structure):
    _fields_ = [("start", ctypes.c_uint64), ("end", ctypes.c_uint64), ("kind", ctypes.c_uint64)]


def site_ranges(kernel: KernelInfo) -> list[tuple[int, int, int, str]]:
    """(start, end, kind index, function) of every metadata site this kernel has."""
    out = []
    for kind, names in enumerate(METADATA_SITES.values()):
        for name in names:
            if (r := symbol_range(kernel, name)) is not None:
                out.append((r[0], r[1], kind, name))
    return out[:MAX_SITES]


@dataclass
class CostProbe:
    """bpf/backend_cost.bpf.c loaded and attached; `read()` gives cumulative counts."""

    kernel: KernelInfo = field(default_factory=KernelInfo)
    loaded: bpfload.Loaded | None = None
    sites: list[tuple[int, int, int, str]] = field(default_factory=list)

    def attach(self) -> CostProbe:
        attach = [("kprobe", sym, fn) for sym, fn in CALLBACK_HOOKS if self.kernel.symbol(sym)]
        if self.kernel.symbol("kvfree_rcu_bulk"):
            attach.append(("kprobe", "kvfree_rcu_bulk", "kprobe_kvfree_rcu_bulk"))
        attach += [("kprobe", "get_free_pages_noprof", "kprobe_get_free_pages"),
                   ("kretprobe", "get_free_pages_noprof", "kretprobe_get_free_pages"),
                   ("kprobe", "free_pages", "kprobe_free_pages")]
        self.loaded = bpfload.load("backend_cost.bpf.c", {}, "kprobe", attach)
        self.sites = site_ranges(self.kernel)
        table = self.loaded.bpf["cost_sites"]
        for i, (start, end, kind, _) in enumerate(self.sites):
            table[ctypes.c_int(i)] = _Site(start, end, kind)
        return self

    def close(self) -> None:
        if self.loaded is not None:
            self.loaded.close()
            self.loaded = None

    def read(self) -> dict[str, Any]:
        """{callbacks: {function: calls}, metadata: {kind: counts, live, peak}, lost}."""
        assert self.loaded is not None
        b = self.loaded.bpf
        callbacks: dict[str, int] = {}
        for k, v in b["cost_callbacks"].items():
            name = self.kernel.ksym_at(int(k.value)) or hex(int(k.value))
            callbacks[name] = callbacks.get(name, 0) + int(v.value)
        counts = b["cost_counts"]
        gauge = b["cost_gauge"]
        metadata = {}
        for i, kind in enumerate(KINDS):
            per_cpu = counts[ctypes.c_int(i)]
            g = gauge[ctypes.c_int(i)]
            metadata[kind] = {
                "allocs": sum(int(c.allocs) for c in per_cpu),
                "alloc_bytes": sum(int(c.alloc_bytes) for c in per_cpu),
                "frees": sum(int(c.frees) for c in per_cpu),
                "free_bytes": sum(int(c.free_bytes) for c in per_cpu),
                "live_bytes": int(g.bytes),
                "peak_bytes": int(g.peak_bytes),
            }
        lost = sum(int(x) for x in b["cost_lost"][ctypes.c_int(0)])
        bulk = {int(k.value): int(v.value) for k, v in b["cost_bulk_pages"].items()}
        return {"callbacks": callbacks, "metadata": metadata, "lost": lost,
                "bulk_pages": bulk, "sites": [name for *_, name in self.sites]}


def cost_delta(before: dict[str, Any], after: dict[str, Any]) -> dict[str, Any]:
    """What one run cost: callbacks queued (all, the backends', top functions) and metadata
    allocated, freed and its peak over the level at `before` (bytes), per kind."""
    cb = {name: n - before["callbacks"].get(name, 0) for name, n in after["callbacks"].items()}
    cb = {name: n for name, n in cb.items() if n > 0}
    meta = {}
    for kind, a in after["metadata"].items():
        b = before["metadata"][kind]
        meta[kind] = {
            "allocs": a["allocs"] - b["allocs"],
            "alloc_bytes": a["alloc_bytes"] - b["alloc_bytes"],
            "frees": a["frees"] - b["frees"],
            "peak_bytes": max(0, a["peak_bytes"] - b["live_bytes"]),
        }
    # krc: the distinct bulk pages that carried a batch during the run (its cache keeps them
    # between batches, so they are held whether or not the run allocated them)
    bulk_before = before.get("bulk_pages", {})
    used = [p for p, n in after.get("bulk_pages", {}).items() if n > bulk_before.get(p, 0)]
    if "krc_bulk_pages" in meta:
        meta["krc_bulk_pages"]["pages_in_use"] = len(used)
    held = {kind: max(m["peak_bytes"], PAGE_SIZE * m.get("pages_in_use", 0))
            for kind, m in meta.items()}
    top = sorted(cb.items(), key=lambda kv: (-kv[1], kv[0]))[:10]
    return {
        "callbacks": sum(cb.values()),
        "backend_callbacks": sum(cb.get(name, 0) for name in BACKEND_CALLBACKS),
        "callbacks_by_function": dict(top),
        "metadata": meta,
        "metadata_peak_bytes": sum(m["peak_bytes"] for m in meta.values()),
        # held for the run: krc's pages in use, rcu_pending's radix nodes at their peak
        "metadata_held_bytes": sum(held.values()),
        "metadata_alloc_bytes": sum(m["alloc_bytes"] for m in meta.values()),
        "lost": after["lost"] - before["lost"],
        "sites": after["sites"],
    }
