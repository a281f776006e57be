"""The kernel's own figures beside the tool's for `stress kvfree --measure`: kmem:kmalloc at
the stress's call site, counted by bpf/kmalloc_sites.bpf.c (a tracepoint program that shares
nothing with the collector's), per worker process.

IP_OPTIONS: each successful set allocates a block at ip_options_get() and hands the previous
one to kfree_rcu(), so the enqueues are the allocations less one per socket that got options,
each of the slot size the allocator reports (bytes_alloc). Headless renames (6.15+): each
rename kstrdup()s the new name at kernfs_rename_ns() and kfree_rcu_mightsleep()s the old one
(a name of the same length: the same slot)."""

from __future__ import annotations

from typing import Any

from ..kernel import KernelInfo
from ..probes import bpfload

SITES = {"ip_options": "ip_options_get", "headless": "kernfs_rename_ns"}


def start() -> bpfload.Loaded | str:
    """The counter, attached before the stress starts (or why it could not be)."""
    try:
        return bpfload.load("kmalloc_sites.bpf.c", {}, "tracepoint")
    except bpfload.LoadError as e:
        return str(e)


def figures(loaded: bpfload.Loaded | str, kernel: KernelInfo, expected: dict,
            headless: bool) -> dict[str, Any]:
    """The kernel's count of the workers' allocations at the scenario's call site and what it
    implies for the tool's by_stress figures; `unavailable` when the counter did not load."""
    if isinstance(loaded, str):
        return {"unavailable": loaded}
    site = SITES["headless" if headless else "ip_options"]
    pids = set(expected["pids"])
    count = nbytes = 0
    for k, v in loaded.bpf["kmalloc_sites"].items():
        sym = kernel.ksym_at(k.call_site) or ""
        if k.tgid in pids and (sym == site or sym.startswith(site + ".")):
            count += int(v.count)
            nbytes += int(v.bytes_alloc)
    slot = nbytes // count if count else 0
    out: dict[str, Any] = {"source": f"kmem:kmalloc at {site}", "allocations": count,
                           "bytes_alloc": nbytes, "slot": slot,
                           "one_slot_size": slot * count == nbytes}
    if headless:
        out["enqueued"] = count if expected["kvfree_rcu"]["enqueued"] else 0
    else:  # a socket's first block is not freed while it stays open
        out["enqueued"] = count - expected["sockets_with_options"]
    out["enqueued_bytes"] = out["enqueued"] * slot
    return out


def compare(oracle: dict[str, Any], kv: dict | None, headless: bool) -> dict[str, Any]:
    """The tool's by_stress beside the kernel's figures: `match` when both agree."""
    if "unavailable" in oracle or kv is None:
        return {"match": None}
    bs = kv["by_stress"]
    key = "enqueued_headless" if headless else "enqueued"
    tool = {"enqueued": bs[key], "enqueued_bytes": bs[key + "_bytes"]}
    kern = {"enqueued": oracle["enqueued"], "enqueued_bytes": oracle["enqueued_bytes"]}
    return {"tool": tool, "kernel": kern, "match": tool == kern and oracle["one_slot_size"]}
